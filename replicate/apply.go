package replicate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readconcern"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/sink"
)

// Writes outside transactions (DDL, state) use majority write concern on a
// real deployment; the embedded engine ignores it. Writes inside a
// transaction take the transaction's.
var (
	majority   = options.Database().SetWriteConcern(writeconcern.Majority())
	txnOptions = options.Transaction().SetWriteConcern(writeconcern.Majority()).SetReadConcern(readconcern.Snapshot())
	ordered    = options.BulkWrite().SetOrdered(true)
	unordered  = options.BulkWrite().SetOrdered(false)
)

// How long a two-way pipeline waits for the target's capture to observe the
// target's latest writes: before its transaction (the embedded engine's
// write lock is not held yet) and inside it (the lock is held, so user
// writes to the target wait too).
const (
	fenceWait      = 30 * time.Second
	fenceWaitInTxn = 2 * time.Second
)

// groupResult is what one committed group did.
type groupResult struct {
	applied   uint64
	skipped   uint64
	conflicts []Conflict
	lastEvent primitive.Timestamp
	marks     map[int]position
}

func (s *Sink) db(name string) lungo.IDatabase { return s.target.Client.Database(name, majority) }

// targetOutage carries an error of a transaction's callback out of the
// driver's WithTransaction without its labels: the driver retries a
// callback whose error says TransientTransactionError (as a network error
// inside a transaction does) for up to two minutes, during which an
// unreachable target is neither logged nor shown in status.
type targetOutage struct{ err error }

func (o targetOutage) Error() string { return o.err.Error() }

// outage returns err as a targetOutage when it says the target cannot be
// reached and the target does not answer a ping: the caller then reports
// the outage and waits for the target itself (runSegmentWaiting). A target
// that answers lets the driver retry as usual (a connection dropped once).
func (s *Sink) outage(ctx context.Context, err error) error {
	if !unreachable(err) {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if s.target.Client.Ping(pctx, nil) == nil {
		return err
	}
	return targetOutage{err}
}

// commit applies ops in one target transaction that begins with an origin
// marker and ends by deleting it. With stream set, the same transaction
// moves the applied position of every worker the ops belong to.
func (s *Sink) commit(ctx context.Context, ops []*op, stream bool) error {
	if !s.txn {
		return s.commitPlain(ctx, ops, stream)
	}
	// Wait for the target's capture before the transaction takes the
	// embedded engine's write lock, so that user writes to the target are
	// held up as briefly as possible by the check inside.
	if s.cfg.Bidirectional && s.target.Engine != nil {
		if err := s.peer.Echo.waitSeen(ctx, oplogEnd(s.target.Engine), fenceWait); err != nil {
			return err
		}
	}
	var res groupResult
	err := s.target.Client.UseSession(ctx, func(sc lungo.ISessionContext) error {
		_, err := sc.WithTransaction(sc, func(tc lungo.ISessionContext) (any, error) {
			// A real server may run the callback again after a transient
			// error: start from scratch every time.
			res = groupResult{marks: map[int]position{}}
			return nil, s.outage(ctx, s.group(ctx, tc, ops, stream, &res))
		}, txnOptions)
		var o targetOutage
		if errors.As(err, &o) {
			err = o.err
		}
		return err
	})
	var um *unmatchedError
	if errors.As(err, &um) {
		// Nothing of the group was committed: apply it again with the
		// post-images of its updates, or fail saying why.
		if again, ok := s.withPostImages(ops, um); ok {
			return s.commit(ctx, again, stream)
		}
		return sink.Permanent(fmt.Errorf("apply %d changes to %s: %w", len(ops), s.target.Redacted, err))
	}
	if err != nil {
		return fmt.Errorf("apply %d changes to %s: %w", len(ops), s.target.Redacted, err)
	}
	for w, p := range res.marks {
		s.marks[w] = p
	}
	s.note(res)
	return nil
}

func (s *Sink) group(ctx context.Context, tc lungo.ISessionContext, ops []*op, stream bool, res *groupResult) error {
	meta := s.target.Client.Database(s.metadataDB)
	markers := meta.Collection(MarkersCollection)
	mid := primitive.NewObjectID()
	if err := insertMarker(tc, markers, bson.D{
		{Key: "_id", Value: mid}, {Key: "kind", Value: markerDML}, {Key: "pipeline", Value: s.cfg.ID},
		{Key: "source", Value: s.cfg.Source}, {Key: "n", Value: int32(len(ops))}, {Key: "at", Value: time.Now().UTC()},
	}); err != nil {
		return fmt.Errorf("write origin marker: %w", err)
	}

	write := ops
	if s.cfg.Bidirectional {
		var err error
		if write, err = s.resolve(ctx, tc, ops, res); err != nil {
			return err
		}
	}

	// One ordered bulk write per namespace: documents of different
	// namespaces never depend on each other's order.
	var order []change.Namespace
	models := map[change.Namespace][]mongo.WriteModel{}
	var versions []mongo.WriteModel
	matches := map[change.Namespace]int64{} // updates and replaces: each matches or upserts one document
	for _, o := range write {
		if o.kind == opNone {
			res.skipped++
			continue
		}
		if _, ok := models[o.dst]; !ok {
			order = append(order, o.dst)
		}
		if o.kind != opDelete {
			matches[o.dst]++
		}
		models[o.dst] = append(models[o.dst], o.model())
		res.applied++
		if s.cfg.Bidirectional {
			vid := pendingKey(o.dst, o.id)
			versions = append(versions, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: vid}}).
				SetReplacement(bson.D{{Key: "_id", Value: vid}, {Key: "v", Value: o.vers}}).SetUpsert(true))
		}
	}
	for _, ns := range order {
		coll := s.target.Client.Database(ns.DB).Collection(ns.Coll)
		r, err := coll.BulkWrite(tc, models[ns], ordered)
		if err != nil {
			return fmt.Errorf("write %d changes to %s: %w", len(models[ns]), ns, err)
		}
		if r != nil && r.MatchedCount+r.UpsertedCount < matches[ns] {
			return &unmatchedError{ns: ns, n: matches[ns] - r.MatchedCount - r.UpsertedCount}
		}
	}
	if len(versions) > 0 {
		if _, err := meta.Collection(VersionsCollection).BulkWrite(tc, versions, unordered); err != nil {
			return fmt.Errorf("record document versions: %w", err)
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
	state := meta.Collection(StateCollection)
	for w, p := range res.marks {
		if err := saveApplied(tc, state, s.cfg.ID, w, s.cfg.Workers, p); err != nil {
			return fmt.Errorf("record applied position: %w", err)
		}
	}
	if _, err := markers.DeleteOne(tc, bson.D{{Key: "_id", Value: mid}}); err != nil {
		return fmt.Errorf("close origin marker: %w", err)
	}
	return nil
}

// resolve applies the two-way conflict rule (last writer wins, see
// docs/replicate.md) inside the group's transaction: it returns the ops that
// win against the version of the document's current state on the target.
func (s *Sink) resolve(ctx context.Context, tc lungo.ISessionContext, ops []*op, res *groupResult) ([]*op, error) {
	// Every write the target committed before this transaction must have
	// been observed by its capture: the unobserved ones are local writes
	// whose versions nobody knows yet.
	if e := s.target.Engine; e != nil {
		// The transaction holds the engine's write lock: nothing commits
		// between here and our commit.
		if err := s.peer.Echo.waitSeen(ctx, oplogEnd(e), fenceWaitInTxn); err != nil {
			return nil, err
		}
	} else if err := s.fence(ctx); err != nil {
		// On a real server the transaction's snapshot was taken by the
		// marker insert; the fence commits after it, and a user write to
		// one of our documents after the snapshot makes our commit fail
		// with a write conflict (retried).
		return nil, err
	}
	ids := make(bson.A, 0, len(ops))
	keys := make([]string, 0, len(ops))
	seen := map[string]bool{}
	for _, o := range ops {
		k := pendingKey(o.dst, o.id)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
			ids = append(ids, k)
		}
	}
	cur := map[string]Version{}
	c, err := s.target.Client.Database(s.metadataDB).Collection(VersionsCollection).
		Find(tc, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, fmt.Errorf("read document versions: %w", err)
	}
	for c.Next(tc) {
		var d struct {
			ID string  `bson:"_id"`
			V  Version `bson:"v"`
		}
		if err := c.Decode(&d); err != nil {
			return nil, fmt.Errorf("read document versions: %w", err)
		}
		cur[d.ID] = d.V
	}
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("read document versions: %w", err)
	}
	_ = c.Close(tc)
	for k, p := range s.peer.Echo.pendingFor(keys) {
		v := Version{ClusterTime: p.ts, Source: s.peer.SourceID}
		if cur[k].less(v) {
			cur[k] = v
		}
	}
	out := make([]*op, 0, len(ops))
	for _, o := range ops {
		k := pendingKey(o.dst, o.id)
		c := cur[k]
		if !c.less(o.vers) {
			if c.Source != o.vers.Source {
				res.conflicts = append(res.conflicts, Conflict{Pipeline: s.cfg.ID, Namespace: o.dst, ID: o.id,
					Incoming: o.vers, Current: c, Operation: o.opName()})
			} else {
				res.skipped++ // a replay: this source's same or later write is there
			}
			continue
		}
		cur[k] = o.vers
		out = append(out, o)
	}
	return out, nil
}

func (o *op) opName() string {
	if o.ev != nil {
		return o.ev.OperationType
	}
	return "copy"
}

// fence makes the target's capture observe a write committed now (real
// deployments, whose idle change streams produce no events).
func (s *Sink) fence(ctx context.Context) error {
	n := s.fenceSeq.Add(1)
	id := "fence:" + s.cfg.ID
	_, err := s.db(s.metadataDB).Collection(MarkersCollection).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "_id", Value: id}, {Key: "kind", Value: markerFence}, {Key: "pipeline", Value: s.cfg.ID}, {Key: "n", Value: n}},
		replaceUpsert)
	if err != nil {
		return fmt.Errorf("write fence: %w", err)
	}
	return s.peer.Echo.waitFence(ctx, id, n, fenceWait)
}

// oplogEnd returns the cluster time of the embedded engine's last committed
// oplog entry.
func oplogEnd(e *lungo.Engine) primitive.Timestamp {
	ns := e.Catalog().Namespaces[lungo.Oplog]
	if ns == nil || ns.Documents.Len() == 0 {
		return primitive.Timestamp{}
	}
	ts, _ := bsonkit.Get(ns.Documents.List()[ns.Documents.Len()-1], "clusterTime").(primitive.Timestamp)
	return ts
}

func (v Version) less(w Version) bool {
	if v.ClusterTime != w.ClusterTime {
		return w.ClusterTime.After(v.ClusterTime)
	}
	return v.Source < w.Source
}

// flushLocal stores the versions of the target's local writes that its
// capture observed, so that the filter can forget them; it runs before
// Deliver returns, so no local write leaves the outbox (retention) before
// its version is durable.
func (s *Sink) flushLocal(ctx context.Context) error {
	if s.peer == nil || s.peer.Echo == nil || !s.cfg.Bidirectional {
		return nil
	}
	snap := s.peer.Echo.pendingSnapshot(s.writesTo)
	if len(snap) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, 0, len(snap))
	for _, p := range snap {
		vid := pendingKey(p.ns, p.id)
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: vid}}).
			SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "v", Value: Version{ClusterTime: p.ts, Source: s.peer.SourceID}}}}}).
			SetUpsert(true))
	}
	if _, err := s.db(s.metadataDB).Collection(VersionsCollection).BulkWrite(ctx, models, unordered); err != nil {
		return fmt.Errorf("record versions of the target's own writes: %w", err)
	}
	s.peer.Echo.forget(snap)
	return nil
}

// isDuplicateKey reports a unique-index violation on either kind of target.
func isDuplicateKey(err error) bool {
	return mongo.IsDuplicateKeyError(err) || lungo.IsUniquenessError(err) ||
		err != nil && strings.Contains(err.Error(), "E11000")
}
