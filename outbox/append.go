package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

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
	// counts is the one made while holding writeMu, which every increase of
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
	var last uint64
	arena := o.arena[:0]
	if int64(cap(arena)) < size {
		arena = make([]byte, 0, size)
	}
	if o.isClosed() {
		return 0, ErrClosed
	}
	if o.LastSeq() >= o.active().start && o.appended-o.activeBase >= o.opts.SegmentBytes {
		if err := o.rotate(); err != nil {
			return 0, fmt.Errorf("append %d events of source %s: %w", len(events), source, err)
		}
	}
	newBytes := o.appended + size
	err := o.active().update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		b.FillPercent = 1.0 // keys only ever grow: pack pages full
		seq := b.Sequence()
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
		if err := tx.Bucket(bucketMeta).Put(keyAppended, seqKey(uint64(newBytes))); err != nil {
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
		return 0, fmt.Errorf("append %d events of source %s: %w", len(events), source, closedErr(err))
	}
	// The new last sequence is published in the same step that wakes
	// WaitUntil: a waiter woken by this commit reads LastSeq at least as
	// new as what its View saw.
	o.mu.Lock()
	o.last = last
	o.appended = newBytes
	o.publishRetentionLocked()
	if len(events) > 0 {
		o.broadcastLocked()
	}
	o.committedLocked()
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
	for {
		out, err := o.read(after, max, maxBytes)
		if errors.Is(err, errSegmentGone) {
			continue // retention removed a segment under us: look again
		}
		return out, err
	}
}

// errSegmentGone reports that a read found a segment closed by retention.
var errSegmentGone = errors.New("segment removed by retention")

// snapshot returns the segments, the retention watermark and the last
// sequence, as of one moment.
func (o *Outbox) snapshot() ([]*segment, uint64, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, 0, 0, ErrClosed
	}
	return o.segs, o.from, o.last, nil
}

// segmentFor returns the index of the segment that holds seq.
func segmentFor(segs []*segment, seq uint64) int {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].start > seq })
	return max(i-1, 0)
}

// viewSegment runs a read transaction on a segment, telling a segment
// closed by retention (errSegmentGone) from a closed outbox.
func (o *Outbox) viewSegment(s *segment, fn func(*bolt.Tx) error) error {
	err := s.view(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		if o.isClosed() {
			return ErrClosed
		}
		return errSegmentGone
	}
	return err
}

func (o *Outbox) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

func (o *Outbox) read(after uint64, max int, maxBytes int) ([]Record, error) {
	// Like Source and View, Read sees every committed append, also one
	// whose last sequence is not published yet: a reader that saw a
	// source's checkpoint finds the events it covers.
	segs, from, last, err := o.snapshot()
	if err != nil {
		return nil, err
	}
	// Sequences are dense from the oldest retained event on.
	if after+1 < from {
		return nil, fmt.Errorf("%w: event %d was deleted after every registered sink acknowledged it", ErrBehindRetention, after+1)
	}
	var out []Record
	n := 0
	first := segmentFor(segs, after+1)
	for i := first; i < len(segs) && len(out) < max && (maxBytes <= 0 || n < maxBytes); i++ {
		err := o.viewSegment(segs[i], func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			k, v := c.Seek(seqKey(after + 1))
			if i == first && (k != nil && keySeq(k) != after+1 || k == nil && after < last) {
				return fmt.Errorf("%w: event %d is missing", ErrBehindRetention, after+1)
			}
			for ; k != nil && len(out) < max; k, v = c.Next() {
				r, err := DecodeRecord(keySeq(k), v)
				if err != nil {
					return err
				}
				out = append(out, r)
				after = r.Seq
				n += len(r.Raw)
				if maxBytes > 0 && n >= maxBytes {
					break
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Get returns the record with the given sequence.
func (o *Outbox) Get(seq uint64) (Record, bool, error) {
	for {
		r, ok, err := o.get(seq)
		if errors.Is(err, errSegmentGone) {
			continue
		}
		return r, ok, err
	}
}

func (o *Outbox) get(seq uint64) (Record, bool, error) {
	var r Record
	var ok bool
	segs, from, _, err := o.snapshot()
	if err != nil || seq < from {
		return r, false, err
	}
	err = o.viewSegment(segs[segmentFor(segs, seq)], func(tx *bolt.Tx) error {
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

// updateSegment runs a write transaction on a segment (under writeMu) and
// wakes WaitUntil after the commit.
func (o *Outbox) updateSegment(s *segment, fn func(*bolt.Tx) error) error {
	if err := s.update(fn); err != nil {
		return closedErr(err)
	}
	o.committedNow()
	return nil
}
