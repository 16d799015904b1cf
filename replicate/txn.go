package replicate

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// WithOutbox gives the pipeline read access to the outbox it is delivered
// from. It then completes a source transaction that a Deliver batch cuts
// off (the runner's batch size, or its one-event batches after a failure)
// by reading the transaction's remaining events ahead, so that the whole
// transaction is one target transaction; and, unless WithStreamStart is
// given, the initial copy reads at or after the source's checkpoint.
func WithOutbox(ob *outbox.Outbox) Option {
	return func(s *Sink) {
		s.ob = ob
		if s.streamStart == nil {
			s.streamStart = StreamStart(ob, s.cfg.Source)
		}
	}
}

// txnTailWait bounds how long Deliver waits for the rest of a source
// transaction when the outbox ends inside it and the source's checkpoint
// does not show that the transaction is complete. Past it, the part at
// hand is applied on its own (docs/replicate.md).
var txnTailWait = 250 * time.Millisecond

// sameTxn reports whether an event continues the transaction segment cur:
// it is of the same source transaction, or (on a sharded source, where
// mongos interleaves the shards' events of one cluster time in
// resume-token order) of the same cluster time, which on a replica set
// only the events of one transaction share.
func sameTxn(cur *segment, ev *change.Event, tk string) bool {
	first := cur.ops[0].ev
	return cur.txn && (tk != "" && txnKey(first) == tk || ev.ClusterTime == first.ClusterTime)
}

// completeTxn appends to seg, the transaction segment that ends a batch
// whose last record is after, the events of the same transaction that
// follow in the outbox. The transaction is complete at the first event of
// another cluster time or a non-document change, or when the source's
// checkpoint passed the transaction's cluster time. Events read ahead are
// applied with the segment and skipped by position when their own batch
// is delivered.
func (s *Sink) completeTxn(ctx context.Context, seg *segment, after uint64) {
	ct := seg.ops[0].ev.ClusterTime
	deadline := time.Now().Add(txnTailWait)
	full := s.cfg.FullDocumentFallback == FallbackAlways || s.cfg.Bidirectional
	for {
		recs, err := s.ob.Read(after, 256, 8<<20)
		if err != nil {
			return
		}
		if len(recs) == 0 {
			if s.checkpointPast(ct) {
				return
			}
			wctx, cancel := context.WithDeadline(ctx, deadline)
			err := s.ob.Wait(wctx, after)
			cancel()
			if err != nil {
				s.log.Debug().Interface("cluster_time", ct).Msg("outbox ends inside a source transaction; applying the part at hand")
				return
			}
			continue
		}
		for _, r := range recs {
			after = r.Seq
			if r.Source != s.cfg.Source {
				continue
			}
			ev, err := change.Parse(r.Raw)
			if err != nil || ev.ClusterTime != ct || !change.IsDML(ev.OperationType) {
				return
			}
			if !s.keeps(ev) {
				continue
			}
			if at, ok := s.snapshots[ev.NS]; ok && !ev.ClusterTime.After(at) {
				continue
			}
			o, err := planDML(ev, s.mapper.Map(ev.NS), full)
			if err != nil {
				return // delivered with its own batch, which reports it
			}
			o.idx, o.seq = -1, r.Seq
			o.part = partition(o.dst, o.id, s.cfg.Workers)
			o.vers = Version{ClusterTime: ev.ClusterTime, Source: s.cfg.Source}
			seg.ops = append(seg.ops, o)
		}
	}
}

// checkpointPast reports whether the source's stored checkpoint is later
// than ct: capture has seen every event up to a later time.
func (s *Sink) checkpointPast(ct primitive.Timestamp) bool {
	st, _, err := s.ob.Source(s.cfg.Source)
	if err != nil {
		return false
	}
	t, ok := change.TokenTime(st.Token)
	return ok && t.After(ct)
}
