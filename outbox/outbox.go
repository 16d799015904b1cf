package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FormatVersion is the on-disk layout version written at creation and checked
// at Open. Format 1 was one bbolt file; format 2 keeps events in segment
// files (see SegmentDir). Open migrates a format 1 outbox in place.
const FormatVersion = 2

// legacyFormat is the single-file layout Open migrates.
const legacyFormat = 1

var (
	bucketMeta    = []byte("meta")
	bucketEvents  = []byte("events")
	bucketSources = []byte("sources")
	bucketSinks   = []byte("sinks")
	deadPrefix    = "dead/"

	keyFormat = []byte("format")
	keyBytes  = []byte("bytes")
)

// Options configures an outbox. The zero value is usable.
type Options struct {
	// MaxBytes bounds the bytes of retained event records. Append blocks
	// while the bound would be exceeded. Default: 1 GiB. Negative: unbounded.
	MaxBytes int64
	// KeepAcked disables retention: acknowledged events stay. Used by the
	// demo, which checks the whole history at the end.
	KeepAcked bool
	// LockTimeout is how long Open waits for another process to release the
	// file. Default: 200ms.
	LockTimeout time.Duration
	// SegmentBytes is the size of event records after which appends move
	// to a new segment file. Retention deletes whole segments, so the disk
	// holds up to one segment more than the retained bytes. Default: 64 MiB
	// (DefaultSegmentBytes).
	SegmentBytes int64
}

// DefaultMaxBytes is the default bound of retained event bytes.
const DefaultMaxBytes = 1 << 30

// SourceState is a source's checkpoint and state.
type SourceState struct {
	// Token is the resume token (raw BSON document) covering every event of
	// this source appended so far. Empty before the first checkpoint.
	Token []byte `json:"token,omitempty"`
	// StartAt is the cluster time (seconds<<32 | increment) a source with no
	// token yet starts at: stored before its first stream opens, so a crash
	// before the first checkpoint does not move the start to a later "now".
	StartAt uint64 `json:"start_at,omitempty"`
	// Fingerprint identifies the change-stream pipeline the token was
	// obtained with.
	Fingerprint string `json:"fingerprint,omitempty"`
	// State is StateRunning or StateHalted.
	State State `json:"state"`
	// Reason says why a halted source stopped and what to do.
	Reason string `json:"reason,omitempty"`
	// Captured counts events appended for this source.
	Captured uint64 `json:"captured"`
	// LastClusterTime is the cluster time (seconds) of the last event seen.
	LastClusterTime uint32 `json:"last_cluster_time,omitempty"`
	// UpdatedAt is when the state was last written.
	UpdatedAt time.Time `json:"updated_at"`
}

// State is whether a source captures. It is stored, and shown by status
// and the admin API, as its string.
type State string

// Source states.
const (
	// StateRunning: the source captures (also after a restart).
	StateRunning State = "running"
	// StateHalted: capture stopped for a reason someone must act on
	// (SourceState.Reason says which, typically `godwit resync`); a
	// restart does not resume it.
	StateHalted State = "halted"
)

// SinkState is a sink's cursor and counters.
type SinkState struct {
	// Acked is the highest sequence the sink has acknowledged.
	Acked uint64 `json:"acked"`
	// Delivered counts events delivered (not parked).
	Delivered uint64 `json:"delivered"`
	// Parked counts events moved to dead letters.
	Parked uint64 `json:"parked"`
	// Retried counts dead letters removed after a successful retry: the
	// sink's dead letters number Parked - Retried.
	Retried uint64 `json:"retried,omitempty"`
	// UpdatedAt is when the cursor last moved.
	UpdatedAt time.Time `json:"updated_at"`
}

// Stats describes the outbox as a whole.
type Stats struct {
	// Bytes is the size of retained event records.
	Bytes int64 `json:"bytes"`
	// MaxBytes is the bound (negative: unbounded).
	MaxBytes int64 `json:"max_bytes"`
	// Oldest is the oldest retained sequence (0 when empty).
	Oldest uint64 `json:"oldest"`
	// Last is the last appended sequence (0 when none ever).
	Last uint64 `json:"last"`
	// FileBytes is the size of the outbox's files: the cursor file and
	// every event segment.
	FileBytes int64 `json:"file_bytes"`
	// Segments is the number of event segment files.
	Segments int `json:"segments"`
}

// Outbox is an open outbox file. It is safe for concurrent use.
type Outbox struct {
	db   *bolt.DB // cursors, dead letters, retention watermark
	path string
	dir  string // segment files
	opts Options

	// metaMu serialises write transactions of the cursor file (cursors,
	// dead letters, the retention watermark), and writeMu those of the
	// segments (appends, sources, rotation). Writers of the cursor file
	// take writeMu too (lockMeta): acks could commit while an append does,
	// but replicate's read-ahead was seen to fail with that (issue 19
	// report), so the two stay serialised as they were with one file.
	metaMu sync.Mutex
	// writeMu serialises our segment write transactions so the cached counters below
	// are only published after the commit that produced them.
	writeMu sync.Mutex
	// arena holds the encoded records of one Append (guarded by writeMu).
	// bbolt needs them only until the transaction ends, so the next Append
	// reuses the memory instead of allocating and zeroing it again.
	arena []byte

	// segs are the open segments, oldest first; the last one is active.
	// Rotation appends (under writeMu) and retention removes (under
	// metaMu), both under mu.
	segs []*segment
	// appended and freed count the bytes of records ever appended and of
	// those before the retention watermark from; activeBase is appended
	// when the active segment was created. appended and activeBase change
	// under writeMu and mu, from and freed under metaMu and mu.
	appended, freed, activeBase int64
	from                        uint64

	mu      sync.Mutex
	last    uint64
	oldest  uint64
	bytes   int64
	sinks   map[CursorID]uint64 // registered cursors → acked
	holds   map[string]uint64   // readers without a cursor → last read (see Hold)
	changed chan struct{}       // closed and replaced on every append, retention or pause
	// committed is closed and replaced after every committed write
	// transaction (see WaitUntil).
	committed chan struct{}
	closed    bool
	// filesClosed is closed when Close has closed the files, with the
	// result in closeErr.
	filesClosed chan struct{}
	closeErr    error
	paused      int           // appends waiting for space
	pauseCh     chan struct{} // closed and replaced when an append starts waiting
}

// Open opens or creates the outbox at path: a small bbolt file with the
// sink cursors and dead letters, and the event segments in SegmentDir(path).
// An outbox written by an older godwit as one file (format 1) is migrated
// in place without copying its events.
func Open(path string, opts Options) (*Outbox, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 200 * time.Millisecond
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	db, err := openMeta(path, opts)
	if err != nil {
		return nil, err
	}
	o := &Outbox{db: db, path: path, dir: SegmentDir(path), opts: opts, sinks: map[CursorID]uint64{}, holds: map[string]uint64{},
		changed: make(chan struct{}), committed: make(chan struct{}), pauseCh: make(chan struct{}), filesClosed: make(chan struct{})}
	if err := o.init(); err != nil {
		_ = closeSegments(o.segs)
		_ = o.db.Close()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	return o, nil
}

func openMeta(path string, opts Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open outbox %s: %w: stop the other godwit using this file, or give this one its own --data directory", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	return db, nil
}

// format reads the outbox file's format marker (0: none).
func format(db *bolt.DB) (uint64, error) {
	var f uint64
	err := db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			f = keySeq(meta.Get(keyFormat))
		}
		if f == 0 {
			if events := tx.Bucket(bucketEvents); events != nil && events.Stats().KeyN > 0 {
				return fmt.Errorf("%w: events without a format marker; this is not a godwit outbox", ErrFormat)
			}
		}
		return nil
	})
	return f, err
}

func (o *Outbox) init() error {
	f, err := format(o.db)
	if err != nil {
		return err
	}
	switch f {
	case 0: // new
		if err := os.MkdirAll(o.dir, 0o700); err != nil {
			return err
		}
		segs, err := listSegments(o.dir, o.opts)
		if err != nil {
			return err
		}
		if len(segs) == 0 {
			s, err := createSegment(o.dir, 1, 0, 0, nil, o.opts)
			if err != nil {
				return err
			}
			segs = append(segs, s)
		}
		o.segs = segs
		err = o.db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			for k, v := range map[string]uint64{string(keyFormat): FormatVersion, string(keyFrom): 1, string(keyFreed): 0} {
				if err := meta.Put([]byte(k), seqKey(v)); err != nil {
					return err
				}
			}
			_, err = tx.CreateBucketIfNotExists(bucketSinks)
			return err
		})
		if err != nil {
			return err
		}
	case legacyFormat:
		if err := migrate(o.db, o.path, o.dir); err != nil {
			return fmt.Errorf("migrate the single-file outbox to segments: %w", err)
		}
		_ = o.db.Close()
		if o.db, err = openMeta(o.path, o.opts); err != nil {
			return err
		}
		fallthrough
	case FormatVersion:
		if o.segs == nil {
			segs, err := listSegments(o.dir, o.opts)
			if err != nil {
				return err
			}
			if len(segs) == 0 {
				return fmt.Errorf("%w: no event segments in %s; restore them, or move %s away to start an empty outbox", ErrFormat, o.dir, o.path)
			}
			o.segs = segs
		}
	default:
		return fmt.Errorf("%w: file has format %d, this godwit reads formats %d and %d; use the godwit version that wrote it", ErrFormat, f, legacyFormat, FormatVersion)
	}
	err = o.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		o.from, o.freed = keySeq(meta.Get(keyFrom)), int64(keySeq(meta.Get(keyFreed)))
		return nil
	})
	if err != nil {
		return err
	}
	last, appended, base, err := segmentState(o.active())
	if err != nil {
		return err
	}
	o.last, o.appended, o.activeBase = last, appended, base
	if o.active().start == 0 {
		// Never append to a migrated single file: its freelist is what
		// the segments are there to avoid.
		if err := o.rotate(); err != nil {
			return err
		}
	}
	o.publishRetentionLocked()
	// Segments a crash left behind after retention moved past them.
	return o.removeSegments(o.doomedLocked())
}

// active returns the segment that takes appends; it changes under writeMu.
func (o *Outbox) active() *segment {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.activeLocked()
}

func (o *Outbox) activeLocked() *segment { return o.segs[len(o.segs)-1] }

// rotate moves appends to a new segment (under writeMu).
func (o *Outbox) rotate() error {
	s, err := createSegment(o.dir, o.last+1, o.last, o.appended, o.active(), o.opts)
	if err != nil {
		return fmt.Errorf("new segment: %w", err)
	}
	o.mu.Lock()
	o.segs = append(o.segs, s)
	o.activeBase = o.appended
	o.mu.Unlock()
	return nil
}

// publishRetentionLocked derives the published oldest sequence and bytes
// from the counters (under mu, or before the outbox is shared).
func (o *Outbox) publishRetentionLocked() {
	o.bytes = max(o.appended-o.freed, 0)
	o.oldest = 0
	if o.from <= o.last {
		o.oldest = o.from
	}
}

// doomedLocked takes out of o.segs the sealed segments whose events all
// precede the retention watermark (under metaMu and mu).
func (o *Outbox) doomedLocked() []*segment {
	n := 0
	for n < len(o.segs)-1 && o.segs[n+1].start <= o.from {
		n++
	}
	if n == 0 {
		return nil
	}
	doomed := append([]*segment(nil), o.segs[:n]...)
	o.segs = append(o.segs[:0:0], o.segs[n:]...)
	return doomed
}

// removeSegments closes (waiting for their readers) and deletes segments
// already taken out of o.segs. A crash in between is finished by Open.
func (o *Outbox) removeSegments(segs []*segment) error {
	var errs []error
	for _, s := range segs {
		failpoint("retain-remove")
		if err := s.close(); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove retained segments: %w", err)
	}
	return nil
}

// Path returns the file path.
func (o *Outbox) Path() string { return o.path }

// Close closes the outbox. Blocked Append, Wait, WaitUntil and WaitPaused
// calls return ErrClosed at once and new calls are refused; Close then
// waits for the transactions in flight (writes, and reads of every file)
// to end, closes the files and returns every error doing so. When ctx ends
// first, Close returns ctx's error and the files close as soon as the last
// transaction ends; a later Close waits for that again. Once the files are
// closed, every call returns the same result.
func (o *Outbox) Close(ctx context.Context) error {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		o.broadcastLocked()
		close(o.committed)
		close(o.pauseCh)
		go o.closeFiles()
	}
	o.mu.Unlock()
	select {
	case <-o.filesClosed:
		return o.closeErr
	case <-ctx.Done():
		return fmt.Errorf("close outbox %s: %w: reads or writes are still in flight; the files close when they end", o.path, ctx.Err())
	}
}

// closeFiles waits for the writers, closes the files (bbolt waits for
// their readers) and publishes the result (once, after o.closed is set).
func (o *Outbox) closeFiles() {
	defer close(o.filesClosed)
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.metaMu.Lock()
	defer o.metaMu.Unlock()
	o.mu.Lock()
	segs := o.segs
	o.mu.Unlock()
	o.closeErr = errors.Join(closeSegments(segs), o.db.Close())
}

func (o *Outbox) broadcastLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// DeadLetter returns the sink's dead letter for sequence seq, if it parked
// that event.
func (o *Outbox) DeadLetter(sink CursorID, seq uint64) (DeadLetter, bool, error) {
	var dl DeadLetter
	var found bool
	err := o.viewTx(func(tx *bolt.Tx) error {
		_, v := deadLetterValue(tx, sink, seq)
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, &dl); err != nil {
			return fmt.Errorf("dead letter %d of sink %s: %w", seq, sink, err)
		}
		r, err := DecodeRecord(seq, dl.RawValue)
		if err != nil {
			return fmt.Errorf("dead letter %d of sink %s: %w", seq, sink, err)
		}
		dl.Record, found = r, true
		return nil
	})
	return dl, found, err
}

// Stats returns counters of the outbox as a whole.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	s := Stats{Bytes: o.bytes, MaxBytes: o.opts.MaxBytes, Oldest: o.oldest, Last: o.last, Segments: len(o.segs)}
	paths := []string{o.path}
	for _, seg := range o.segs {
		paths = append(paths, seg.path)
	}
	o.mu.Unlock()
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s.FileBytes += fi.Size()
		}
	}
	return s
}

// Check runs bbolt's consistency check over every file and returns every
// problem found: each retained record must decode, sequences must be dense
// from the oldest retained one to the last, across segments, and the
// retained size must match the records.
func (o *Outbox) Check() error {
	var errs []error
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.metaMu.Lock()
	defer o.metaMu.Unlock()
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var from uint64
	var freed int64
	err := o.db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		meta := tx.Bucket(bucketMeta)
		from, freed = keySeq(meta.Get(keyFrom)), int64(keySeq(meta.Get(keyFreed)))
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	var size, appended int64
	next := from
	for i, seg := range o.segs {
		err := seg.view(func(tx *bolt.Tx) error {
			for e := range tx.Check() {
				errs = append(errs, fmt.Errorf("segment %s: %w", seg.path, e))
			}
			appended = segmentAppended(tx.Bucket(bucketMeta))
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
				seq := keySeq(k)
				if i+1 < len(o.segs) && seq >= o.segs[i+1].start {
					errs = append(errs, fmt.Errorf("segment %s holds %d, which belongs to the next segment", seg.path, seq))
					break
				}
				if seq != next {
					errs = append(errs, fmt.Errorf("segment %s: sequence %d follows %d", seg.path, seq, next-1))
				}
				next = seq + 1
				size += int64(len(v) + 8)
				if _, err := DecodeRecord(seq, v); err != nil {
					errs = append(errs, err)
				}
			}
			if i == len(o.segs)-1 && next != tx.Bucket(bucketEvents).Sequence()+1 && next > from {
				errs = append(errs, fmt.Errorf("records end at %d, last sequence is %d", next-1, tx.Bucket(bucketEvents).Sequence()))
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("segment %s: %w", seg.path, err))
		}
	}
	if got := appended - freed; got != size {
		errs = append(errs, fmt.Errorf("stored size %d does not match records' size %d", got, size))
	}
	return errors.Join(errs...)
}

// viewTx and updateTx run a transaction and report ErrClosed when the
// outbox was closed.
func (o *Outbox) viewTx(fn func(*bolt.Tx) error) error {
	return closedErr(o.db.View(fn))
}

func (o *Outbox) updateTx(fn func(*bolt.Tx) error) error {
	if err := o.db.Update(fn); err != nil {
		return closedErr(err)
	}
	o.committedNow()
	return nil
}

// lockMeta takes what a write transaction of the cursor file needs: writeMu
// (see metaMu) and metaMu, in the order Close takes them.
func (o *Outbox) lockMeta() {
	o.writeMu.Lock()
	o.metaMu.Lock()
}

func (o *Outbox) unlockMeta() {
	o.metaMu.Unlock()
	o.writeMu.Unlock()
}

// committedNow wakes WaitUntil after a committed write transaction.
func (o *Outbox) committedNow() {
	o.mu.Lock()
	o.committedLocked()
	o.mu.Unlock()
}

func (o *Outbox) committedLocked() {
	if !o.closed {
		close(o.committed)
		o.committed = make(chan struct{})
	}
}

func closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
