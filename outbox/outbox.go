package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
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

// DeadLetter is an event a sink gave up on.
type DeadLetter struct {
	Record   Record    `json:"-"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
	RawValue []byte    `json:"record"`
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

// Checkpoint is what Append stores for the source along with its events.
type Checkpoint struct {
	Token           []byte
	Fingerprint     string
	LastClusterTime uint32
}

// Append stores events captured from source and the source's checkpoint in
// one transaction, and returns the sequence of the last event (or the
// current last sequence when events is empty, which only moves the
// checkpoint). It blocks while the size bound would be exceeded; when ctx ends
// first, nothing is written. A batch with an event that is not one BSON
// document is refused as a whole, checkpoint included.
func (o *Outbox) Append(ctx context.Context, source string, events [][]byte, cp Checkpoint) (uint64, error) {
	if len(source) == 0 || len(source) > maxSourceID {
		return 0, fmt.Errorf("append: source id must be 1 to %d bytes", maxSourceID)
	}
	var size int64
	for i, e := range events {
		// Read could never decode it, and every sink would stop there.
		if !oneDocument(e) {
			return 0, fmt.Errorf("append %d events of source %s: event %d is not one BSON document", len(events), source, i)
		}
		size += int64(recordOverhead(source) + len(e))
	}
	// Concurrent appends may all see the same free space; the check that
	// counts is the one made while holding writeMu, which every change of
	// o.bytes holds.
	for {
		if err := o.awaitSpace(ctx, size); err != nil {
			return 0, err
		}
		o.writeMu.Lock()
		if o.fits(size) {
			break
		}
		o.writeMu.Unlock()
	}
	defer o.writeMu.Unlock()
	now := time.Now().UTC()
	var last, first uint64
	var newBytes int64
	arena := o.arena[:0]
	if int64(cap(arena)) < size {
		arena = make([]byte, 0, size)
	}
	err := o.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		b.FillPercent = 1.0 // keys only ever grow: pack pages full
		seq := b.Sequence()
		first = seq + 1
		// bbolt keeps keys and values until the transaction ends: encode
		// the whole batch into one arena rather than one buffer per record.
		for _, e := range events {
			seq++
			start := len(arena)
			arena = binary.BigEndian.AppendUint64(arena, seq)
			arena = encodeRecord(arena, source, now, e)
			if err := b.Put(arena[start:start+8], arena[start+8:]); err != nil {
				return err
			}
		}
		if err := b.SetSequence(seq); err != nil {
			return err
		}
		last = seq
		meta := tx.Bucket(bucketMeta)
		newBytes = int64(keySeq(meta.Get(keyBytes))) + size
		if err := meta.Put(keyBytes, seqKey(uint64(newBytes))); err != nil {
			return err
		}
		st, err := getSource(tx, source)
		if err != nil {
			return err
		}
		st.Token = cp.Token
		if cp.Fingerprint != "" {
			st.Fingerprint = cp.Fingerprint
		}
		if cp.LastClusterTime != 0 {
			st.LastClusterTime = cp.LastClusterTime
		}
		st.Captured += uint64(len(events))
		if st.State == "" {
			st.State = StateRunning
		}
		st.UpdatedAt = now
		return putJSON(tx.Bucket(bucketSources), source, st)
	})
	// The transaction is over and bbolt no longer refers to the arena.
	if cap(arena) <= maxKeptArena {
		o.arena = arena[:0]
	}
	if err != nil {
		return 0, fmt.Errorf("append %d events of source %s: %w", len(events), source, err)
	}
	o.mu.Lock()
	o.last = last
	o.bytes = newBytes
	if o.oldest == 0 && len(events) > 0 {
		o.oldest = first
	}
	if len(events) > 0 {
		o.broadcastLocked()
	}
	o.mu.Unlock()
	return last, nil
}

// maxKeptArena bounds the Append arena kept between appends: a rare huge
// batch does not pin its memory.
const maxKeptArena = 8 << 20

func recordOverhead(source string) int { return 2 + len(source) + 8 + 8 /* key */ }

func (o *Outbox) awaitSpace(ctx context.Context, size int64) error {
	released := false
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		if o.fitsLocked(size) {
			o.mu.Unlock()
			return nil
		}
		if !released && len(o.holds) > 0 {
			// Holds never pause capture: delete what only they kept,
			// then look again.
			o.mu.Unlock()
			released = true
			if err := o.retainWithoutHolds(); err != nil {
				return err
			}
			continue
		}
		o.paused++
		close(o.pauseCh)
		o.pauseCh = make(chan struct{})
		ch := o.changed
		o.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		o.mu.Lock()
		o.paused--
		o.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// fits reports whether size more bytes fit under the bound.
func (o *Outbox) fits(size int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fitsLocked(size)
}

func (o *Outbox) fitsLocked(size int64) bool {
	return o.opts.MaxBytes < 0 || o.bytes == 0 || o.bytes+size <= o.opts.MaxBytes
}

// WaitPaused blocks until at least one Append is waiting for space (capture
// is paused by back-pressure), the outbox closes or ctx ends. Tests and
// status use it; it has no effect on the paused append.
func (o *Outbox) WaitPaused(ctx context.Context) error {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		if o.paused > 0 {
			o.mu.Unlock()
			return nil
		}
		ch := o.pauseCh
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Paused returns how many appends are waiting for space.
func (o *Outbox) Paused() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.paused
}

// Blocked reports whether an append of size bytes would wait for retention.
func (o *Outbox) Blocked(size int64) bool { return !o.fits(size) }

// LastSeq returns the sequence of the last appended event.
func (o *Outbox) LastSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// Wait blocks until an event after seq exists, the outbox closes (ErrClosed)
// or ctx ends.
func (o *Outbox) Wait(ctx context.Context, seq uint64) error {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		if o.last > seq {
			o.mu.Unlock()
			return nil
		}
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Read returns up to max records with sequence greater than after, stopping
// early once maxBytes of raw events were collected (at least one record is
// returned when any exists).
func (o *Outbox) Read(after uint64, max int, maxBytes int) ([]Record, error) {
	var out []Record
	err := o.viewTx(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		c := events.Cursor()
		k, v := c.Seek(seqKey(after + 1))
		// Sequences are dense from the oldest retained event on, so landing
		// past after+1 means retention deleted it.
		if last := events.Sequence(); after < last && (k == nil || keySeq(k) > after+1) {
			return fmt.Errorf("%w: event %d was deleted after every registered sink acknowledged it", ErrBehindRetention, after+1)
		}
		n := 0
		for ; k != nil && len(out) < max; k, v = c.Next() {
			r, err := DecodeRecord(keySeq(k), v)
			if err != nil {
				return err
			}
			out = append(out, r)
			n += len(r.Raw)
			if maxBytes > 0 && n >= maxBytes {
				break
			}
		}
		return nil
	})
	return out, err
}

// Get returns the record with the given sequence.
func (o *Outbox) Get(seq uint64) (Record, bool, error) {
	var r Record
	var ok bool
	err := o.viewTx(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEvents).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		var err error
		r, err = DecodeRecord(seq, v)
		ok = err == nil
		return err
	})
	return r, ok, err
}

// Source returns the stored state of a source; ok is false when none exists.
func (o *Outbox) Source(id string) (SourceState, bool, error) {
	var st SourceState
	var ok bool
	err := o.viewTx(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSources).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &st)
	})
	if err != nil {
		return st, ok, fmt.Errorf("read state of source %s: %w", id, err)
	}
	return st, ok, nil
}

// Sources returns the state of every source ever checkpointed, by id.
func (o *Outbox) Sources() (map[string]SourceState, error) {
	out := map[string]SourceState{}
	err := o.viewTx(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSources).ForEach(func(k, v []byte) error {
			var st SourceState
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("source %s: %w", k, err)
			}
			out[string(k)] = st
			return nil
		})
	})
	return out, err
}

// UpdateSource changes a source's stored state with fn.
func (o *Outbox) UpdateSource(id string, fn func(*SourceState)) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	return o.updateTx(func(tx *bolt.Tx) error {
		st, err := getSource(tx, id)
		if err != nil {
			return err
		}
		fn(&st)
		st.UpdatedAt = time.Now().UTC()
		return putJSON(tx.Bucket(bucketSources), id, st)
	})
}

func getSource(tx *bolt.Tx, id string) (SourceState, error) {
	var st SourceState
	if v := tx.Bucket(bucketSources).Get([]byte(id)); v != nil {
		if err := json.Unmarshal(v, &st); err != nil {
			return st, fmt.Errorf("state of source %s is corrupt: %w", id, err)
		}
	}
	return st, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// RegisterSink makes a sink's cursor hold retention and returns its state.
// A new sink starts at the current oldest retained event: it sees everything
// still in the outbox.
func (o *Outbox) RegisterSink(id string) (SinkState, error) {
	if id == "" {
		return SinkState{}, errors.New("register sink: empty id")
	}
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	var st SinkState
	err := o.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSinks)
		if v := b.Get([]byte(id)); v != nil {
			return json.Unmarshal(v, &st)
		}
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			st.Acked = keySeq(k) - 1
		} else {
			st.Acked = tx.Bucket(bucketEvents).Sequence()
		}
		st.UpdatedAt = time.Now().UTC()
		return putJSON(b, id, st)
	})
	if err != nil {
		return st, fmt.Errorf("register sink %s: %w", id, err)
	}
	o.mu.Lock()
	o.sinks[id] = st.Acked
	o.mu.Unlock()
	return st, nil
}

// Sink returns the stored state of one sink cursor; ok is false when none
// exists.
func (o *Outbox) Sink(id string) (SinkState, bool, error) {
	var st SinkState
	var ok bool
	err := o.viewTx(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSinks).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &st)
	})
	if err != nil {
		return st, ok, fmt.Errorf("read cursor of sink %s: %w", id, err)
	}
	return st, ok, nil
}

// Sinks returns the stored state of every sink cursor, by id.
func (o *Outbox) Sinks() (map[string]SinkState, error) {
	out := map[string]SinkState{}
	err := o.viewTx(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSinks).ForEach(func(k, v []byte) error {
			var st SinkState
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("sink %s: %w", k, err)
			}
			out[string(k)] = st
			return nil
		})
	})
	return out, err
}

// Ack moves a sink's cursor to seq, counting delivered events, and deletes
// the prefix every registered sink has acknowledged. Acking backwards is a
// no-op.
func (o *Outbox) Ack(sink string, seq uint64, delivered uint64) error {
	return o.update(sink, seq, func(tx *bolt.Tx, st *SinkState) error {
		st.Delivered += delivered
		return nil
	})
}

// Park moves rec to the sink's dead letters with the last error and acks it.
func (o *Outbox) Park(sink string, rec Record, lastErr string, attempts int) error {
	return o.update(sink, rec.Seq, func(tx *bolt.Tx, st *SinkState) error {
		b, err := tx.CreateBucketIfNotExists([]byte(deadPrefix + sink))
		if err != nil {
			return err
		}
		st.Parked++
		dl := DeadLetter{Error: lastErr, Attempts: attempts, At: time.Now().UTC(),
			RawValue: encodeRecord(nil, rec.Source, rec.CapturedAt, rec.Raw)}
		data, err := json.Marshal(dl)
		if err != nil {
			return err
		}
		return b.Put(seqKey(rec.Seq), data)
	})
}

// DeadLetters returns a sink's parked events in sequence order.
func (o *Outbox) DeadLetters(sink string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := o.viewTx(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(deadPrefix + sink))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			r, err := DecodeRecord(keySeq(k), dl.RawValue)
			if err != nil {
				return err
			}
			dl.Record = r
			out = append(out, dl)
			return nil
		})
	})
	return out, err
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

// deadLetterValue returns the sink's dead-letter bucket and the stored
// value for seq (nil when there is none).
func deadLetterValue(tx *bolt.Tx, sink string, seq uint64) (*bolt.Bucket, []byte) {
	b := tx.Bucket([]byte(deadPrefix + sink))
	if b == nil {
		return nil, nil
	}
	return b, b.Get(seqKey(seq))
}

// RetriedDeadLetter records the outcome of retrying the sink's dead letter
// seq by hand: with retryErr empty it succeeded and the dead letter is
// removed; otherwise the dead letter stays with retryErr as its last error
// and one more attempt. It reports false when there is no such dead letter.
func (o *Outbox) RetriedDeadLetter(sink string, seq uint64, retryErr string) (bool, error) {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	found := false
	err := o.updateTx(func(tx *bolt.Tx) error {
		b, v := deadLetterValue(tx, sink, seq)
		if v == nil {
			return nil
		}
		found = true
		if retryErr != "" {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return fmt.Errorf("dead letter %d: %w", seq, err)
			}
			dl.Error, dl.Attempts, dl.At = retryErr, dl.Attempts+1, time.Now().UTC()
			data, err := json.Marshal(dl)
			if err != nil {
				return err
			}
			return b.Put(seqKey(seq), data)
		}
		if err := b.Delete(seqKey(seq)); err != nil {
			return err
		}
		sinks := tx.Bucket(bucketSinks)
		var st SinkState
		if v := sinks.Get([]byte(sink)); v != nil {
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("cursor of sink %s is corrupt: %w", sink, err)
			}
		}
		st.Retried++
		st.UpdatedAt = time.Now().UTC()
		return putJSON(sinks, sink, st)
	})
	if err != nil {
		return false, fmt.Errorf("dead letter %d of sink %s: %w", seq, sink, err)
	}
	return found, nil
}

func (o *Outbox) update(sink string, seq uint64, fn func(*bolt.Tx, *SinkState) error) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	acked := o.cursorsLocked(true)
	o.mu.Unlock()

	var st SinkState
	var oldest uint64
	var newBytes int64
	deleted := false
	err := o.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSinks)
		if v := b.Get([]byte(sink)); v != nil {
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("cursor of sink %s is corrupt: %w", sink, err)
			}
		}
		if seq > st.Acked {
			st.Acked = seq
		}
		if err := fn(tx, &st); err != nil {
			return err
		}
		st.UpdatedAt = time.Now().UTC()
		if err := putJSON(b, sink, st); err != nil {
			return err
		}
		if _, ok := acked[sink]; ok {
			acked[sink] = st.Acked
		}
		var err error
		deleted, oldest, newBytes, err = o.retain(tx, acked)
		return err
	})
	if err != nil {
		return fmt.Errorf("ack sink %s at %d: %w", sink, seq, err)
	}
	o.mu.Lock()
	if _, ok := o.sinks[sink]; ok {
		o.sinks[sink] = st.Acked
	}
	o.retainedLocked(deleted, oldest, newBytes)
	o.mu.Unlock()
	return nil
}

// retainedLocked publishes what a committed retention pass deleted and wakes
// appends waiting for space.
func (o *Outbox) retainedLocked(deleted bool, oldest uint64, bytes int64) {
	if deleted {
		o.oldest, o.bytes = oldest, bytes
		o.broadcastLocked()
	}
}

// retain deletes events every registered sink has acknowledged.
func (o *Outbox) retain(tx *bolt.Tx, acked map[string]uint64) (bool, uint64, int64, error) {
	if o.opts.KeepAcked || len(acked) == 0 {
		return false, 0, 0, nil
	}
	upTo := ^uint64(0)
	for _, a := range acked {
		upTo = min(upTo, a)
	}
	events := tx.Bucket(bucketEvents)
	meta := tx.Bucket(bucketMeta)
	size := int64(keySeq(meta.Get(keyBytes)))
	c := events.Cursor()
	deleted := false
	// After a delete, Seek to the deleted key finds the next one directly.
	// First would walk every leaf this transaction emptied so far, which
	// makes deleting a large prefix quadratic.
	var key []byte
	k, v := c.First()
	for k != nil && keySeq(k) <= upTo {
		size -= int64(len(v) + 8)
		key = append(key[:0], k...)
		if err := c.Delete(); err != nil {
			return false, 0, 0, err
		}
		deleted = true
		k, v = c.Seek(key)
	}
	if !deleted {
		return false, 0, 0, nil
	}
	size = max(size, 0)
	var oldest uint64
	if k != nil {
		oldest = keySeq(k)
	}
	return true, oldest, size, meta.Put(keyBytes, seqKey(uint64(size)))
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

// SinkIDs returns the ids of registered sinks, sorted.
func (o *Outbox) SinkIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]string, 0, len(o.sinks))
	for id := range o.sinks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
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

// UnregisterSink stops a sink's cursor from holding retention (a disabled
// trigger, for example) and leaves its stored state alone: RegisterSink
// later resumes from it, or reports ErrBehindRetention from Read if its
// events were deleted meanwhile.
func (o *Outbox) UnregisterSink(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	delete(o.sinks, id)
	return nil
}

// RemoveSink unregisters a sink and deletes its cursor and dead letters (a
// deleted trigger, for example). The events only it was holding are deleted
// at once: when it held retention at the bound, capture is paused and the
// other sinks, having acked everything, would never ack again to free them.
func (o *Outbox) RemoveSink(id string) error {
	if err := o.UnregisterSink(id); err != nil {
		return err
	}
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	acked := o.cursorsLocked(true)
	o.mu.Unlock()
	var oldest uint64
	var newBytes int64
	deleted := false
	err := o.updateTx(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSinks).Delete([]byte(id)); err != nil {
			return err
		}
		if tx.Bucket([]byte(deadPrefix+id)) != nil {
			if err := tx.DeleteBucket([]byte(deadPrefix + id)); err != nil {
				return err
			}
		}
		var err error
		deleted, oldest, newBytes, err = o.retain(tx, acked)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove sink %s: %w", id, err)
	}
	o.mu.Lock()
	o.retainedLocked(deleted, oldest, newBytes)
	o.mu.Unlock()
	return nil
}

// holdKey prefixes holds among the cursors retention respects; sink ids
// never contain a NUL byte.
const holdKey = "\x00hold:"

// cursorsLocked copies what retention respects: the registered sinks'
// cursors and, with withHolds and no append waiting for space, the holds.
// Without registered sinks retention deletes nothing, holds or not.
func (o *Outbox) cursorsLocked(withHolds bool) map[string]uint64 {
	acked := make(map[string]uint64, len(o.sinks)+len(o.holds))
	if len(o.sinks) == 0 {
		return acked
	}
	for k, v := range o.sinks {
		acked[k] = v
	}
	if withHolds && o.paused == 0 {
		for k, v := range o.holds {
			acked[holdKey+k] = v
		}
	}
	return acked
}

// Hold keeps the events after seq from retention for reader id: a reader
// without a cursor, such as a live event subscription, which would
// otherwise find the events it is about to read deleted by fast sinks. A
// hold is never stored and never pauses capture: while an append waits for
// space, retention ignores every hold (the reader then finds its next
// events deleted: ErrBehindRetention). Calling Hold again moves it.
func (o *Outbox) Hold(id string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.holds[id] = seq
	}
}

// HoldLast holds after the last appended sequence and returns it, in one
// step: a reader starting "now" misses nothing.
func (o *Outbox) HoldLast(id string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.holds[id] = o.last
	}
	return o.last
}

// Release drops reader id's hold.
func (o *Outbox) Release(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.holds, id)
}

// retainWithoutHolds deletes what every registered sink acknowledged,
// whatever the holds say.
func (o *Outbox) retainWithoutHolds() error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	acked := o.cursorsLocked(false)
	o.mu.Unlock()
	if len(acked) == 0 {
		return nil
	}
	var oldest uint64
	var newBytes int64
	deleted := false
	err := o.updateTx(func(tx *bolt.Tx) error {
		var err error
		deleted, oldest, newBytes, err = o.retain(tx, acked)
		return err
	})
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	o.mu.Lock()
	o.retainedLocked(deleted, oldest, newBytes)
	o.mu.Unlock()
	return nil
}
