package outbox

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DeadLetter is an event a sink gave up on.
type DeadLetter struct {
	Record   Record    `json:"-"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
	RawValue []byte    `json:"record"`
}

// Park moves rec to the sink's dead letters with the last error and acks it.
func (o *Outbox) Park(sink CursorID, rec Record, lastErr string, attempts int) error {
	return o.update(sink, rec.Seq, func(tx *bolt.Tx, st *SinkState) error {
		b, err := tx.CreateBucketIfNotExists(deadBucket(sink))
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
func (o *Outbox) DeadLetters(sink CursorID) ([]DeadLetter, error) {
	var out []DeadLetter
	err := o.viewTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(deadBucket(sink))
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

// deadBucket names the bucket of a cursor's dead letters: "dead/" and its
// key.
func deadBucket(sink CursorID) []byte { return []byte(deadPrefix + sink.String()) }

// deadLetterValue returns the sink's dead-letter bucket and the stored
// value for seq (nil when there is none).
func deadLetterValue(tx *bolt.Tx, sink CursorID, seq uint64) (*bolt.Bucket, []byte) {
	b := tx.Bucket(deadBucket(sink))
	if b == nil {
		return nil, nil
	}
	return b, b.Get(seqKey(seq))
}

// RetriedDeadLetter records the outcome of retrying the sink's dead letter
// seq by hand: with retryErr empty it succeeded and the dead letter is
// removed; otherwise the dead letter stays with retryErr as its last error
// and one more attempt. It reports false when there is no such dead letter.
func (o *Outbox) RetriedDeadLetter(sink CursorID, seq uint64, retryErr string) (bool, error) {
	o.lockMeta()
	defer o.unlockMeta()
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
		if v := sinks.Get(sink.key()); v != nil {
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("cursor of sink %s is corrupt: %w", sink, err)
			}
		}
		st.Retried++
		st.UpdatedAt = time.Now().UTC()
		return putJSON(sinks, sink.String(), st)
	})
	if err != nil {
		return false, fmt.Errorf("dead letter %d of sink %s: %w", seq, sink, err)
	}
	return found, nil
}
