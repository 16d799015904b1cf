package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Source returns the stored state of a source; ok is false when none exists.
func (o *Outbox) Source(id string) (SourceState, bool, error) {
	var st SourceState
	var ok bool
	err := o.viewSources(func(tx *bolt.Tx) error {
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
	err := o.viewSources(func(tx *bolt.Tx) error {
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
	if o.isClosed() {
		return ErrClosed
	}
	return o.updateSegment(o.active(), func(tx *bolt.Tx) error {
		st, err := getSource(tx, id)
		if err != nil {
			return err
		}
		fn(&st)
		st.UpdatedAt = time.Now().UTC()
		return putJSON(tx.Bucket(bucketSources), id, st)
	})
}

// viewSources reads the sources' state, which the active segment holds.
func (o *Outbox) viewSources(fn func(*bolt.Tx) error) error {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		s := o.activeLocked()
		o.mu.Unlock()
		if err := o.viewSegment(s, fn); !errors.Is(err, errSegmentGone) {
			return err
		}
	}
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
