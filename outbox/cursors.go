package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

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

func (o *Outbox) update(sink string, seq uint64, fn func(*bolt.Tx, *SinkState) error) error {
	var st SinkState
	err := o.retaining(true, func(tx *bolt.Tx, acked map[string]uint64) error {
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
// transaction and, in the same transaction, deletes the prefix every
// registered cursor acknowledged (and every hold, when withHolds); fn may
// move a cursor in acked. After the commit, publish (when not nil) runs
// under o.mu together with the publication of what retention deleted.
func (o *Outbox) retaining(withHolds bool, fn func(tx *bolt.Tx, acked map[string]uint64) error, publish func()) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	acked := o.cursorsLocked(withHolds)
	o.mu.Unlock()
	if fn == nil && len(acked) == 0 {
		return nil // nothing to write, nothing retention may delete
	}
	var oldest uint64
	var newBytes int64
	deleted := false
	err := o.updateTx(func(tx *bolt.Tx) error {
		if fn != nil {
			if err := fn(tx, acked); err != nil {
				return err
			}
		}
		var err error
		deleted, oldest, newBytes, err = o.retain(tx, acked)
		return err
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	if publish != nil {
		publish()
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
	err := o.retaining(true, func(tx *bolt.Tx, _ map[string]uint64) error {
		if err := tx.Bucket(bucketSinks).Delete([]byte(id)); err != nil {
			return err
		}
		if tx.Bucket([]byte(deadPrefix+id)) != nil {
			return tx.DeleteBucket([]byte(deadPrefix + id))
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

// retainWithoutHolds deletes what every registered sink acknowledged,
// whatever the holds say.
func (o *Outbox) retainWithoutHolds() error {
	if err := o.retaining(false, nil, nil); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	return nil
}
