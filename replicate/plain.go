package replicate

import (
	"context"
	"errors"
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
	byNS := map[change.Namespace][]*op{}
	for _, o := range ops {
		if o.kind == opNone {
			res.skipped++
			continue
		}
		if _, ok := byNS[o.dst]; !ok {
			order = append(order, o.dst)
		}
		byNS[o.dst] = append(byNS[o.dst], o)
		res.applied++
	}
	for _, ns := range order {
		if err := s.writePlain(ctx, ns, byNS[ns]); err != nil {
			return fmt.Errorf("apply %d changes to %s on %s: %w", len(byNS[ns]), ns, s.target.Redacted,
				s.unsupported("these writes (insert, replace with upsert, update, delete by document key)", err))
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

// maxUpdatesPerCommand bounds the updates (and replaces) of one bulk write
// command in the plain mode. FerretDB v1 keeps a database connection for
// every update statement of a command until the command ends, from a pool
// of 100: a command of 100 updates, or a few large ones at once, wait for a
// connection forever. Workers (at most 4 by default) times this stays well
// below the pool.
const maxUpdatesPerCommand = 16

// writePlain writes ops to one namespace in ordered bulk writes, in order.
// A document expected to be new (an insert event, a document of the
// initial copy) is written as an insert, which a server like FerretDB
// commits many at a time where it commits every upsert on its own; when it
// is there already (a replay after a crash, a document the target had
// before), the server refuses it as a duplicate, and that one write is done
// again as a replace with upsert, followed by the rest: the result is that
// of the upsert. The embedded engine gets upserts only (its errors do not
// say which write of a bulk failed).
func (s *Sink) writePlain(ctx context.Context, ns change.Namespace, ops []*op) error {
	coll := s.target.Client.Database(ns.DB, majority).Collection(ns.Coll)
	models := make([]mongo.WriteModel, len(ops))
	inserted := make([]bool, len(ops))
	for i, o := range ops {
		models[i] = o.model()
		if s.target.Engine == nil && o.kind == opUpsert && (o.ev == nil || o.ev.OperationType == change.OpInsert) {
			models[i], inserted[i] = mongo.NewInsertOneModel().SetDocument(o.doc), true
		}
	}
	for start := 0; start < len(models); {
		end, updates := start, 0
		for ; end < len(models) && (updates < maxUpdatesPerCommand || inserted[end]); end++ {
			if !inserted[end] && ops[end].kind != opDelete {
				updates++
			}
		}
		_, err := coll.BulkWrite(ctx, models[start:end], ordered)
		if err == nil {
			start = end
			continue
		}
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) != 1 || bwe.WriteConcernError != nil {
			return err
		}
		i := start + bwe.WriteErrors[0].Index
		if i < start || i >= end || !inserted[i] || !isDuplicateKey(bwe) {
			return err
		}
		// Writes before i are done; i and the rest are not (ordered).
		models[i], inserted[i] = ops[i].model(), false
		start = i
	}
	return nil
}

// Capabilities returns what the target supports, as learned when the
// pipeline opened (zero with transactions: off).
func (s *Sink) Capabilities() Capabilities { return s.caps }
