package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// WithStreamStart tells the pipeline where its source's change stream
// started: fn returns the cluster time of the source's stored resume token
// (or its start time), false while there is none. A copy from a real
// deployment then reads at a snapshot at or after it; otherwise, with
// lagging secondaries, the majority snapshot could lie before the stream's
// start and the writes in between would be in neither.
func WithStreamStart(fn func() (primitive.Timestamp, bool)) Option {
	return func(s *Sink) { s.streamStart = fn }
}

// StreamStart returns, for WithStreamStart, the cluster time of a source's
// checkpoint in ob: its stored resume token (on a first start, the token
// the stream opened with), or the start time an embedded source stored. A
// later checkpoint is a later bound, which only makes the copy read a
// newer snapshot: every event after the stream's start waits in the outbox.
func StreamStart(ob *outbox.Outbox, sourceID string) func() (primitive.Timestamp, bool) {
	return func() (primitive.Timestamp, bool) {
		st, _, err := ob.Source(sourceID)
		if err != nil {
			return primitive.Timestamp{}, false
		}
		if t, ok := change.TokenTime(st.Token); ok {
			return t, true
		}
		if st.StartAt != 0 {
			return primitive.Timestamp{T: uint32(st.StartAt >> 32), I: uint32(st.StartAt)}, true
		}
		return primitive.Timestamp{}, false
	}
}

// codeSnapshotTooOld is the server's SnapshotTooOld: the snapshot a read
// needs is older than the source keeps (minSnapshotHistoryWindowInSeconds).
const codeSnapshotTooOld = 239

// ErrSnapshotTooOld is returned (wrapped) by InitialSync when the source's
// snapshot history window is too short to read even one batch of a
// collection: raise minSnapshotHistoryWindowInSeconds on the source or lower
// copy_batch_size.
var ErrSnapshotTooOld = errors.New("the source's snapshot history window is too short for the copy")

// snapshotWait bounds how long a copy waits for the source's majority
// snapshot to reach the change stream's start.
var snapshotWait = 5 * time.Minute

var errSnapshotBehind = errors.New("snapshot before the stream's start")

// realSnapshotCopy reads a collection of a real deployment in _id order in
// snapshot sessions and hands it to fn in batches, with the cluster time of
// the copy's first snapshot.
//
// The first snapshot is at or after the change stream's start (it waits
// for the majority snapshot to pass it). When a snapshot expires during
// the copy (SnapshotTooOld: the copy took longer than the source's
// minSnapshotHistoryWindowInSeconds), the copy goes on after the last
// copied _id in a new snapshot. Documents copied later then reflect a later
// time than the first snapshot; the events between the two are applied on
// top of them, which converges like any replay of the stream.
func (s *Sink) realSnapshotCopy(ctx context.Context, source lungo.IClient, coll lungo.ICollection, fn func([]bson.Raw, primitive.Timestamp) error) (primitive.Timestamp, error) {
	var floor primitive.Timestamp
	if s.streamStart != nil {
		floor, _ = s.streamStart()
	}
	var first primitive.Timestamp
	var last bson.RawValue // _id of the last document handed to fn
	log := s.log.With().Str("ns", coll.Database().Name()+"."+coll.Name()).Logger()
	wait, deadline := 10*time.Millisecond, time.Now().Add(snapshotWait)
	for {
		filter := bson.D{}
		if last.Type != 0 {
			filter = bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: last}}}}
		}
		progressed := false
		var at primitive.Timestamp
		sorted := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(int32(s.cfg.CopyBatchSize))
		err := source.UseSessionWithOptions(ctx, options.Session().SetSnapshot(true), func(sc lungo.ISessionContext) error {
			cur, err := coll.Find(sc, filter, sorted)
			if err != nil {
				return err
			}
			t := snapshotTime(sc)
			if t == nil {
				_ = cur.Close(context.WithoutCancel(ctx))
				return errors.New("the server did not report the snapshot's cluster time")
			}
			if at = *t; first.IsZero() && at.Before(floor) {
				_ = cur.Close(context.WithoutCancel(ctx))
				return errSnapshotBehind
			}
			if first.IsZero() {
				first = at
			}
			return s.drain(sc, cur, first, func(batch []bson.Raw, at primitive.Timestamp) error {
				if err := fn(batch, at); err != nil {
					return err
				}
				id := batch[len(batch)-1].Lookup("_id")
				last = bson.RawValue{Type: id.Type, Value: append([]byte(nil), id.Value...)}
				progressed = true
				return nil
			})
		})
		switch {
		case err == nil:
			return first, nil
		case errors.Is(err, errSnapshotBehind):
			if time.Now().After(deadline) {
				return first, fmt.Errorf("the source's majority-committed snapshot (%v) stays before its change stream's start (%v) for %v: "+
					"secondaries are lagging or down, and a copy read now would miss the writes in between; fix replication on the source and restart godwit",
					at, floor, snapshotWait)
			}
			log.Debug().Interface("snapshot", at).Interface("stream_start", floor).Msg("snapshot before the change stream's start; waiting")
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return first, ctx.Err()
			}
			wait = min(2*wait, time.Second)
		case isSnapshotTooOld(err) && progressed:
			log.Warn().Str("after_id", idString(last)).
				Msg("snapshot expired during the copy (SnapshotTooOld); continuing after the last copied _id in a new snapshot")
		case isSnapshotTooOld(err):
			return first, fmt.Errorf("%w: no batch of %d documents could be read within the source's minSnapshotHistoryWindowInSeconds "+
				"(default 300 s): raise it on the source (setParameter) or lower copy_batch_size, then restart godwit (%v)",
				ErrSnapshotTooOld, s.cfg.CopyBatchSize, err)
		default:
			return first, err
		}
	}
}

func isSnapshotTooOld(err error) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(codeSnapshotTooOld)
}
