package boltstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	bolt "go.etcd.io/bbolt"
	"go.mongodb.org/mongo-driver/bson"
)

// The write-ahead log (PATH.wal) makes a commit durable with one fdatasync
// of an appended record, where a bbolt commit needs two (pages, then meta)
// and rewrites every page on the path to each changed key. A commit goes to
// the log when it only inserted, replaced, updated or deleted documents of
// namespaces the bbolt file already has, with their index definitions
// unchanged; its record is the commit's oplog entries, which say exactly
// what it wrote. Everything else (new, dropped or re-indexed namespaces)
// first checkpoints the log into bbolt, then commits to bbolt as before.
//
// A checkpoint writes the catalog's changes since the last one in one bbolt
// transaction: the logged records' entries (kept in memory, since lungo may
// have trimmed them from its oplog meanwhile), then the catalog's entries
// after the last logged one, as a direct commit does, and raises the
// file's log generation in the same transaction; only then is the log
// truncated. Each record carries the generation it was written in, so a
// record that a checkpoint already covers is recognised, even when the
// truncation did not reach the disk before a crash. Load replays the records
// of the current generation into bbolt (a put or delete by _id, in order:
// replaying a record twice gives the same documents) and checkpoints.
//
// Record: uint32 length, uint32 CRC-32C of the payload, payload (BSON
// {g: generation, e: [oplog entries], h: oplog head}). A torn or corrupt
// record, or a zero length, ends the log: it was being written when the
// process died, so its commit never returned.
//
// The file is kept at least walPrealloc bytes long, written with zeros once,
// and a checkpoint starts the next records at offset 0 again instead of
// truncating it: a record that fits does not change the file's size, so its
// fdatasync flushes data only and need not wait for a file-system journal
// commit that other files' syncs share.

const (
	// Checkpoint after this many records or bytes of log, which bounds the
	// log's size and the replay work on Load.
	walMaxRecords = 512
	walMaxBytes   = 8 << 20
	walPrealloc   = walMaxBytes + 1<<20
)

var (
	keyWALGen = []byte("walgen")
	crcTable  = crc32.MakeTable(crc32.Castagnoli)
)

type walRecord struct {
	Gen     int64    `bson:"g"`
	Entries []bson.D `bson:"e"`
	// Head is the _id of the oplog's first entry after the commit: the
	// entries before it were trimmed.
	Head any `bson:"h"`
}

// walPath is the log's path next to the bbolt file.
func walPath(path string) string { return path + ".wal" }

func openWAL(path string) (*os.File, error) {
	f, err := os.OpenFile(walPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open embedded store log %s: %w", walPath(path), err)
	}
	if err := preallocate(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("prepare embedded store log %s: %w", walPath(path), err)
	}
	return f, nil
}

// preallocate writes zeros up to walPrealloc bytes.
func preallocate(f *os.File) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Size() >= walPrealloc {
		return nil
	}
	zeros := make([]byte, 1<<20)
	for off := info.Size(); off < walPrealloc; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), walPrealloc-off)], off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// readWAL returns the entries of the log's records written in generation
// gen, in order, up to the first torn or corrupt record, and the last
// record's oplog head.
func readWAL(f *os.File, gen int64) (out bsonkit.List, head any, err error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	for len(data) >= 8 {
		n := binary.LittleEndian.Uint32(data)
		sum := binary.LittleEndian.Uint32(data[4:])
		if n == 0 || uint64(n) > uint64(len(data)-8) {
			break
		}
		payload := data[8 : 8+n]
		if crc32.Checksum(payload, crcTable) != sum {
			break
		}
		data = data[8+n:]
		var rec walRecord
		if err := bson.Unmarshal(payload, &rec); err != nil {
			break
		}
		if rec.Gen != gen {
			continue // covered by the checkpoint that raised the generation
		}
		for i := range rec.Entries {
			out = append(out, &rec.Entries[i])
		}
		head = rec.Head
	}
	return out, head, nil
}

// appendWAL writes one record and waits for it to reach the disk.
func (s *Store) appendWAL(entries bsonkit.List, head any) error {
	rec := walRecord{Gen: s.walGen, Entries: make([]bson.D, len(entries)), Head: head}
	for i, e := range entries {
		rec.Entries[i] = *e
	}
	payload, err := bson.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode log record: %w", err)
	}
	buf := make([]byte, 8, 8+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, crcTable))
	buf = append(buf, payload...)
	if _, err := s.wal.WriteAt(buf, s.walSize); err != nil {
		return fmt.Errorf("write log %s: %w", walPath(s.path), err)
	}
	if !s.walNoSync {
		if err := fdatasync(s.wal); err != nil {
			return fmt.Errorf("sync log %s: %w", walPath(s.path), err)
		}
	}
	s.walSize += int64(len(buf))
	s.walRecords++
	return nil
}

// resetWAL starts the log over after a checkpoint made its records
// redundant: their generation is stale, so the next records overwrite them.
func (s *Store) resetWAL() {
	s.walSize, s.walRecords, s.logged = 0, 0, nil
}

// logEntries returns the oplog entries cat holds after the last one logged
// or stored, if the commit that produced cat can go to the log (see the top
// of this file).
func (s *Store) logEntries(cat *lungo.Catalog) (bsonkit.List, bool) {
	prev := s.committed
	if prev == nil || s.lastEntry == nil || len(prev.Namespaces) != len(cat.Namespaces) {
		return nil, false
	}
	oplog := cat.Namespaces[lungo.Oplog]
	if oplog == nil {
		return nil, false
	}
	pos, ok := oplog.Documents.Position(s.lastEntry)
	if !ok {
		return nil, false
	}
	fresh := oplog.Documents.List()[pos+1:]
	changes, err := parseChanges(fresh)
	if err != nil {
		return nil, false
	}
	for h, coll := range cat.Namespaces {
		old, ok := prev.Namespaces[h]
		if !ok {
			return nil, false
		}
		if h == lungo.Oplog || old == coll {
			continue
		}
		st := s.nss[h]
		if st == nil || !sameIndexes(st.indexes, coll) {
			return nil, false
		}
		// The entries must account for the change in size; otherwise the
		// commit changed documents the oplog does not show.
		delta := 0
		for _, c := range changes[h] {
			switch c.op {
			case 'i':
				delta++
			case 'd':
				delta--
			case 'x':
				return nil, false
			}
		}
		if old.Documents.Len()+delta != coll.Documents.Len() {
			return nil, false
		}
	}
	for h := range changes {
		if _, ok := cat.Namespaces[h]; !ok {
			return nil, false
		}
	}
	return fresh, true
}

// recoverWAL replays the log's current-generation records into bbolt, as a
// checkpoint. It runs before Load reads the file.
func (s *Store) recoverWAL() error {
	var gen int64
	if err := s.db.View(func(tx *bolt.Tx) error {
		gen = readGen(tx)
		return nil
	}); err != nil {
		return err
	}
	entries, head, err := readWAL(s.wal, gen)
	if err != nil {
		return fmt.Errorf("read log %s: %w", walPath(s.path), err)
	}
	if len(entries) > 0 {
		changes, err := parseChanges(entries)
		if err != nil {
			return fmt.Errorf("log %s: %w", walPath(s.path), err)
		}
		err = s.db.Update(func(tx *bolt.Tx) error {
			root := tx.Bucket(bucketNS)
			for h, cs := range changes {
				if _, err := applyChanges(root, encodeHandle(h), cs); err != nil {
					return fmt.Errorf("namespace %s: %w", h, err)
				}
			}
			for _, e := range entries {
				if _, err := putEntry(tx.Bucket(bucketOplog), e); err != nil {
					return err
				}
			}
			if err := trimOplog(tx.Bucket(bucketOplog), head); err != nil {
				return err
			}
			return writeGen(tx, gen+1)
		})
		if err != nil {
			return fmt.Errorf("replay log %s: %w", walPath(s.path), err)
		}
		gen++
	}
	s.walGen = gen
	s.resetWAL()
	return nil
}

func readGen(tx *bolt.Tx) int64 {
	if v := tx.Bucket(bucketMeta).Get(keyWALGen); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func writeGen(tx *bolt.Tx, gen int64) error {
	return tx.Bucket(bucketMeta).Put(keyWALGen, seqKey(uint64(gen)))
}

// trimOplog deletes the stored oplog entries before the one whose _id is
// head; it deletes none if no entry has that _id.
func trimOplog(b *bolt.Bucket, head any) error {
	if head == nil {
		return nil
	}
	var drop [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		doc, err := decodeDoc(v)
		if err != nil {
			return fmt.Errorf("oplog entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if bsonkit.Compare(bsonkit.Get(doc, "_id"), head) == 0 {
			for _, k := range drop {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}
		drop = append(drop, k)
	}
	return nil
}
