package outbox

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RegisterSink makes a sink's cursor hold retention and returns its state.
// A new sink starts at the current oldest retained event: it sees everything
// still in the outbox.
func (o *Outbox) RegisterSink(id CursorID) (SinkState, error) {
	if err := id.Validate(); err != nil {
		return SinkState{}, fmt.Errorf("register sink: %w", err)
	}
	o.lockMeta()
	defer o.unlockMeta()
	var st SinkState
	err := o.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSinks)
		if v := b.Get(id.key()); v != nil {
			return json.Unmarshal(v, &st)
		}
		// The watermark moves under metaMu only; an append committed
		// meanwhile comes after it.
		st.Acked = min(o.from-1, o.LastSeq())
		st.UpdatedAt = time.Now().UTC()
		return putJSON(b, id.String(), st)
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
func (o *Outbox) Sink(id CursorID) (SinkState, bool, error) {
	var st SinkState
	var ok bool
	err := o.viewTx(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSinks).Get(id.key())
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

// Sinks returns the stored state of every cursor, by key
// (CursorID.String: a configured sink's id, "trigger:<id>", "sub:<name>");
// ParseCursorID tells the kind and name of a key.
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
func (o *Outbox) Ack(sink CursorID, seq uint64, delivered uint64) error {
	return o.update(sink, seq, func(tx *bolt.Tx, st *SinkState) error {
		st.Delivered += delivered
		return nil
	})
}

func (o *Outbox) update(sink CursorID, seq uint64, fn func(*bolt.Tx, *SinkState) error) error {
	if err := sink.Validate(); err != nil {
		return fmt.Errorf("ack sink %s at %d: %w", sink, seq, err)
	}
	var st SinkState
	err := o.retaining(true, func(tx *bolt.Tx, acked map[CursorID]uint64) error {
		b := tx.Bucket(bucketSinks)
		if v := b.Get(sink.key()); v != nil {
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
		if err := putJSON(b, sink.String(), st); err != nil {
			return err
		}
		if _, ok := acked[sink]; ok {
			acked[sink] = st.Acked
		}
		return nil
	}, func() {
		if _, ok := o.sinks[sink]; ok {
			o.sinks[sink] = st.Acked
		}
	})
	if err != nil {
		return fmt.Errorf("ack sink %s at %d: %w", sink, seq, err)
	}
	return nil
}

// retaining is the one retention path. It runs fn (when not nil) in a write
// transaction of the cursor file and, in the same transaction, moves the
// retention watermark past the prefix every registered cursor acknowledged
// (and every hold, when withHolds); fn may move a cursor in acked. After the
// commit, publish (when not nil) runs under o.mu together with the
// publication of what retention released, and the segments wholly before
// the watermark are deleted: retention costs one small write however much
// it releases, and returns space a whole file at a time.
func (o *Outbox) retaining(withHolds bool, fn func(tx *bolt.Tx, acked map[CursorID]uint64) error, publish func()) error {
	doomed, err := o.retainingLocked(withHolds, fn, publish)
	if err != nil {
		return err
	}
	// Outside metaMu: closing waits for the segment's readers, and acks
	// need not wait with them.
	return o.removeSegments(doomed)
}

func (o *Outbox) retainingLocked(withHolds bool, fn func(tx *bolt.Tx, acked map[CursorID]uint64) error, publish func()) ([]*segment, error) {
	o.lockMeta()
	defer o.unlockMeta()
	o.mu.Lock()
	acked := o.cursorsLocked(withHolds)
	last, segs := o.last, o.segs
	o.mu.Unlock()
	if fn == nil && len(acked) == 0 {
		return nil, nil // nothing to write, nothing retention may delete
	}
	var from uint64
	var freed int64
	err := o.db.Update(func(tx *bolt.Tx) error {
		if fn != nil {
			if err := fn(tx, acked); err != nil {
				return err
			}
		}
		var err error
		from, freed, err = o.retain(tx, acked, last, segs)
		return err
	})
	if err != nil {
		return nil, closedErr(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// What the commit changed is published in the step that wakes
	// WaitUntil.
	o.committedLocked()
	if publish != nil {
		publish()
	}
	if from == o.from {
		return nil, nil
	}
	o.from, o.freed = from, freed
	o.publishRetentionLocked()
	o.broadcastLocked()
	return o.doomedLocked(), nil
}

// retain moves the watermark past the events every registered cursor has
// acknowledged, up to last, and returns it with the freed-bytes counter
// (under metaMu).
func (o *Outbox) retain(tx *bolt.Tx, acked map[CursorID]uint64, last uint64, segs []*segment) (uint64, int64, error) {
	if o.opts.KeepAcked || len(acked) == 0 {
		return o.from, o.freed, nil
	}
	upTo := last
	for _, a := range acked {
		upTo = min(upTo, a)
	}
	if upTo < o.from {
		return o.from, o.freed, nil
	}
	size, err := sizeOf(segs, o.from, upTo)
	if err != nil {
		return 0, 0, err
	}
	from, freed := upTo+1, o.freed+size
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(keyFrom, seqKey(from)); err != nil {
		return 0, 0, err
	}
	return from, freed, meta.Put(keyFreed, seqKey(uint64(freed)))
}

// sizeOf adds up the stored size of the records first..last (under
// metaMu: only retention removes segments). It reads the records' lengths
// only, from pages a sink has just read.
func sizeOf(segs []*segment, first, last uint64) (int64, error) {
	var size int64
	for i := segmentFor(segs, first); i < len(segs) && segs[i].start <= last; i++ {
		err := segs[i].view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.Seek(seqKey(first)); k != nil && keySeq(k) <= last; k, v = c.Next() {
				size += int64(len(v) + 8)
			}
			return nil
		})
		if err != nil {
			return 0, closedErr(err)
		}
	}
	return size, nil
}

// SinkIDs returns the ids of registered cursors, sorted by key.
func (o *Outbox) SinkIDs() []CursorID {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]CursorID, 0, len(o.sinks))
	for id := range o.sinks {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b CursorID) int { return strings.Compare(a.String(), b.String()) })
	return ids
}

// UnregisterSink stops a sink's cursor from holding retention (a disabled
// trigger, for example) and leaves its stored state alone: RegisterSink
// later resumes from it, or reports ErrBehindRetention from Read if its
// events were deleted meanwhile.
func (o *Outbox) UnregisterSink(id CursorID) error {
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
func (o *Outbox) RemoveSink(id CursorID) error {
	if err := o.UnregisterSink(id); err != nil {
		return err
	}
	err := o.retaining(true, func(tx *bolt.Tx, _ map[CursorID]uint64) error {
		if err := tx.Bucket(bucketSinks).Delete(id.key()); err != nil {
			return err
		}
		if tx.Bucket(deadBucket(id)) != nil {
			return tx.DeleteBucket(deadBucket(id))
		}
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("remove sink %s: %w", id, err)
	}
	return nil
}

// cursorsLocked copies what retention respects: the registered sinks'
// cursors and, with withHolds and no append waiting for space, the holds.
// Without registered sinks retention deletes nothing, holds or not.
func (o *Outbox) cursorsLocked(withHolds bool) map[CursorID]uint64 {
	acked := make(map[CursorID]uint64, len(o.sinks)+len(o.holds))
	if len(o.sinks) == 0 {
		return acked
	}
	for k, v := range o.sinks {
		acked[k] = v
	}
	if withHolds && o.paused == 0 {
		for k, v := range o.holds {
			acked[holdCursor(k)] = v
		}
	}
	return acked
}

// retainWithoutHolds deletes what every registered sink acknowledged,
// whatever the holds say.
func (o *Outbox) retainWithoutHolds() error {
	if err := o.retaining(false, nil, nil); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	return nil
}
