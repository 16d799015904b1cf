// Package filtertest is the one table of cases that pins what
// change.Filter means. change runs it against Filter.Match; capture,
// replicate, events and trigger run it against their own entry points
// (what capture stores, what a pipeline applies, what a subscription sends,
// what a database trigger runs on), so the four cannot drift apart.
//
// An entry point whose configuration cannot say what a case says (a trigger
// names exact namespaces and DML operation types only; a pipeline has no
// operation filter) skips that case, and says which ones it can run.
package filtertest

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change"
)

// MetadataDB is the metadata database every entry point is configured with
// for the table. It is not the default, so a case in DefaultMetadataDB
// shows that the configured name, not the default, is excluded.
const MetadataDB = "gwmeta"

// Unknown is an operation type godwit does not know.
const Unknown = "futureOperation"

// Case is one event and the filter settings it is judged under.
type Case struct {
	Name string
	// Include, Ignore are globs (change.ParseGlob).
	Include, Ignore []string
	Operations      []string
	KeepUnknown     bool
	// Op, NS, To make the event; NS.DB == "" leaves out ns.
	Op     string
	NS, To change.Namespace
	// Want says whether the event passes.
	Want bool
}

func ns(db, coll string) change.Namespace { return change.Namespace{DB: db, Coll: coll} }

// Cases is the table.
var Cases = []Case{
	// Rule 1: operation types.
	{Name: "no rules keep an insert", Op: change.OpInsert, NS: ns("shop", "orders"), Want: true},
	{Name: "an unlisted operation is dropped", Operations: []string{change.OpInsert}, Op: change.OpUpdate, NS: ns("shop", "orders")},
	{Name: "a listed operation is kept", Operations: []string{change.OpInsert, change.OpUpdate}, Op: change.OpUpdate, NS: ns("shop", "orders"), Want: true},
	{Name: "an unknown operation is dropped by a list", Operations: []string{change.OpInsert}, Op: Unknown, NS: ns("shop", "orders")},
	{Name: "keep-unknown keeps an unknown operation", Operations: []string{change.OpInsert, change.OpInvalidate}, KeepUnknown: true, Op: Unknown, NS: ns("shop", "orders"), Want: true},
	{Name: "keep-unknown still drops an unlisted known operation", Operations: []string{change.OpInsert, change.OpInvalidate}, KeepUnknown: true, Op: change.OpUpdate, NS: ns("shop", "orders")},
	{Name: "keep-unknown keeps a listed operation", Operations: []string{change.OpInsert, change.OpInvalidate}, KeepUnknown: true, Op: change.OpInsert, NS: ns("shop", "orders"), Want: true},
	{Name: "no rules keep an unknown operation", Op: Unknown, NS: ns("shop", "orders"), Want: true},
	{Name: "a listed invalidate is kept", Operations: []string{change.OpInsert, change.OpInvalidate}, KeepUnknown: true, Op: change.OpInvalidate, Want: true},
	{Name: "an unlisted invalidate is dropped", Operations: []string{change.OpInsert}, Op: change.OpInvalidate},
	{Name: "an operation list drops a rename", Operations: []string{change.OpInsert}, Op: change.OpRename, NS: ns("shop", "a"), To: ns("shop", "b")},

	// Rule 2: events without a namespace.
	{Name: "invalidate without ns passes include globs", Include: []string{"shop.*"}, Op: change.OpInvalidate, Want: true},
	{Name: "invalidate without ns passes an ignore-everything glob", Ignore: []string{"*"}, Op: change.OpInvalidate, Want: true},
	{Name: "unknown operation without ns passes include globs", Include: []string{"shop.*"}, Op: Unknown, Want: true},
	{Name: "unknown operation without ns passes with no rules", Op: Unknown, Want: true},

	// Rule 3: the metadata database.
	{Name: "metadata insert is dropped with no rules", Op: change.OpInsert, NS: ns(MetadataDB, "triggers")},
	{Name: "metadata insert is dropped under include star", Include: []string{"*"}, Op: change.OpInsert, NS: ns(MetadataDB, "triggers")},
	{Name: "metadata insert is dropped when included by name", Include: []string{MetadataDB + ".*"}, Op: change.OpInsert, NS: ns(MetadataDB, "triggers")},
	{Name: "metadata insert is dropped under an operation list", Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns(MetadataDB, "triggers")},
	{Name: "metadata insert is dropped under an exact include", Include: []string{MetadataDB + ".triggers"}, Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns(MetadataDB, "triggers")},
	{Name: "metadata dropDatabase is dropped", Op: change.OpDropDatabase, NS: ns(MetadataDB, "")},
	{Name: "rename out of the metadata database is dropped", Op: change.OpRename, NS: ns(MetadataDB, "x"), To: ns("shop", "y")},
	{Name: "rename into the metadata database is kept by its source", Op: change.OpRename, NS: ns("shop", "x"), To: ns(MetadataDB, "y"), Want: true},
	{Name: "rename from ignored into the metadata database is dropped", Ignore: []string{"shop.tmp"}, Op: change.OpRename, NS: ns("shop", "tmp"), To: ns(MetadataDB, "y")},
	{Name: "the default metadata name is an ordinary database when another is configured", Op: change.OpInsert, NS: ns(change.DefaultMetadataDB, "x"), Want: true},

	// Rule 4: globs.
	{Name: "star collection spans dots", Include: []string{"shop.*"}, Op: change.OpInsert, NS: ns("shop", "orders.archive"), Want: true},
	{Name: "exact include is exact", Include: []string{"shop.orders"}, Op: change.OpInsert, NS: ns("shop", "orders2")},
	{Name: "exact include matches its namespace", Include: []string{"shop.orders"}, Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns("shop", "orders"), Want: true},
	{Name: "exact include misses another collection", Include: []string{"shop.orders"}, Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns("shop", "other")},
	{Name: "database include keeps every collection", Include: []string{"shop"}, Operations: []string{change.OpDelete}, Op: change.OpDelete, NS: ns("shop", "orders"), Want: true},
	{Name: "database include misses another database", Include: []string{"shop"}, Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns("shopping", "orders")},
	{Name: "question mark is one character", Include: []string{"sh?p.*"}, Op: change.OpInsert, NS: ns("shop", "x"), Want: true},
	{Name: "question mark is one code point", Include: []string{"donn?es"}, Op: change.OpInsert, NS: ns("données", "x"), Want: true},
	{Name: "escaped star is literal", Include: []string{`shop.a\*b`}, Op: change.OpInsert, NS: ns("shop", "a*b"), Want: true},
	{Name: "escaped star matches nothing else", Include: []string{`shop.a\*b`}, Op: change.OpInsert, NS: ns("shop", "axb")},
	{Name: "class matches a member", Include: []string{"shop.[a-c]*"}, Op: change.OpInsert, NS: ns("shop", "banana"), Want: true},
	{Name: "class misses a non-member", Include: []string{"shop.[a-c]*"}, Op: change.OpInsert, NS: ns("shop", "dates")},
	{Name: "no include keeps any database", Operations: []string{change.OpInsert}, Op: change.OpInsert, NS: ns("other", "x"), Want: true},
	{Name: "ignore drops", Ignore: []string{"shop.tmp_*"}, Op: change.OpInsert, NS: ns("shop", "tmp_1")},
	{Name: "ignore leaves other included namespaces", Include: []string{"shop.*"}, Ignore: []string{"shop.tmp_*"}, Op: change.OpInsert, NS: ns("shop", "orders"), Want: true},
	{Name: "ignore wins over include", Include: []string{"shop.*"}, Ignore: []string{"shop.tmp_*"}, Op: change.OpUpdate, NS: ns("shop", "tmp_2")},

	// Database-level events.
	{Name: "collection ignore does not drop dropDatabase", Ignore: []string{"shop.logs"}, Op: change.OpDropDatabase, NS: ns("shop", ""), Want: true},
	{Name: "database ignore drops dropDatabase", Ignore: []string{"shop"}, Op: change.OpDropDatabase, NS: ns("shop", "")},
	{Name: "collection include keeps its dropDatabase", Include: []string{"shop.orders"}, Op: change.OpDropDatabase, NS: ns("shop", ""), Want: true},
	{Name: "collection include misses another dropDatabase", Include: []string{"shop.orders"}, Op: change.OpDropDatabase, NS: ns("other", "")},
	{Name: "collection include keeps its drop", Include: []string{"shop.orders"}, Op: change.OpDrop, NS: ns("shop", "orders"), Want: true},
	{Name: "collection include misses another drop", Include: []string{"shop.orders"}, Op: change.OpDrop, NS: ns("shop", "other")},

	// Rule 5: renames.
	{Name: "rename out of an included namespace", Include: []string{"shop.*"}, Op: change.OpRename, NS: ns("shop", "a"), To: ns("archive", "a"), Want: true},
	{Name: "rename into an included namespace", Include: []string{"shop.*"}, Op: change.OpRename, NS: ns("archive", "a"), To: ns("shop", "a"), Want: true},
	{Name: "rename between unwatched namespaces", Include: []string{"shop.*"}, Op: change.OpRename, NS: ns("archive", "a"), To: ns("other", "b")},
	{Name: "rename from ignored into watched", Ignore: []string{"shop.tmp"}, Op: change.OpRename, NS: ns("shop", "tmp"), To: ns("shop", "orders"), Want: true},
	{Name: "rename from watched into ignored", Ignore: []string{"shop.tmp"}, Op: change.OpRename, NS: ns("shop", "orders"), To: ns("shop", "tmp"), Want: true},
	{Name: "rename from unwatched into ignored", Include: []string{"shop.*"}, Ignore: []string{"shop.tmp"}, Op: change.OpRename, NS: ns("other", "x"), To: ns("shop", "tmp")},
	{Name: "rename inside an ignored database", Ignore: []string{"shop"}, Op: change.OpRename, NS: ns("shop", "a"), To: ns("shop", "b")},
	{Name: "unknown operation with a to is judged by both", Include: []string{"shop.*"}, Op: Unknown, NS: ns("archive", "a"), To: ns("shop", "a"), Want: true},
}

// Filter compiles the case's settings with MetadataDB.
func (c Case) Filter() (change.Filter, error) {
	f := change.Filter{Operations: c.Operations, KeepUnknown: c.KeepUnknown, MetadataDB: MetadataDB}
	for _, p := range c.Include {
		g, err := change.ParseGlob(p)
		if err != nil {
			return f, err
		}
		f.Include = append(f.Include, g)
	}
	for _, p := range c.Ignore {
		g, err := change.ParseGlob(p)
		if err != nil {
			return f, err
		}
		f.Ignore = append(f.Ignore, g)
	}
	return f, nil
}

// Raw returns the case's event as a server would send it.
func (c Case) Raw() bson.Raw {
	d := bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: "8263A0F2B1000000012B0229296E04"}}},
		{Key: "operationType", Value: c.Op},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: 1}},
	}
	if c.NS.DB != "" {
		n := bson.D{{Key: "db", Value: c.NS.DB}}
		if c.NS.Coll != "" {
			n = append(n, bson.E{Key: "coll", Value: c.NS.Coll})
		}
		d = append(d, bson.E{Key: "ns", Value: n})
	}
	if c.To.DB != "" {
		d = append(d, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: c.To.DB}, {Key: "coll", Value: c.To.Coll}}})
	}
	if change.IsDML(c.Op) {
		d = append(d, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(1)}}})
		if c.Op != change.OpDelete {
			d = append(d, bson.E{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int32(1)}}})
		}
	}
	raw, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return raw
}

// Event returns the case's event parsed.
func (c Case) Event() *change.Event {
	ev, err := change.Parse(c.Raw())
	if err != nil {
		panic(err)
	}
	return ev
}

func (c Case) String() string {
	return fmt.Sprintf("%s %s→%s include=%q ignore=%q ops=%q keepUnknown=%t", c.Op, c.NS, c.To, c.Include, c.Ignore, c.Operations, c.KeepUnknown)
}

// Run runs every case that can says the entry point can express, as a
// subtest named after the case, and checks match against Want. It fails
// when can accepts no case at all.
func Run(t *testing.T, can func(Case) bool, match func(t *testing.T, c Case) bool) {
	t.Helper()
	ran := 0
	for _, c := range Cases {
		if !can(c) {
			continue
		}
		ran++
		t.Run(c.Name, func(t *testing.T) {
			if got := match(t, c); got != c.Want {
				t.Errorf("%s: passes = %t, want %t", c, got, c.Want)
			}
		})
	}
	if ran == 0 {
		t.Fatal("the entry point can express none of the cases")
	}
	t.Logf("ran %d of %d cases", ran, len(Cases))
}
