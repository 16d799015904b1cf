package replicate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/progress"
)

// InitialSync copies the pipeline's namespaces from source to the target,
// unless a copy finished before or initial_sync is false. Call it after the
// source's change stream is open (capture.Source.Ready) and before the
// sink's runner starts: the runner's cursor then holds every event since the
// copy began.
//
// Each collection is read at one point in time, whose cluster time is
// stored; when the stream is applied, events up to it are skipped and the
// later ones apply to an exact copy. A restarted sync drops and copies again
// the collections it had not finished; finished ones stay.
//
// While the source or the target cannot be reached (network, no server
// selectable), it waits for them (capped exponential backoff) and goes on
// where the copy stopped, as a restarted sync does, until ctx ends.
func (s *Sink) InitialSync(ctx context.Context, source *mongodb.Conn) error {
	answered := 0
	for attempt := 1; ; attempt++ {
		err := s.initialSync(ctx, source)
		if !unreachable(err) || ctx.Err() != nil {
			return err
		}
		// Both answering a ping means the outage just ended, or a server
		// drops this very request for a reason of its own (FerretDB closes
		// the connection on a BSON type it does not know): a few tries
		// tell which.
		if s.reachable(ctx, source) {
			if answered++; answered >= maxAnsweredRetries {
				return err
			}
		}
		s.set(func(x *Status) { x.LastError = "initial sync: a deployment is unreachable, retrying: " + err.Error() })
		s.log.Warn().Err(err).Int("attempt", attempt).Str("source", source.Redacted).Str("target", s.target.Redacted).
			Msg("initial sync: the source or the target is unreachable; retrying where the copy stopped")
		if !waitUnreachable(ctx, attempt) {
			return err
		}
	}
}

// maxAnsweredRetries bounds the initial sync's retries of a network error
// while both deployments answer pings.
const maxAnsweredRetries = 3

// reachable reports whether both deployments answer a ping.
func (s *Sink) reachable(ctx context.Context, source *mongodb.Conn) bool {
	for _, c := range []lungo.IClient{source.Client, s.target.Client} {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := c.Ping(pctx, nil)
		cancel()
		if err != nil {
			return false
		}
	}
	return true
}

func (s *Sink) initialSync(ctx context.Context, source *mongodb.Conn) error {
	if !s.cfg.initialSync() {
		s.set(func(x *Status) { x.Phase = PhaseStreaming })
		return nil
	}
	st, err := loadInitial(ctx, s.target.Client, s.metadataDB, s.cfg.ID)
	if err != nil {
		return err
	}
	if st != nil && st.Phase == phaseDone {
		s.useInitial(st)
		s.log.Info().Msg("initial sync finished earlier; streaming")
		return nil
	}
	if st == nil {
		if st, err = s.planCopy(ctx, source); err != nil {
			return err
		}
	} else {
		s.log.Info().Msg("resuming the initial sync: finished collections stay, unfinished ones are copied again")
	}
	s.useInitial(st)
	s.set(func(x *Status) { x.Phase = PhaseCopying })
	if s.progressOut != nil {
		cur := s.Status()
		s.meter = progress.New(s.progressOut, "initial sync "+s.cfg.ID, cur.Total, "documents", progress.WithStart(cur.Copied))
		defer s.meter.Finish()
	}
	start := time.Now()
	for pass := 0; ; pass++ {
		for i := range st.Namespaces {
			n := &st.Namespaces[i]
			if n.Done {
				continue
			}
			if err := s.copyCollection(ctx, source, st, n); err != nil {
				s.set(func(x *Status) { x.LastError = err.Error() })
				return err
			}
		}
		// Collections created, renamed or replaced during the copy.
		more, err := s.relist(ctx, source, st, pass)
		if err != nil {
			s.set(func(x *Status) { x.LastError = err.Error() })
			return err
		}
		if !more {
			break
		}
	}
	st.Phase, st.Finished = phaseDone, time.Now().UTC()
	if err := saveInitial(ctx, s.target.Client, s.metadataDB, st); err != nil {
		return err
	}
	s.useInitial(st)
	s.set(func(x *Status) { x.Phase, x.Namespace = PhaseStreaming, "" })
	s.log.Info().Int("collections", len(st.Namespaces)).Int64("documents", s.Status().Copied).
		Dur("took", time.Since(start)).Msg("initial sync finished; streaming")
	return nil
}

// planCopy lists the source namespaces to copy and checks that their
// targets are empty.
func (s *Sink) planCopy(ctx context.Context, source *mongodb.Conn) (*initialState, error) {
	st := &initialState{ID: initialID(s.cfg.ID), Phase: string(PhaseCopying), Started: time.Now().UTC()}
	dbs, err := source.Client.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("list source databases: %w", err)
	}
	slices.Sort(dbs)
	for _, db := range dbs {
		if !replicated(s.filter, change.Namespace{DB: db}) {
			continue
		}
		colls, err := source.Client.Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			return nil, fmt.Errorf("list collections of %s: %w", db, err)
		}
		slices.Sort(colls)
		for _, c := range colls {
			ns := change.Namespace{DB: db, Coll: c}
			if !replicated(s.filter, ns) {
				continue
			}
			dst := s.mapper.Map(ns)
			n, err := s.target.Client.Database(dst.DB).Collection(dst.Coll).CountDocuments(ctx, bson.D{})
			if err != nil {
				return nil, fmt.Errorf("count %s on the target: %w", dst, err)
			}
			if n > 0 {
				return nil, fmt.Errorf("%w: %s holds %d documents; drop it, map %s elsewhere, or set initial_sync: false", ErrNotEmpty, dst, n, ns)
			}
			total, err := source.Client.Database(db).Collection(c).EstimatedDocumentCount(ctx)
			if err != nil {
				return nil, fmt.Errorf("count %s: %w", ns, err)
			}
			st.Namespaces = append(st.Namespaces, copiedNS{Source: ns.String(), Target: dst.String(), Total: total})
			st.Total += total
		}
	}
	if err := saveInitial(ctx, s.target.Client, s.metadataDB, st); err != nil {
		return nil, err
	}
	s.log.Info().Int("collections", len(st.Namespaces)).Int64("documents", st.Total).Msg("initial sync started")
	return st, nil
}

func (s *Sink) copyCollection(ctx context.Context, source *mongodb.Conn, st *initialState, n *copiedNS) error {
	src, _ := parseMapNS(n.Source)
	dst, _ := parseMapNS(n.Target)
	log := s.log.With().Str("ns", n.Source).Str("target", n.Target).Logger()
	if n.Started {
		// Documents of an interrupted copy may since have been deleted on
		// the source: start over from an empty collection.
		if err := s.bracket(ctx, change.OpDrop, dst, func() error {
			return ignoreCodes(s.target.Client.Database(dst.DB, majority).Collection(dst.Coll).Drop(ctx), codeNamespaceNotFound)
		}); err != nil {
			return err
		}
		old := n.Copied
		s.set(func(x *Status) { x.Copied -= old })
		n.Copied = 0
	}
	n.Started = true
	err := saveInitial(ctx, s.target.Client, s.metadataDB, st)
	if err != nil {
		return err
	}
	s.set(func(x *Status) { x.Namespace = n.Source })

	coll := source.Client.Database(src.DB).Collection(src.Coll)
	if n.UUID, err = collectionUUID(ctx, source.Client, src); err != nil {
		return err
	}
	specs, err := listIndexes(ctx, coll)
	if err != nil {
		return err
	}
	if err := s.bracket(ctx, change.OpCreateIndexes, dst, func() error { return s.createIndexes(ctx, dst, specs, log) }); err != nil {
		return s.unsupported("the indexes of "+n.Source, err)
	}

	at, err := s.snapshotCopy(ctx, source, coll, func(batch []bson.Raw, at primitive.Timestamp) error {
		ops := make([]*op, 0, len(batch))
		for _, doc := range batch {
			id := doc.Lookup("_id")
			ops = append(ops, &op{idx: -1, src: src, dst: dst, id: id, kind: opUpsert, doc: doc,
				key:  bsonDoc("_id", id),
				vers: Version{ClusterTime: at, Source: s.cfg.Source}})
		}
		if err := s.commit(ctx, ops, false); err != nil {
			return err
		}
		n.Copied += int64(len(batch))
		s.set(func(x *Status) { x.Copied += int64(len(batch)) })
		if s.meter != nil {
			s.meter.Add(int64(len(batch)))
		}
		log.Debug().Int64("copied", n.Copied).Int64("of", n.Total).Msg("copy progress")
		s.logProgress(false)
		return saveInitial(ctx, s.target.Client, s.metadataDB, st)
	})
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", n.Source, n.Target, err)
	}
	n.Done, n.At = true, at
	if err := saveInitial(ctx, s.target.Client, s.metadataDB, st); err != nil {
		return err
	}
	s.snapshots[src] = at
	log.Info().Int64("documents", n.Copied).Msg("collection copied")
	return nil
}

// snapshotCopy reads a collection at one point in time, sorted by _id, and
// hands it to fn in batches together with that point's cluster time.
func (s *Sink) snapshotCopy(ctx context.Context, source *mongodb.Conn, coll lungo.ICollection, fn func([]bson.Raw, primitive.Timestamp) error) (primitive.Timestamp, error) {
	var at primitive.Timestamp
	var cur lungo.ICursor
	sorted := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(int32(s.cfg.CopyBatchSize))
	if source.Embedded {
		// A transaction holds the engine's write lock: the query sees
		// exactly the writes before the cluster time taken inside it, and
		// every later write gets a later one. The result is immutable.
		err := source.Client.UseSession(ctx, func(sc lungo.ISessionContext) error {
			_, err := sc.WithTransaction(sc, func(tc lungo.ISessionContext) (any, error) {
				at = bsonkit.Now()
				var err error
				cur, err = coll.Find(tc, bson.D{}, sorted)
				return nil, err
			})
			return err
		})
		if err != nil {
			return at, err
		}
		return at, s.drain(ctx, cur, at, fn)
	}
	return s.realSnapshotCopy(ctx, source.Client, coll, fn)
}

func snapshotTime(sc lungo.ISessionContext) *primitive.Timestamp {
	if x, ok := mongo.SessionFromContext(sc).(mongo.XSession); ok {
		if cs := x.ClientSession(); cs != nil {
			return cs.SnapshotTime
		}
	}
	return nil
}

func (s *Sink) drain(ctx context.Context, cur lungo.ICursor, at primitive.Timestamp, fn func([]bson.Raw, primitive.Timestamp) error) error {
	defer cur.Close(context.WithoutCancel(ctx))
	batch := make([]bson.Raw, 0, s.cfg.CopyBatchSize)
	for cur.Next(ctx) {
		var doc bson.Raw
		if err := cur.Decode(&doc); err != nil {
			return err
		}
		batch = append(batch, append(bson.Raw(nil), doc...))
		if len(batch) == s.cfg.CopyBatchSize {
			if err := fn(batch, at); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := cur.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return fn(batch, at)
	}
	return nil
}

func bsonDoc(key string, v bson.RawValue) bson.Raw {
	b, _ := bson.Marshal(bson.D{{Key: key, Value: v}})
	return b
}
