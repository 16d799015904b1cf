package replicate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
)

// Server error codes a DDL replay may meet: the work was already done.
const (
	codeNamespaceNotFound = 26
	codeIndexNotFound     = 27
	codeNamespaceExists   = 48
)

// applyDDL applies (or ignores, or halts on) a DDL event or an event of an
// unknown operation type. It runs between document-change segments, outside
// any transaction; afterwards every worker's position moves past it, so a
// replay skips it.
func (s *Sink) applyDDL(ctx context.Context, ev *change.Event, seq uint64) error {
	pos := eventPosition(ev)
	if !pos.zero() && s.appliedEverywhere(pos) {
		s.set(func(x *Status) { x.Skipped++ })
		return nil
	}
	op := ev.OperationType
	log := s.log.With().Str("op", op).Str("ns", ev.NS.String()).Uint64("seq", seq).Logger()
	if ev.To.DB != "" {
		log = log.With().Str("to", ev.To.String()).Logger()
	}
	applied := false
	switch {
	case s.cfg.DDL == DDLHalt:
		return s.haltWith(ctx, fmt.Sprintf("%s on %s (outbox event %d) with ddl: halt", op, ev.NS, seq))
	case s.cfg.DDL == DDLIgnore:
		log.Info().Msg("DDL not applied (ddl: ignore)")
	case !change.Known(op):
		log.Warn().Msg("unknown operation type: not applied (set ddl: halt to stop on such events)")
	default:
		if err := s.ddl(ctx, ev, log); err != nil {
			return s.unsupported(op+" of "+s.mapper.Map(ev.NS).String(), err)
		}
		applied = true
	}
	s.set(func(x *Status) {
		if applied {
			x.Applied++
		} else {
			x.Skipped++
		}
	})
	return s.markAll(ctx, pos)
}

func (s *Sink) appliedEverywhere(pos position) bool {
	for _, m := range s.marks {
		if pos.after(m) {
			return false
		}
	}
	return true
}

// markAll moves every worker's position to pos: the segments before a DDL
// are applied, and the DDL is.
func (s *Sink) markAll(ctx context.Context, pos position) error {
	state := s.db(s.metadataDB).Collection(StateCollection)
	for w := range s.marks {
		if !pos.after(s.marks[w]) {
			continue
		}
		if err := saveApplied(ctx, state, s.cfg.ID, w, s.cfg.Workers, pos); err != nil {
			return fmt.Errorf("record applied position: %w", err)
		}
		s.marks[w] = pos
	}
	return nil
}

func (s *Sink) ddl(ctx context.Context, ev *change.Event, log zerolog.Logger) error {
	dst := s.mapper.Map(ev.NS)
	desc, _ := ev.Raw.Lookup("operationDescription").DocumentOK()
	switch ev.OperationType {
	case change.OpDrop:
		err := s.bracket(ctx, change.OpDrop, dst, func() error {
			return ignoreCodes(s.target.Client.Database(dst.DB, majority).Collection(dst.Coll).Drop(ctx), codeNamespaceNotFound)
		})
		if err == nil {
			log.Info().Str("target", dst.String()).Msg("collection dropped")
		}
		return err
	case change.OpDropDatabase:
		// The server sends a drop for every collection of the database
		// first, and the target database may hold collections this
		// pipeline does not own.
		log.Info().Msg("database dropped on the source; its replicated collections were dropped one by one")
		return nil
	case change.OpCreate:
		return s.bracket(ctx, change.OpCreate, dst, func() error {
			if s.target.Engine != nil {
				return s.target.Client.Database(dst.DB).CreateCollection(ctx, dst.Coll)
			}
			cmd := bson.D{{Key: "create", Value: dst.Coll}}
			for _, e := range elements(desc) {
				if e.Key != "idIndex" {
					cmd = append(cmd, e)
				}
			}
			return ignoreCodes(s.runDDL(ctx, dst.DB, cmd), codeNamespaceExists)
		})
	case change.OpCreateIndexes:
		var specs []bson.Raw
		if arr, ok := desc.Lookup("indexes").ArrayOK(); ok {
			vals, _ := arr.Values()
			for _, v := range vals {
				if d, ok := v.DocumentOK(); ok {
					specs = append(specs, d)
				}
			}
		}
		return s.bracket(ctx, change.OpCreateIndexes, dst, func() error { return s.createIndexes(ctx, dst, specs, log) })
	case change.OpDropIndexes:
		arr, _ := desc.Lookup("indexes").ArrayOK()
		vals, _ := arr.Values()
		return s.bracket(ctx, change.OpDropIndexes, dst, func() error {
			for _, v := range vals {
				name, _ := v.Document().Lookup("name").StringValueOK()
				if name == "" || name == "_id_" {
					continue
				}
				_, err := s.target.Client.Database(dst.DB, majority).Collection(dst.Coll).Indexes().DropOne(ctx, name)
				if err = ignoreCodes(err, codeIndexNotFound, codeNamespaceNotFound); err != nil && !strings.Contains(err.Error(), "missing") {
					return fmt.Errorf("drop index %s on %s: %w", name, dst, err)
				}
			}
			return nil
		})
	case change.OpRename:
		fromKept, toKept := replicated(s.filter, ev.NS), ev.To.DB != "" && replicated(s.filter, ev.To)
		to := s.mapper.Map(ev.To)
		switch {
		case fromKept && toKept:
			return s.rename(ctx, dst, to, log)
		case fromKept:
			log.Info().Msg("collection renamed out of the replicated namespaces: dropped on the target")
			return s.bracket(ctx, change.OpDrop, dst, func() error {
				return ignoreCodes(s.target.Client.Database(dst.DB, majority).Collection(dst.Coll).Drop(ctx), codeNamespaceNotFound)
			})
		default:
			return s.haltWith(ctx, fmt.Sprintf("%s was renamed into the replicated namespace %s, but its documents were never replicated; run a new initial sync of this pipeline", ev.NS, ev.To))
		}
	case change.OpModify:
		if s.target.Engine != nil {
			log.Warn().Msg("collMod is not supported by the embedded engine: not applied")
			return nil
		}
		cmd := append(bson.D{{Key: "collMod", Value: dst.Coll}}, elements(desc)...)
		return s.bracket(ctx, change.OpModify, dst, func() error {
			return s.runDDL(ctx, dst.DB, cmd)
		})
	case change.OpShardCollection, change.OpReshard, change.OpRefineKey:
		log.Info().Msg("sharding change not applied: the target's sharding is configured on the target")
		return nil
	}
	log.Warn().Msg("operation type not applied")
	return nil
}

// runDDL runs a DDL command on a real deployment with majority write
// concern. RunCommand does not apply the database's write concern: a DDL
// acknowledged by the primary alone could be rolled back after a failover
// while the applied position, written with majority, survives.
func (s *Sink) runDDL(ctx context.Context, db string, cmd bson.D) error {
	cmd = append(cmd[:len(cmd):len(cmd)], bson.E{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}}})
	return s.target.Client.Database(db).RunCommand(ctx, cmd).Err()
}

// insertMarker inserts an origin marker, whose _id is a new ObjectID. A
// duplicate key error can then only mean that this insert already landed:
// the driver retried it (a retryable write) after the connection broke
// before the reply, and the retry found the first attempt's document.
// Taking that as success keeps a target restart from halting the
// pipeline.
func insertMarker(ctx context.Context, markers lungo.ICollection, doc bson.D) error {
	_, err := markers.InsertOne(ctx, doc)
	if err != nil && isDuplicateKey(err) {
		return nil
	}
	return err
}

// bracket runs a DDL between a marker insert and its delete, so that the
// target's capture drops the DDL's events instead of replicating them back.
func (s *Sink) bracket(ctx context.Context, op string, ns change.Namespace, fn func() error) error {
	markers := s.db(s.metadataDB).Collection(MarkersCollection)
	id := primitive.NewObjectID()
	if err := insertMarker(ctx, markers, bson.D{
		{Key: "_id", Value: id}, {Key: "kind", Value: markerDDL}, {Key: "pipeline", Value: s.cfg.ID},
		{Key: "op", Value: op}, {Key: "ns", Value: bson.D{{Key: "db", Value: ns.DB}, {Key: "coll", Value: ns.Coll}}},
		{Key: "at", Value: time.Now().UTC()},
	}); err != nil {
		return fmt.Errorf("write origin marker for %s of %s: %w", op, ns, err)
	}
	err := fn()
	if _, derr := markers.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); derr != nil {
		err = errors.Join(err, fmt.Errorf("close origin marker: %w", derr))
	}
	if err != nil {
		return fmt.Errorf("%s of %s: %w", op, ns, err)
	}
	return nil
}

// createIndexes builds index specifications (as listIndexes or a
// createIndexes event gives them) on a target collection.
func (s *Sink) createIndexes(ctx context.Context, ns change.Namespace, specs []bson.Raw, log zerolog.Logger) error {
	var keep []bson.D
	for _, spec := range specs {
		name, _ := spec.Lookup("name").StringValueOK()
		if name == "_id_" {
			continue
		}
		var d bson.D
		for _, e := range rawElements(spec) {
			switch e.Key {
			case "v", "ns", "background":
			default:
				d = append(d, e)
			}
		}
		keep = append(keep, d)
	}
	if len(keep) == 0 {
		return nil
	}
	if s.target.Engine == nil {
		// createIndexes on a missing collection creates it implicitly, and
		// the server reports a create event that the createIndexes marker
		// would not name: create it explicitly first (the marker of a
		// createIndexes covers a create of the same collection).
		if err := ignoreCodes(s.runDDL(ctx, ns.DB, bson.D{{Key: "create", Value: ns.Coll}}), codeNamespaceExists); err != nil {
			return fmt.Errorf("create %s before its indexes: %w", ns, err)
		}
		cmd := bson.D{{Key: "createIndexes", Value: ns.Coll}, {Key: "indexes", Value: keep}}
		return s.runDDL(ctx, ns.DB, cmd)
	}
	// The embedded engine knows a few index options; others are dropped
	// with a warning rather than failing the whole pipeline.
	view := s.target.Client.Database(ns.DB).Collection(ns.Coll).Indexes()
	for _, d := range keep {
		m := mongo.IndexModel{Options: options.Index()}
		for _, e := range d {
			v, _ := e.Value.(bson.RawValue)
			switch e.Key {
			case "key":
				m.Keys, _ = v.DocumentOK()
			case "name":
				s, _ := v.StringValueOK()
				m.Options.SetName(s)
			case "unique":
				b, _ := v.BooleanOK()
				m.Options.SetUnique(b)
			case "partialFilterExpression":
				doc, _ := v.DocumentOK()
				m.Options.SetPartialFilterExpression(doc)
			case "expireAfterSeconds":
				if n, ok := v.AsInt64OK(); ok {
					m.Options.SetExpireAfterSeconds(int32(n))
				}
			default:
				log.Warn().Str("ns", ns.String()).Str("option", e.Key).Msg("index option not supported by the embedded engine: dropped")
			}
		}
		if _, err := view.CreateOne(ctx, m); err != nil {
			return fmt.Errorf("create index on %s: %w", ns, err)
		}
	}
	return nil
}

// rename renames a target collection with one renameCollection command,
// replacing what is at to (the source's rename did, or failed). Real
// servers, devdb and the embedded engine all run it. A server without
// dropTarget (FerretDB answers NotImplemented) gets the target dropped
// first, then a plain rename. Applied again after a crash, the source is
// gone and the command's NamespaceNotFound means done.
func (s *Sink) rename(ctx context.Context, from, to change.Namespace, log zerolog.Logger) error {
	cmd := bson.D{{Key: "renameCollection", Value: from.String()}, {Key: "to", Value: to.String()}}
	return s.bracket(ctx, change.OpRename, from, func() error {
		err := s.runDDL(ctx, "admin", append(cmd, bson.E{Key: "dropTarget", Value: true}))
		if unsupportedCode(err) {
			log.Info().Err(err).Msg("the target cannot replace a collection by renaming onto it: dropping the target collection first")
			if err := ignoreCodes(s.target.Client.Database(to.DB, majority).Collection(to.Coll).Drop(ctx), codeNamespaceNotFound); err != nil {
				return fmt.Errorf("drop %s before renaming onto it: %w", to, err)
			}
			err = s.runDDL(ctx, "admin", cmd)
		}
		return ignoreCodes(err, codeNamespaceNotFound)
	})
}

func listIndexes(ctx context.Context, c lungo.ICollection) ([]bson.Raw, error) {
	cur, err := c.Indexes().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", c.Name(), err)
	}
	var out []bson.Raw
	for cur.Next(ctx) {
		var d bson.Raw
		if err := cur.Decode(&d); err != nil {
			return nil, err
		}
		out = append(out, append(bson.Raw(nil), d...))
	}
	return out, cur.Err()
}

func elements(d bson.Raw) bson.D {
	return rawElements(d)
}

func rawElements(d bson.Raw) bson.D {
	elems, _ := d.Elements()
	out := make(bson.D, 0, len(elems))
	for _, e := range elems {
		out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return out
}

// ignoreCodes returns nil for server errors with one of codes: a replayed DDL
// finding its work done.
func ignoreCodes(err error, codes ...int) error {
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, c := range codes {
			if se.HasErrorCode(c) {
				return nil
			}
		}
	}
	return err
}
