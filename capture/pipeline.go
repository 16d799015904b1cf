package capture

import (
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
)

// MarkersCollection is the collection in godwit's metadata database where
// the replicator writes origin markers. Capture lets its events through to
// the echo filter; everything else in the metadata database is dropped.
const MarkersCollection = "origin_markers"

// Pipeline returns the change-stream pipeline for a real server: one $match
// that keeps what the client-side filter (Config.Keep) keeps plus origin
// markers, so the server does not send events godwit would drop, then
// optionally $changeStreamSplitLargeEvent.
func Pipeline(cfg Config) bson.A {
	cfg.defaults()
	and := bson.A{
		// godwit's own database is never captured.
		bson.D{{Key: "ns.db", Value: bson.D{{Key: "$ne", Value: cfg.MetadataDatabase}}}},
	}
	if len(cfg.Filter.Include) > 0 || len(cfg.Filter.Ignore) > 0 {
		and = append(and, bson.D{{Key: "$or", Value: bson.A{
			// An event without a namespace passes the namespace rules.
			bson.D{{Key: "ns.db", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "ns.db", Value: ""}},
			nsKept("ns", cfg),
			// An event naming a second namespace (a rename) is kept when
			// either namespace is.
			bson.D{{Key: "$and", Value: bson.A{
				bson.D{{Key: "to.db", Value: bson.D{{Key: "$exists", Value: true}, {Key: "$ne", Value: ""}}}},
				nsKept("to", cfg),
			}}},
		}}})
	}
	if len(cfg.OperationTypes) > 0 {
		keep := append(bson.A{change.OpInvalidate}, toA(cfg.OperationTypes)...)
		and = append(and, bson.D{{Key: "$or", Value: bson.A{
			bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: keep}}}},
			bson.D{{Key: "operationType", Value: bson.D{{Key: "$nin", Value: toA(change.KnownOperationTypes)}}}},
		}}})
	}
	// The replicator's origin markers bypass every filter: the echo filter
	// must see each marker's insert and delete (Keep drops them after).
	match := bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.db", Value: cfg.MetadataDatabase}, {Key: "ns.coll", Value: MarkersCollection}},
		bson.D{{Key: "$and", Value: and}},
	}}}
	p := bson.A{bson.D{{Key: "$match", Value: match}}}
	if cfg.SplitLargeEvents {
		p = append(p, bson.D{{Key: "$changeStreamSplitLargeEvent", Value: bson.D{}}})
	}
	return p
}

// nsKept is change.Filter.Namespace on the namespace in field ("ns" or
// "to").
func nsKept(field string, cfg Config) bson.D {
	f := cfg.Filter
	and := bson.A{bson.D{{Key: field + ".db", Value: bson.D{{Key: "$ne", Value: cfg.MetadataDatabase}}}}}
	if len(f.Include) > 0 {
		var or bson.A
		for _, g := range f.Include {
			or = append(or, globMatch(field, g))
		}
		and = append(and, bson.D{{Key: "$or", Value: or}})
	}
	for _, g := range f.Ignore {
		and = append(and, bson.D{{Key: "$nor", Value: bson.A{excludeMatch(field, g)}}})
	}
	return bson.D{{Key: "$and", Value: and}}
}

func toA(ss []string) bson.A {
	a := make(bson.A, len(ss))
	for i, s := range ss {
		a[i] = s
	}
	return a
}

// globMatch matches field.db and field.coll against a glob, the way
// change.Glob.Match does: a database-level namespace (no coll) matches when
// the database part does.
func globMatch(field string, g change.Glob) bson.D {
	d := bson.D{{Key: field + ".db", Value: regex(g.DBRegex())}}
	if g.HasCollection() {
		d = append(d, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: field + ".coll", Value: regex(g.CollRegex())}},
			bson.D{{Key: field + ".coll", Value: bson.D{{Key: "$exists", Value: false}}}},
		}})
	}
	return bson.D{{Key: "$and", Value: bson.A{d}}}
}

// excludeMatch matches the events an ignore glob drops: a glob with a
// collection part never drops a database-level event.
func excludeMatch(field string, g change.Glob) bson.D {
	if !g.HasCollection() {
		return bson.D{{Key: field + ".db", Value: regex(g.DBRegex())}}
	}
	return bson.D{{Key: field + ".db", Value: regex(g.DBRegex())}, {Key: field + ".coll", Value: regex(g.CollRegex())}}
}

// regex is a $regex condition. change.Glob writes patterns that PCRE (the
// server's engine, UTF mode) reads as the glob means them.
func regex(pattern string) bson.D {
	return bson.D{{Key: "$regex", Value: pattern}}
}
