package outbox

import (
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
// at Open.
const FormatVersion = 1

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
	State string `json:"state"`
	// Reason says why a halted source stopped and what to do.
	Reason string `json:"reason,omitempty"`
	// Captured counts events appended for this source.
	Captured uint64 `json:"captured"`
	// LastClusterTime is the cluster time (seconds) of the last event seen.
	LastClusterTime uint32 `json:"last_cluster_time,omitempty"`
	// UpdatedAt is when the state was last written.
	UpdatedAt time.Time `json:"updated_at"`
}

// Source states.
const (
	StateRunning = "running"
	StateHalted  = "halted"
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
	// FileBytes is the size of the bbolt file.
	FileBytes int64 `json:"file_bytes"`
}

// Outbox is an open outbox file. It is safe for concurrent use.
type Outbox struct {
	db   *bolt.DB
	path string
	opts Options

	// writeMu serialises our write transactions so the cached counters below
	// are only published after the commit that produced them.
	writeMu sync.Mutex
	// arena holds the encoded records of one Append (guarded by writeMu).
	// bbolt needs them only until the transaction ends, so the next Append
	// reuses the memory instead of allocating and zeroing it again.
	arena []byte

	mu      sync.Mutex
	last    uint64
	oldest  uint64
	bytes   int64
	sinks   map[string]uint64 // registered sinks → acked
	holds   map[string]uint64 // readers without a cursor → last read (see Hold)
	changed chan struct{}     // closed and replaced on every append, retention or pause
	// committed is closed and replaced after every committed write
	// transaction (see WaitUntil).
	committed chan struct{}
	closed    bool
	paused    int           // appends waiting for space
	pauseCh   chan struct{} // closed and replaced when an append starts waiting
}

// Open opens or creates the outbox at path.
func Open(path string, opts Options) (*Outbox, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 200 * time.Millisecond
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open outbox %s: %w: stop the other godwit using this file, or give this one its own --data directory", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	o := &Outbox{db: db, path: path, opts: opts, sinks: map[string]uint64{}, holds: map[string]uint64{},
		changed: make(chan struct{}), committed: make(chan struct{}), pauseCh: make(chan struct{})}
	if err := o.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	return o, nil
}

func (o *Outbox) init() error {
	return o.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketSources, bucketSinks} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyFormat); v == nil {
			if tx.Bucket(bucketEvents).Stats().KeyN > 0 {
				return fmt.Errorf("%w: events without a format marker; this is not a godwit outbox", ErrFormat)
			}
			if err := meta.Put(keyFormat, seqKey(FormatVersion)); err != nil {
				return err
			}
		} else if got := keySeq(v); got != FormatVersion {
			return fmt.Errorf("%w: file has format %d, this godwit reads format %d; use the godwit version that wrote it", ErrFormat, got, FormatVersion)
		}
		events := tx.Bucket(bucketEvents)
		o.last = events.Sequence()
		if k, _ := events.Cursor().First(); k != nil {
			o.oldest = keySeq(k)
		}
		o.bytes = int64(keySeq(meta.Get(keyBytes)))
		return nil
	})
}

// Path returns the file path.
func (o *Outbox) Path() string { return o.path }

// Close closes the file. Blocked Append and Wait calls return ErrClosed.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	o.broadcastLocked()
	close(o.committed)
	close(o.pauseCh)
	o.mu.Unlock()
	return o.db.Close()
}

func (o *Outbox) broadcastLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// DeadLetter returns the sink's dead letter for sequence seq, if it parked
// that event.
func (o *Outbox) DeadLetter(sink string, seq uint64) (DeadLetter, bool, error) {
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
	s := Stats{Bytes: o.bytes, MaxBytes: o.opts.MaxBytes, Oldest: o.oldest, Last: o.last}
	o.mu.Unlock()
	if fi, err := os.Stat(o.path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s
}

// Check runs bbolt's consistency check over the whole file and returns every
// problem found.
func (o *Outbox) Check() error {
	var errs []error
	err := o.viewTx(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		// Every stored record must decode, and the size counter must match.
		var size int64
		err := tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			size += int64(len(v) + 8)
			_, err := DecodeRecord(keySeq(k), v)
			return err
		})
		if err != nil {
			errs = append(errs, err)
		}
		if got := int64(keySeq(tx.Bucket(bucketMeta).Get(keyBytes))); got != size {
			errs = append(errs, fmt.Errorf("stored size %d does not match records' size %d", got, size))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
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
	o.mu.Lock()
	if !o.closed {
		close(o.committed)
		o.committed = make(chan struct{})
	}
	o.mu.Unlock()
	return nil
}

func closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
