package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.mongodb.org/mongo-driver/bson"
)

// FormatVersion is the layout version written to new files.
const FormatVersion = "1"

var (
	bucketMeta    = []byte("meta")
	bucketNS      = []byte("ns")
	bucketOplog   = []byte("oplog")
	bucketDocs    = []byte("docs")
	bucketIDs     = []byte("ids")
	bucketIndexes = []byte("indexes")
	keyFormat     = []byte("format")
)

// Options configure Open. The zero value is ready to use.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// file before failing with ErrLocked. Default 1s.
	LockTimeout time.Duration
}

// Store is a lungo.Store on bbolt. It is safe for concurrent use, though
// lungo's engine calls it from one commit at a time.
type Store struct {
	path     string
	db       *bolt.DB
	migrated string

	mu     sync.Mutex
	closed bool
	// What is durable, as of the last Load or successful Store.
	nss   map[lungo.Handle]*nsState
	oplog []entryRef // oldest first

	// The write-ahead log (wal.go) and what the engine last committed:
	// its catalog and newest oplog entry, logged or stored.
	wal        *os.File
	walGen     int64
	walSize    int64
	walRecords int
	committed  *lungo.Catalog
	lastEntry  bsonkit.Doc
	// logged holds the entries of the log's records since the last
	// checkpoint, oldest first: the next checkpoint's changes start with
	// them, even when lungo has trimmed them from its oplog meanwhile.
	logged bsonkit.List
	// walNoSync skips the log's fdatasync: BenchmarkStore_CommitNoFsync
	// only, never set otherwise.
	walNoSync bool
}

// nsState mirrors one stored namespace.
type nsState struct {
	coll    *mongokit.Collection // the collection last stored (pointer identity)
	count   int
	indexes map[string]mongokit.IndexConfig
}

type entryRef struct {
	doc bsonkit.Doc
	seq uint64
}

// Open opens or creates the store at path. A file written by lungo's
// FileStore is converted first (see Migrated).
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	kind, err := detect(path)
	if err != nil {
		return nil, err
	}
	var backup string
	if kind == kindFileStore {
		if backup, err = migrate(path); err != nil {
			return nil, fmt.Errorf("convert lungo FileStore file %s: %w", path, err)
		}
	}
	s, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	s.migrated = backup
	return s, nil
}

func openBolt(path string, opts Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open embedded store %s: %w (waited %s): stop the other process using this file, or give this one its own lungo: path", path, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	s := &Store{path: path, db: db, nss: map[lungo.Handle]*nsState{}}
	fresh := false
	if err := db.Update(func(tx *bolt.Tx) (err error) {
		fresh, err = initBuckets(tx)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	if fresh {
		// A log left by another store that had this path is not ours.
		if err := os.Remove(walPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = db.Close()
			return nil, fmt.Errorf("open embedded store %s: remove a stale log: %w", path, err)
		}
	}
	if s.wal, err = openWAL(path); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// initBuckets prepares a new file, or checks an existing one; fresh reports
// a new file.
func initBuckets(tx *bolt.Tx) (fresh bool, err error) {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return false, err
	}
	switch v := meta.Get(keyFormat); {
	case v == nil:
		if tx.Bucket(bucketNS) != nil || tx.Bucket(bucketOplog) != nil {
			return false, fmt.Errorf("%w: data without a format marker; this is not a godwit embedded store", ErrFormat)
		}
		if err := meta.Put(keyFormat, []byte(FormatVersion)); err != nil {
			return false, err
		}
		fresh = true
	case string(v) != FormatVersion:
		return false, fmt.Errorf("%w: file has format %q, this godwit reads format %q; use the godwit version that wrote it", ErrFormat, v, FormatVersion)
	}
	for _, name := range [][]byte{bucketNS, bucketOplog} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return false, err
		}
	}
	return fresh, nil
}

// Path returns the file path.
func (s *Store) Path() string { return s.path }

// Migrated returns the path of the backup of the lungo FileStore file that
// this Open converted, or "" when the file already was a store.
func (s *Store) Migrated() string { return s.migrated }

// Close checkpoints the log into the bbolt file and closes both. Close the
// engine first: a Store after Close fails with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.walRecords > 0 && s.committed != nil {
		err = s.checkpoint(s.committed)
	}
	if cerr := s.wal.Close(); err == nil {
		err = cerr
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load reads the whole catalog and rebuilds its indexes.
func (s *Store) Load() (*lungo.Catalog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := s.recoverWAL(); err != nil {
		return nil, fmt.Errorf("load embedded store %s: %w", s.path, err)
	}
	cat := lungo.NewCatalog()
	nss := map[lungo.Handle]*nsState{}
	var oplog []entryRef
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketNS).ForEachBucket(func(k []byte) error {
			h, err := decodeHandle(k)
			if err != nil {
				return err
			}
			coll, st, err := loadNamespace(tx.Bucket(bucketNS).Bucket(k))
			if err != nil {
				return fmt.Errorf("namespace %s: %w", h, err)
			}
			cat.Namespaces[h] = coll
			nss[h] = st
			return nil
		})
		if err != nil {
			return err
		}
		var list bsonkit.List
		err = tx.Bucket(bucketOplog).ForEach(func(k, v []byte) error {
			doc, err := decodeDoc(v)
			if err != nil {
				return fmt.Errorf("oplog entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			list = append(list, doc)
			oplog = append(oplog, entryRef{doc: doc, seq: binary.BigEndian.Uint64(k)})
			return nil
		})
		if err != nil {
			return err
		}
		cat.Namespaces[lungo.Oplog].Documents = bsonkit.NewSet(list)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load embedded store %s: %w", s.path, err)
	}
	s.nss, s.oplog = nss, oplog
	s.setCommitted(cat)
	return cat, nil
}

// setCommitted records cat as the engine's current catalog.
func (s *Store) setCommitted(cat *lungo.Catalog) {
	s.committed, s.lastEntry = cat, nil
	if o := cat.Namespaces[lungo.Oplog]; o != nil && o.Documents.Len() > 0 {
		s.lastEntry = o.Documents.List()[o.Documents.Len()-1]
	}
}

func loadNamespace(b *bolt.Bucket) (*mongokit.Collection, *nsState, error) {
	var list bsonkit.List
	err := b.Bucket(bucketDocs).ForEach(func(k, v []byte) error {
		doc, err := decodeDoc(v)
		if err != nil {
			return fmt.Errorf("document at position %d: %w", binary.BigEndian.Uint64(k), err)
		}
		list = append(list, doc)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	coll := mongokit.NewCollection(false)
	coll.Documents = bsonkit.NewSet(list)
	st := &nsState{coll: coll, count: len(list), indexes: map[string]mongokit.IndexConfig{}}
	err = b.Bucket(bucketIndexes).ForEach(func(k, v []byte) error {
		var def lungo.FileIndex
		if err := bson.Unmarshal(v, &def); err != nil {
			return fmt.Errorf("index %q: %w", k, err)
		}
		index, err := mongokit.CreateIndex(mongokit.IndexConfig{Key: def.Key, Unique: def.Unique, Partial: def.Partial, Expiry: def.Expiry})
		if err != nil {
			return fmt.Errorf("index %q: %w", k, err)
		}
		ok, err := index.Build(list)
		if err != nil {
			return fmt.Errorf("index %q: %w", k, err)
		} else if !ok {
			return fmt.Errorf("duplicate document for index %q", k)
		}
		coll.Indexes[string(k)] = index
		st.indexes[string(k)] = index.Config()
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return coll, st, nil
}

// Store makes what changed since the last Load or Store durable: in the
// write-ahead log when the commit only wrote documents, else (and every
// walMaxRecords commits) in one bbolt transaction.
func (s *Store) Store(cat *lungo.Catalog) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	entries, ok := s.logEntries(cat)
	if !ok {
		return s.checkpoint(cat)
	}
	if len(entries) > 0 {
		oplog := cat.Namespaces[lungo.Oplog].Documents
		if err := s.appendWAL(entries, bsonkit.Get(oplog.List()[0], "_id")); err != nil {
			return fmt.Errorf("store embedded store %s: %w", s.path, err)
		}
		s.lastEntry = entries[len(entries)-1]
		s.logged = append(s.logged, entries...)
	}
	s.committed = cat
	if s.walRecords >= walMaxRecords || s.walSize >= walMaxBytes {
		return s.checkpoint(cat)
	}
	return nil
}

// checkpoint writes what changed since the last checkpoint (logged or not)
// in one durable bbolt transaction, then empties the log.
func (s *Store) checkpoint(cat *lungo.Catalog) error {
	var list bsonkit.List
	if o := cat.Namespaces[lungo.Oplog]; o != nil {
		list = o.Documents.List()
	}

	// Anchor on the last entry stored or logged since: the stored ones,
	// then the logged ones, then the catalog's entries after the anchor
	// are the history; what follows the stored ones are the changes to
	// write (the logged ones count even if lungo has trimmed them since).
	// The stored entries before the new head were trimmed.
	var fresh bsonkit.List
	head, anchored := 0, false
	last := s.lastStoredOrLogged()
	if last != nil {
		for i := len(list) - 1; i >= 0; i-- {
			if list[i] == last {
				fresh = append(slices.Clip(s.logged), list[i+1:]...)
				anchored = true
				break
			}
		}
	}
	// head: the stored entries before it were trimmed; trimmed: the number
	// of fresh ones lungo trimmed too (when none of the stored are left).
	trimmed := 0
	if anchored && len(list) > 0 {
		head = len(s.oplog)
		for i, e := range s.oplog {
			if e.doc == list[0] {
				head = i
				break
			}
		}
		if head == len(s.oplog) {
			// The committed oplog is a suffix of fresh.
			trimmed = len(fresh) - len(list)
			if trimmed < 0 || fresh[trimmed] != list[0] {
				anchored = false
			}
		}
	}
	var changes map[lungo.Handle][]change
	if anchored {
		var err error
		if changes, err = parseChanges(fresh); err != nil {
			anchored = false
		}
	}

	nss := make(map[lungo.Handle]*nsState, len(cat.Namespaces))
	var oplog []entryRef
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketNS)
		for h := range s.nss {
			if _, ok := cat.Namespaces[h]; !ok {
				if err := root.DeleteBucket(encodeHandle(h)); err != nil {
					return fmt.Errorf("drop namespace %s: %w", h, err)
				}
			}
		}
		for h, coll := range cat.Namespaces {
			if h == lungo.Oplog {
				continue
			}
			old := s.nss[h]
			if old != nil && old.coll == coll {
				nss[h] = old
				continue
			}
			var st *nsState
			var err error
			switch {
			case old == nil:
				st, err = rewrite(root, h, coll)
			case anchored:
				st, err = replay(root, h, coll, old, changes[h])
			default:
				st, err = diff(root, h, coll, old)
			}
			if err != nil {
				return fmt.Errorf("namespace %s: %w", h, err)
			}
			nss[h] = st
		}
		var err error
		if anchored {
			oplog, err = appendOplog(tx.Bucket(bucketOplog), s.oplog, head, fresh[trimmed:])
		} else {
			oplog, err = diffOplog(tx.Bucket(bucketOplog), s.oplog, cat.Namespaces[lungo.Oplog])
		}
		if err != nil {
			return err
		}
		return writeGen(tx, s.walGen+1)
	})
	if err != nil {
		return fmt.Errorf("store embedded store %s: %w", s.path, err)
	}
	s.nss, s.oplog = nss, oplog
	s.walGen++
	s.setCommitted(cat)
	s.resetWAL()
	return nil
}

// change is one document write taken from an oplog entry.
type change struct {
	op  byte // 'i' insert, 'p' put (replace, update), 'd' delete, 'x' drop namespace
	id  []byte
	doc bson.D
}

// parseChanges groups the oplog entries' document writes by namespace, in
// order. An entry it does not understand is an error: the caller then
// rewrites the changed namespaces instead.
func parseChanges(entries bsonkit.List) (map[lungo.Handle][]change, error) {
	out := map[lungo.Handle][]change{}
	for _, e := range entries {
		db, _ := bsonkit.Get(e, "ns.db").(string)
		coll, _ := bsonkit.Get(e, "ns.coll").(string)
		op, _ := bsonkit.Get(e, "operationType").(string)
		h := lungo.Handle{db, coll}
		switch op {
		case "insert", "update", "replace", "delete":
			id, err := encodeID(bsonkit.Get(e, "documentKey._id"))
			if err != nil {
				return nil, err
			}
			c := change{op: 'd', id: id}
			if op != "delete" {
				doc, ok := bsonkit.Get(e, "fullDocument").(bson.D)
				if !ok {
					return nil, errors.New("oplog entry without fullDocument")
				}
				c.op, c.doc = 'p', doc
				if op == "insert" {
					c.op = 'i'
				}
			}
			out[h] = append(out[h], c)
		case "drop":
			out[h] = append(out[h], change{op: 'x'})
		case "rename":
			// The source is gone; the target's previous documents (if
			// dropTarget replaced it) are too, and its new ones are in no
			// entry: the count check then rewrites it from the catalog.
			toDB, _ := bsonkit.Get(e, "to.db").(string)
			toColl, _ := bsonkit.Get(e, "to.coll").(string)
			to := lungo.Handle{toDB, toColl}
			out[h] = append(out[h], change{op: 'x'})
			out[to] = append(out[to], change{op: 'x'})
		case "dropDatabase":
			// Each of its collections has its own drop entry first.
		default:
			return nil, fmt.Errorf("unknown oplog operation %q", op)
		}
	}
	return out, nil
}

// replay applies a namespace's changes to its buckets. If the result does
// not have as many documents as the committed collection (which would mean
// the oplog did not tell the whole story), the namespace is rewritten.
func replay(root *bolt.Bucket, h lungo.Handle, coll *mongokit.Collection, old *nsState, changes []change) (*nsState, error) {
	st := &nsState{coll: coll}
	if old != nil {
		st.count, st.indexes = old.count, old.indexes
	}
	res, err := applyChanges(root, encodeHandle(h), changes)
	if err != nil {
		return nil, err
	}
	if res.dropped {
		st.count, st.indexes = 0, nil
	}
	st.count += res.delta
	if !res.consistent || st.count != coll.Documents.Len() {
		return rewrite(root, h, coll)
	}
	if st.indexes, err = syncIndexes(res.bucket.Bucket(bucketIndexes), st.indexes, coll); err != nil {
		return nil, err
	}
	return st, nil
}

// applied is what applyChanges did to a namespace.
type applied struct {
	bucket *bolt.Bucket
	// delta is the change in the number of documents since the namespace
	// was dropped, if dropped, else since before.
	delta      int
	dropped    bool
	consistent bool // false if a delete found no document
}

// applyChanges writes a namespace's changes to its buckets, in order.
// Applying them again gives the same documents.
func applyChanges(root *bolt.Bucket, key []byte, changes []change) (applied, error) {
	b, err := nsBucket(root, key)
	if err != nil {
		return applied{}, err
	}
	res := applied{consistent: true}
	docs, ids := b.Bucket(bucketDocs), b.Bucket(bucketIDs)
	for _, c := range changes {
		switch c.op {
		case 'x':
			if err := root.DeleteBucket(key); err != nil {
				return applied{}, err
			}
			if b, err = nsBucket(root, key); err != nil {
				return applied{}, err
			}
			docs, ids = b.Bucket(bucketDocs), b.Bucket(bucketIDs)
			res.delta, res.dropped = 0, true
		case 'i', 'p':
			raw, err := bson.Marshal(c.doc)
			if err != nil {
				return applied{}, err
			}
			pos := ids.Get(c.id)
			if pos == nil {
				seq, err := docs.NextSequence()
				if err != nil {
					return applied{}, err
				}
				pos = seqKey(seq)
				if err := ids.Put(c.id, pos); err != nil {
					return applied{}, err
				}
				res.delta++
			}
			if err := docs.Put(pos, raw); err != nil {
				return applied{}, err
			}
		case 'd':
			pos := ids.Get(c.id)
			if pos == nil {
				res.consistent = false
				continue
			}
			if err := docs.Delete(pos); err != nil {
				return applied{}, err
			}
			if err := ids.Delete(c.id); err != nil {
				return applied{}, err
			}
			res.delta--
		}
	}
	res.bucket = b
	return res, nil
}

// diff writes the documents that differ between the stored collection and
// the committed one, by pointer identity (lungo never modifies a document in
// place: a write replaces it). It is used only when the oplog cannot say
// what changed, and costs a map lookup and an _id lookup per document. A
// document replaced keeps its stored position; if the committed order is
// not the stored positions' order (a document deleted and inserted again
// with the same _id moved to the end), the namespace is rewritten.
func diff(root *bolt.Bucket, h lungo.Handle, coll *mongokit.Collection, old *nsState) (*nsState, error) {
	b, err := nsBucket(root, encodeHandle(h))
	if err != nil {
		return nil, err
	}
	docs, ids := b.Bucket(bucketDocs), b.Bucket(bucketIDs)
	st := &nsState{coll: coll, count: old.count}
	prev, next := old.coll.Documents, coll.Documents
	if ok, err := inStoredOrder(ids, next.List()); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return rewrite(root, h, coll)
	}
	put := map[string]bool{}
	for _, doc := range next.List() {
		if prev.Has(doc) {
			continue
		}
		id, err := encodeID(bsonkit.Get(doc, "_id"))
		if err != nil {
			return nil, err
		}
		raw, err := bson.Marshal(*doc)
		if err != nil {
			return nil, err
		}
		pos := ids.Get(id)
		if pos == nil {
			seq, err := docs.NextSequence()
			if err != nil {
				return nil, err
			}
			pos = seqKey(seq)
			if err := ids.Put(id, pos); err != nil {
				return nil, err
			}
			st.count++
		}
		if err := docs.Put(pos, raw); err != nil {
			return nil, err
		}
		put[string(id)] = true
	}
	for _, doc := range prev.List() {
		if next.Has(doc) {
			continue
		}
		id, err := encodeID(bsonkit.Get(doc, "_id"))
		if err != nil {
			return nil, err
		}
		if put[string(id)] {
			continue // replaced
		}
		pos := ids.Get(id)
		if pos == nil {
			return rewrite(root, h, coll)
		}
		if err := docs.Delete(pos); err != nil {
			return nil, err
		}
		if err := ids.Delete(id); err != nil {
			return nil, err
		}
		st.count--
	}
	if st.count != len(next.List()) {
		return rewrite(root, h, coll)
	}
	if st.indexes, err = syncIndexes(b.Bucket(bucketIndexes), old.indexes, coll); err != nil {
		return nil, err
	}
	return st, nil
}

// inStoredOrder reports whether list's documents with a stored position come
// in the order of their positions, and the ones without come after them
// all (they will be given new, higher positions).
func inStoredOrder(ids *bolt.Bucket, list bsonkit.List) (bool, error) {
	var last []byte
	newSeen := false
	for i, doc := range list {
		id, err := encodeID(bsonkit.Get(doc, "_id"))
		if err != nil {
			return false, fmt.Errorf("document %d: %w", i, err)
		}
		pos := ids.Get(id)
		switch {
		case pos == nil:
			newSeen = true
		case newSeen || last != nil && bytes.Compare(pos, last) <= 0:
			return false, nil
		default:
			last = pos
		}
	}
	return true, nil
}

// rewrite replaces a namespace's buckets with the collection's contents.
func rewrite(root *bolt.Bucket, h lungo.Handle, coll *mongokit.Collection) (*nsState, error) {
	key := encodeHandle(h)
	if root.Bucket(key) != nil {
		if err := root.DeleteBucket(key); err != nil {
			return nil, err
		}
	}
	b, err := nsBucket(root, key)
	if err != nil {
		return nil, err
	}
	docs, ids := b.Bucket(bucketDocs), b.Bucket(bucketIDs)
	docs.FillPercent = 1 // positions only grow
	type idPos struct{ id, pos []byte }
	byID := make([]idPos, 0, coll.Documents.Len())
	for i, doc := range coll.Documents.List() {
		raw, err := bson.Marshal(*doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		id, err := encodeID(bsonkit.Get(doc, "_id"))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		seq, err := docs.NextSequence()
		if err != nil {
			return nil, err
		}
		if err := docs.Put(seqKey(seq), raw); err != nil {
			return nil, err
		}
		byID = append(byID, idPos{id, seqKey(seq)})
	}
	// In key order: bbolt inserts into a node in memory, and random order
	// into one large node costs quadratic time.
	slices.SortFunc(byID, func(a, b idPos) int { return bytes.Compare(a.id, b.id) })
	for _, e := range byID {
		if err := ids.Put(e.id, e.pos); err != nil {
			return nil, err
		}
	}
	st := &nsState{coll: coll, count: coll.Documents.Len()}
	if st.indexes, err = syncIndexes(b.Bucket(bucketIndexes), nil, coll); err != nil {
		return nil, err
	}
	return st, nil
}

// syncIndexes writes the index definitions that differ from old. Index
// definitions are small, so comparing them is cheap.
func syncIndexes(b *bolt.Bucket, old map[string]mongokit.IndexConfig, coll *mongokit.Collection) (map[string]mongokit.IndexConfig, error) {
	if sameIndexes(old, coll) {
		return old, nil
	}
	next := make(map[string]mongokit.IndexConfig, len(coll.Indexes))
	for name, index := range coll.Indexes {
		cfg := index.Config()
		next[name] = cfg
		if prev, ok := old[name]; ok && prev.Equal(cfg) {
			continue
		}
		raw, err := bson.Marshal(lungo.FileIndex{Key: cfg.Key, Unique: cfg.Unique, Partial: cfg.Partial, Expiry: cfg.Expiry})
		if err != nil {
			return nil, fmt.Errorf("index %q: %w", name, err)
		}
		if err := b.Put([]byte(name), raw); err != nil {
			return nil, err
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok {
			if err := b.Delete([]byte(name)); err != nil {
				return nil, err
			}
		}
	}
	return next, nil
}

// sameIndexes reports whether the collection's indexes are the ones old
// describes.
func sameIndexes(old map[string]mongokit.IndexConfig, coll *mongokit.Collection) bool {
	if len(old) != len(coll.Indexes) {
		return false
	}
	for name, index := range coll.Indexes {
		if cfg, ok := old[name]; !ok || !cfg.Equal(index.Config()) {
			return false
		}
	}
	return true
}

// lastStoredOrLogged is the newest oplog entry in bbolt or the log, or nil.
func (s *Store) lastStoredOrLogged() bsonkit.Doc {
	if n := len(s.logged); n > 0 {
		return s.logged[n-1]
	}
	if n := len(s.oplog); n > 0 {
		return s.oplog[n-1].doc
	}
	return nil
}

// appendOplog deletes the stored entries before head and stores the fresh
// ones.
func appendOplog(b *bolt.Bucket, stored []entryRef, head int, fresh bsonkit.List) ([]entryRef, error) {
	for _, e := range stored[:head] {
		if err := b.Delete(seqKey(e.seq)); err != nil {
			return nil, err
		}
	}
	// Appending to the trimmed slice is amortised O(1) per entry; it never
	// changes what stored (the state as of the last commit) sees, so a
	// failed commit leaves that intact.
	out := stored[head:]
	for _, doc := range fresh {
		ref, err := putEntry(b, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, ref)
	}
	return out, nil
}

// diffOplog brings the oplog bucket to the committed oplog by pointer
// identity: stored entries no longer in it were trimmed, entries not stored
// yet are new (lungo only appends to the oplog and trims its head).
func diffOplog(b *bolt.Bucket, stored []entryRef, oplog *mongokit.Collection) ([]entryRef, error) {
	var list bsonkit.List
	if oplog != nil {
		list = oplog.Documents.List()
	}
	known := make(map[bsonkit.Doc]uint64, len(stored))
	for _, e := range stored {
		known[e.doc] = e.seq
		if oplog == nil {
			continue
		}
		if !oplog.Documents.Has(e.doc) {
			if err := b.Delete(seqKey(e.seq)); err != nil {
				return nil, err
			}
		}
	}
	out := make([]entryRef, 0, len(list))
	for _, doc := range list {
		if seq, ok := known[doc]; ok {
			out = append(out, entryRef{doc: doc, seq: seq})
			continue
		}
		ref, err := putEntry(b, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, ref)
	}
	return out, nil
}

func putEntry(b *bolt.Bucket, doc bsonkit.Doc) (entryRef, error) {
	raw, err := bson.Marshal(*doc)
	if err != nil {
		return entryRef{}, fmt.Errorf("oplog entry: %w", err)
	}
	seq, err := b.NextSequence()
	if err != nil {
		return entryRef{}, err
	}
	return entryRef{doc: doc, seq: seq}, b.Put(seqKey(seq), raw)
}

func nsBucket(root *bolt.Bucket, key []byte) (*bolt.Bucket, error) {
	b, err := root.CreateBucketIfNotExists(key)
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketDocs, bucketIDs, bucketIndexes} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func encodeHandle(h lungo.Handle) []byte { return []byte(h[0] + "\x00" + h[1]) }

func decodeHandle(k []byte) (lungo.Handle, error) {
	db, coll, ok := strings.Cut(string(k), "\x00")
	if !ok {
		return lungo.Handle{}, fmt.Errorf("%w: bad namespace key %q", ErrFormat, k)
	}
	return lungo.Handle{db, coll}, nil
}

// encodeID is a document's key in its namespace's ids bucket: the BSON type
// and value of its _id.
func encodeID(id any) ([]byte, error) {
	if id == bsonkit.Missing || id == nil {
		return nil, errors.New("document without _id")
	}
	t, data, err := bson.MarshalValue(id)
	if err != nil {
		return nil, fmt.Errorf("encode _id: %w", err)
	}
	return append([]byte{byte(t)}, data...), nil
}

func decodeDoc(raw []byte) (bsonkit.Doc, error) {
	var d bson.D
	if err := bson.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
