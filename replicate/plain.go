package replicate

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/godwit-dev/godwit/change"
)

// commitPlain applies ops to a target without transactions: one ordered
// bulk write per namespace, in which every change is its own single-document
// write, then the positions of the workers the ops belong to. Nothing marks
// the writes (a target without transactions has no change stream to echo
// them). A crash between the writes and the positions replays the changes;
// every write sets values (replace with upsert, $set/$unset, delete by key),
// so applying a document's changes again in order leaves the same end state.
func (s *Sink) commitPlain(ctx context.Context, ops []*op, stream bool) error {
	res := groupResult{marks: map[int]position{}}
	var order []change.Namespace
	models := map[change.Namespace][]mongo.WriteModel{}
	for _, o := range ops {
		if o.kind == opNone {
			res.skipped++
			continue
		}
		if _, ok := models[o.dst]; !ok {
			order = append(order, o.dst)
		}
		models[o.dst] = append(models[o.dst], o.model())
		res.applied++
	}
	for _, ns := range order {
		coll := s.target.Client.Database(ns.DB, majority).Collection(ns.Coll)
		if _, err := coll.BulkWrite(ctx, models[ns], ordered); err != nil {
			return fmt.Errorf("apply %d changes to %s on %s: %w", len(models[ns]), ns, s.target.Redacted,
				s.unsupported("these writes (replace with upsert, update, delete by document key)", err))
		}
	}
	for _, o := range ops {
		if o.ev != nil && o.ev.ClusterTime.After(res.lastEvent) {
			res.lastEvent = o.ev.ClusterTime
		}
		if stream && o.pos.after(res.marks[o.part]) {
			res.marks[o.part] = o.pos
		}
	}
	state := s.db(s.metadataDB).Collection(StateCollection)
	for w, p := range res.marks {
		if err := saveApplied(ctx, state, s.cfg.ID, w, s.cfg.Workers, p); err != nil {
			return fmt.Errorf("record applied position on %s: %w", s.target.Redacted, err)
		}
		s.marks[w] = p
	}
	s.note(res)
	return nil
}

// Capabilities returns what the target supports, as learned when the
// pipeline opened (zero with transactions: off).
func (s *Sink) Capabilities() Capabilities { return s.caps }
