package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A segment is one bbolt file of events. Segment files live in the
// directory SegmentDir(path) and are named after the first sequence they
// may hold; the newest one is the active segment, which takes appends and
// holds the sources' checkpoints. See RATIONALE.md ("Events live in segment
// files") for why.
//
// Segment layout: `meta` (format, appended bytes), `events` (sequence →
// record, the bucket sequence is the last appended sequence) and `sources`
// (source id → state). A rotation copies the sources into the new segment
// in the transaction that creates it, so the newest segment always holds
// every source's checkpoint, written in the same transaction as the events
// it covers.
type segment struct {
	// start is the first sequence the segment may hold: its events are
	// [start, next segment's start). 0 for a migrated single-file outbox.
	start uint64
	path  string
	opts  *bolt.Options

	mu sync.Mutex
	// db is nil until the segment is first used: Open opens only the
	// active segment, so its cost does not grow with the backlog.
	db   *bolt.DB
	gone bool // closed by retention or Close
}

// handle opens the segment if need be. A closed segment reports bbolt's
// ErrDatabaseNotOpen, as a closed bbolt file would.
func (s *segment) handle() (*bolt.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return nil, bolterrors.ErrDatabaseNotOpen
	}
	if s.db == nil {
		db, err := bolt.Open(s.path, 0o600, s.opts)
		if err != nil {
			return nil, fmt.Errorf("segment %s: %w", s.path, err)
		}
		s.db = db
	}
	return s.db, nil
}

func (s *segment) view(fn func(*bolt.Tx) error) error {
	db, err := s.handle()
	if err != nil {
		return err
	}
	return db.View(fn)
}

func (s *segment) update(fn func(*bolt.Tx) error) error {
	db, err := s.handle()
	if err != nil {
		return err
	}
	return db.Update(fn)
}

// close closes the segment, waiting for its readers; later uses fail.
func (s *segment) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

const (
	segmentExt = ".seg"
	// DefaultSegmentBytes is the default size of a segment file's events.
	DefaultSegmentBytes = 64 << 20
)

var (
	// keyAppended (segment meta) counts the bytes of every record ever
	// appended, across segments; keyBase is its value when the segment was
	// created. keyFrom and keyFreed (outbox meta) are the first retained
	// sequence and the bytes of every record before it.
	keyAppended = []byte("appended")
	keyBase     = []byte("base")
	keyFrom     = []byte("from")
	keyFreed    = []byte("freed")
)

// failpoint marks the steps of rotation, retention and migration where a
// crash leaves more than one file changed; the crash tests stop a child
// process there (export_test.go). It does nothing otherwise.
var failpoint = func(string) {}

// SegmentDir returns the directory that holds the event segments of the
// outbox at path.
func SegmentDir(path string) string { return path + ".segments" }

func segmentPath(dir string, start uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", start, segmentExt))
}

func segmentOptions(opts Options, active bool) *bolt.Options {
	bo := &bolt.Options{Timeout: opts.LockTimeout}
	if active {
		// The active segment grows to about SegmentBytes: map it at once
		// so appends never wait for readers to let bbolt remap.
		bo.InitialMmapSize = int(opts.SegmentBytes + opts.SegmentBytes/4 + 1<<20)
	}
	return bo
}

// listSegments opens every segment in dir, oldest first, and removes what a
// rotation left half-done.
func listSegments(dir string, opts Options) ([]*segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []*segment
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			// A rotation that did not finish: nothing was appended to it.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		if !strings.HasSuffix(name, segmentExt) {
			continue
		}
		start, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s in %s is not a segment name; move it elsewhere", ErrFormat, name, dir)
		}
		segs = append(segs, &segment{start: start, path: filepath.Join(dir, name), opts: segmentOptions(opts, false)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].start < segs[j].start })
	if len(segs) > 0 {
		// The active segment is opened now (its errors are Open's); the
		// sealed ones when first read.
		act := segs[len(segs)-1]
		act.opts = segmentOptions(opts, true)
		if _, err := act.handle(); err != nil {
			return nil, err
		}
	}
	return segs, nil
}

func closeSegments(segs []*segment) error {
	var errs []error
	for _, s := range segs {
		errs = append(errs, s.close())
	}
	return errors.Join(errs...)
}

// createSegment writes a new segment at start whose first transaction
// holds the sequence, the byte counter and the sources copied from prev
// (nil for the first segment), then moves it into place. A crash before the
// rename leaves a .tmp file that the next Open removes.
func createSegment(dir string, start, last uint64, appended int64, prev *segment, opts Options) (*segment, error) {
	path := segmentPath(dir, start)
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	db, err := bolt.Open(tmp, 0o600, segmentOptions(opts, true))
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		for k, v := range map[string]uint64{string(keyFormat): FormatVersion, string(keyAppended): uint64(appended), string(keyBase): uint64(appended)} {
			if err := meta.Put([]byte(k), seqKey(v)); err != nil {
				return err
			}
		}
		events, err := tx.CreateBucket(bucketEvents)
		if err != nil {
			return err
		}
		if err := events.SetSequence(last); err != nil {
			return err
		}
		sources, err := tx.CreateBucket(bucketSources)
		if err != nil {
			return err
		}
		if prev == nil {
			return nil
		}
		return prev.view(func(ptx *bolt.Tx) error {
			return ptx.Bucket(bucketSources).ForEach(func(k, v []byte) error {
				return sources.Put(k, v)
			})
		})
	})
	if err == nil {
		failpoint("rotate-written")
		err = os.Rename(tmp, path)
	}
	if err == nil {
		failpoint("rotate-renamed")
		err = syncDir(dir)
	}
	if err != nil {
		_ = db.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return &segment{start: start, path: path, opts: segmentOptions(opts, true), db: db}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// segmentState reads what the active segment says about the whole outbox:
// the last sequence, the appended-bytes counter and the counter's value at
// the segment's creation.
func segmentState(s *segment) (last uint64, appended, base int64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		meta, events := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
		if meta == nil || events == nil || tx.Bucket(bucketSources) == nil {
			return fmt.Errorf("%w: segment %s lacks a bucket", ErrFormat, s.path)
		}
		last = events.Sequence()
		appended = segmentAppended(meta)
		base = int64(keySeq(meta.Get(keyBase)))
		return nil
	})
	return last, appended, base, err
}

// segmentAppended reads the appended-bytes counter; a migrated single-file
// outbox has only its retained bytes, which is the same number because
// nothing was freed before the migration.
func segmentAppended(meta *bolt.Bucket) int64 {
	if v := meta.Get(keyAppended); v != nil {
		return int64(keySeq(v))
	}
	return int64(keySeq(meta.Get(keyBytes)))
}

// migrate turns a single-file (format 1) outbox, open as db, into the
// segmented layout without copying events: the file itself becomes segment
// 0 (a hard link), and a new small file with the sink cursors and dead
// letters replaces it at path in one rename. A crash before the rename
// leaves the old file in place and the migration runs again at the next
// Open; after it, the outbox is migrated.
func migrate(db *bolt.DB, path, dir string) error {
	tmp := path + ".migrate"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ndb, err := bolt.Open(tmp, 0o600, nil)
	if err != nil {
		return err
	}
	err = db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		from := events.Sequence() + 1
		if k, _ := events.Cursor().First(); k != nil {
			from = keySeq(k)
		}
		return ndb.Update(func(ntx *bolt.Tx) error {
			meta, err := ntx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := meta.Put(keyFormat, seqKey(FormatVersion)); err != nil {
				return err
			}
			if err := meta.Put(keyFrom, seqKey(from)); err != nil {
				return err
			}
			if err := meta.Put(keyFreed, seqKey(0)); err != nil {
				return err
			}
			// Sink cursors and every dead-letter bucket.
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				if string(name) != string(bucketSinks) && !strings.HasPrefix(string(name), deadPrefix) {
					return nil
				}
				nb, err := ntx.CreateBucket(name)
				if err != nil {
					return err
				}
				return b.ForEach(func(k, v []byte) error { return nb.Put(k, v) })
			})
		})
	})
	if cerr := ndb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	seg0 := segmentPath(dir, 0)
	if err := os.Remove(seg0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(path, seg0); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	failpoint("migrate-linked")
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
