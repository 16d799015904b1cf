package replicate

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
)

// unmatchedError is returned inside a group's transaction when an update
// matched no document on the target: the target lacks a document the
// source has (a collection renamed during the initial sync, a target that
// was not a copy, a write to the target). $set would silently do nothing.
type unmatchedError struct {
	ns change.Namespace
	n  int64
}

func (e *unmatchedError) Error() string {
	return fmt.Sprintf("%d updates of %s matched no document on the target, and their events carry no post-image to write instead: "+
		"the target is missing documents the source has; run godwit verify, then a new initial sync of this pipeline", e.n, e.ns)
}

// withPostImages returns the group with every update to um's namespace
// turned into its post-image (written with upsert), and whether any was.
func (s *Sink) withPostImages(ops []*op, um *unmatchedError) ([]*op, bool) {
	out := make([]*op, len(ops))
	n := 0
	for i, o := range ops {
		out[i] = o
		if o.kind != opUpdate || o.dst != um.ns || o.ev == nil {
			continue
		}
		post, gone := postImage(o.ev)
		c := *o
		switch {
		case post != nil:
			c.kind, c.doc, c.upd = opUpsert, post, nil
		case gone:
			c.kind, c.skip, c.upd = opNone, "post-image gone (document deleted later)", nil
		default:
			continue
		}
		out[i] = &c
		n++
	}
	if n > 0 {
		s.log.Warn().Str("ns", um.ns.String()).Int64("unmatched", um.n).
			Msg("updates matched no document on the target (a document the copy or a rename should have brought is missing); applying their post-images")
	}
	return out, n > 0
}

// renameCovered decides a rename event against the initial copy's
// snapshots. A snapshot at or after the rename already shows its result:
// the old name gone (from), or the new name's documents (to).
//
//   - both covered: nothing to do;
//   - only the new name: the old name is dropped on the target;
//   - only the old name: the documents the new name received cannot be
//     rebuilt from the target (a copy of the old name read after the
//     rename); halt;
//   - neither: the rename is applied.
func (s *Sink) renameCovered(ev *change.Event) (skip, dropFrom bool, halt string) {
	covered := func(ns change.Namespace) (bool, bool) {
		at, ok := s.snapshots[ns]
		return ok && !ev.ClusterTime.After(at), ok
	}
	from, _ := covered(ev.NS)
	toKept := ev.To.DB != "" && replicated(s.filter, ev.To)
	to, toCopied := covered(ev.To)
	switch {
	case from && (to || !toKept):
		return true, false, ""
	case to:
		return false, true, ""
	case from:
		why := "was never copied"
		if toCopied {
			why = "was copied before the rename"
		}
		return false, false, fmt.Sprintf("%s was renamed to %s during the initial sync, and %s %s: its documents cannot be rebuilt on the target; run a new initial sync of this pipeline",
			ev.NS, ev.To, ev.To, why)
	}
	return false, false, ""
}

// maxRelists bounds the listings after a copy: collections that keep being
// created or renamed while the copy runs would never let it finish.
const maxRelists = 10

// relist lists the source's included collections again after the planned
// copies and adds what changed meanwhile: a collection that appeared (one
// created, or renamed from a collection copied before the rename) is
// copied; one whose name now holds another collection (renamed onto with
// dropTarget, or dropped and created again) is copied again. It reports
// whether there is anything to copy.
func (s *Sink) relist(ctx context.Context, source *mongodb.Conn, st *initialState, pass int) (bool, error) {
	have := map[string]*copiedNS{}
	for i := range st.Namespaces {
		have[st.Namespaces[i].Source] = &st.Namespaces[i]
	}
	dbs, err := source.Client.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return false, fmt.Errorf("list source databases: %w", err)
	}
	slices.Sort(dbs)
	more := false
	for _, db := range dbs {
		if !replicated(s.filter, change.Namespace{DB: db}) {
			continue
		}
		colls, err := listCollections(ctx, source.Client, db, bson.D{})
		if err != nil {
			return false, err
		}
		for _, c := range colls {
			ns := change.Namespace{DB: db, Coll: c.Name}
			if !replicated(s.filter, ns) {
				continue
			}
			n := have[ns.String()]
			switch {
			case n == nil:
				dst := s.mapper.Map(ns)
				cnt, err := s.target.Client.Database(dst.DB).Collection(dst.Coll).CountDocuments(ctx, bson.D{})
				if err != nil {
					return false, fmt.Errorf("count %s on the target: %w", dst, err)
				}
				if cnt > 0 {
					return false, fmt.Errorf("%w: %s holds %d documents; drop it, map %s elsewhere, or set initial_sync: false", ErrNotEmpty, dst, cnt, ns)
				}
				total, err := source.Client.Database(db).Collection(c.Name).EstimatedDocumentCount(ctx)
				if err != nil {
					return false, fmt.Errorf("count %s: %w", ns, err)
				}
				s.log.Info().Str("ns", ns.String()).Msg("collection appeared during the initial sync (created or renamed): copying it")
				st.Namespaces = append(st.Namespaces, copiedNS{Source: ns.String(), Target: dst.String(), Total: total})
				st.Total += total
				s.set(func(x *Status) { x.Total += total })
				more = true
			case n.Done && len(n.UUID) > 0 && len(c.UUID) > 0 && !bytes.Equal(n.UUID, c.UUID):
				s.log.Info().Str("ns", ns.String()).Msg("collection replaced during the initial sync (renamed onto, or dropped and created): copying it again")
				n.Done = false
				more = true
			}
		}
	}
	if !more {
		return false, nil
	}
	if pass+1 >= maxRelists {
		return false, fmt.Errorf("collections keep being created, renamed or replaced during the initial sync (%d listings): run it again when the source's DDL is quiet", maxRelists)
	}
	return true, saveInitial(ctx, s.target.Client, s.metadataDB, st)
}

type collInfo struct {
	Name string
	UUID []byte
}

func listCollections(ctx context.Context, c lungo.IClient, db string, filter bson.D) ([]collInfo, error) {
	cur, err := c.Database(db).ListCollections(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", db, err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var out []collInfo
	for cur.Next(ctx) {
		var d bson.Raw
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("list collections of %s: %w", db, err)
		}
		ci := collInfo{}
		ci.Name, _ = d.Lookup("name").StringValueOK()
		if _, b, ok := d.Lookup("info", "uuid").BinaryOK(); ok {
			ci.UUID = append([]byte(nil), b...)
		}
		out = append(out, ci)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", db, err)
	}
	slices.SortFunc(out, func(a, b collInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// collectionUUID returns a source collection's uuid (nil when the
// deployment reports none, as the embedded engine).
func collectionUUID(ctx context.Context, c lungo.IClient, ns change.Namespace) ([]byte, error) {
	colls, err := listCollections(ctx, c, ns.DB, bson.D{{Key: "name", Value: ns.Coll}})
	if err != nil {
		return nil, err
	}
	for _, ci := range colls {
		if ci.Name == ns.Coll {
			return ci.UUID, nil
		}
	}
	return nil, nil
}
