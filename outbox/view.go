package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// View is one consistent read of the outbox: every method answers from the
// same committed state. A reader that needs a source's state or a sink's
// cursor together with the last sequence must take both from one View: two
// separate reads can straddle an Append (which commits the source's state
// before it publishes the new last sequence) and wait for an event that
// already exists.
//
// A View is valid only inside the function it was passed to.
type View struct {
	meta *bolt.Tx // cursors and the retention watermark
	seg  *bolt.Tx // the active segment: last sequence and sources
}

// Last is the sequence of the last appended event (0 when none ever).
func (v View) Last() uint64 { return v.seg.Bucket(bucketEvents).Sequence() }

// Oldest is the oldest retained sequence (0 when the outbox is empty).
func (v View) Oldest() uint64 {
	// The cursor file is read first, so the watermark is never past the
	// segment's last sequence + 1.
	if from := keySeq(v.meta.Bucket(bucketMeta).Get(keyFrom)); from <= v.Last() {
		return from
	}
	return 0
}

// Source returns the stored state of a source; ok is false when none exists.
func (v View) Source(id string) (SourceState, bool, error) {
	var st SourceState
	data := v.seg.Bucket(bucketSources).Get([]byte(id))
	if data == nil {
		return st, false, nil
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, true, fmt.Errorf("read state of source %s: %w", id, err)
	}
	return st, true, nil
}

// Sink returns the stored state of one sink cursor; ok is false when none
// exists.
func (v View) Sink(id CursorID) (SinkState, bool, error) {
	var st SinkState
	data := v.meta.Bucket(bucketSinks).Get(id.key())
	if data == nil {
		return st, false, nil
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, true, fmt.Errorf("read cursor of sink %s: %w", id, err)
	}
	return st, true, nil
}

// View calls fn with one consistent read of the outbox.
//
// LastSeq after View returns is at least the View's Last: a View can run
// between an append's commit and the appender publishing its new last
// sequence, and a caller that saw the commit in the View (a source's
// Captured count, say) and then asks LastSeq must not get an older answer.
func (o *Outbox) View(fn func(View) error) error {
	for {
		var seen uint64
		err := o.viewTx(func(meta *bolt.Tx) error {
			// The active segment is taken after the cursor file's
			// snapshot, so it is at least as new.
			return o.viewSources(func(seg *bolt.Tx) error {
				v := View{meta: meta, seg: seg}
				seen = v.Last()
				return fn(v)
			})
		})
		if !errors.Is(err, errSegmentGone) {
			o.sawCommitted(seen)
			return err
		}
	}
}

// sawCommitted publishes a last sequence a read saw committed, if the
// appender has not yet: it is committed, so it is the outbox's last.
func (o *Outbox) sawCommitted(last uint64) {
	o.mu.Lock()
	if last > o.last {
		o.last = last
	}
	o.mu.Unlock()
}

// WaitUntil calls cond with a consistent View now and again after every
// committed change (appends, source state, cursors, retention) until cond
// reports true or an error, the outbox closes (ErrClosed) or ctx ends.
//
// No change is missed: the wake-up channel is taken before each read, and
// every commit closes it after the commit is visible, so a commit is either
// seen by the read or wakes the next one.
func (o *Outbox) WaitUntil(ctx context.Context, cond func(View) (bool, error)) error {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		ch := o.committed
		o.mu.Unlock()
		var done bool
		err := o.View(func(v View) error {
			var err error
			done, err = cond(v)
			return err
		})
		if err != nil || done {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
