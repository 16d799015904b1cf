package replicate_test

import (
	"testing"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/filtertest"
	"github.com/godwit-dev/godwit/replicate"
)

// TestSink_Keeps runs the shared filter table against what a pipeline
// applies. A pipeline has no operation filter, and never applies a known
// operation type without a namespace (an invalidate is skipped before the
// filter; anything else is malformed).
func TestSink_Keeps(t *testing.T) {
	can := func(c filtertest.Case) bool {
		return len(c.Operations) == 0 && !(c.NS.DB == "" && change.Known(c.Op))
	}
	filtertest.Run(t, can, func(t *testing.T, c filtertest.Case) bool {
		return replicate.Keeps(replicate.Config{Include: c.Include, Ignore: c.Ignore}, filtertest.MetadataDB, c.Event())
	})
}

// TestSink_KeepsNeverReplicated: the server's databases and system
// collections are never replicated, even when included.
func TestSink_KeepsNeverReplicated(t *testing.T) {
	cfg := replicate.Config{Include: []string{"*"}}
	for _, ns := range []change.Namespace{{DB: "admin", Coll: "x"}, {DB: "local", Coll: "oplog.rs"}, {DB: "config", Coll: "x"},
		{DB: "shop", Coll: "system.views"}, {DB: "godwit", Coll: "x"}} {
		ev := &change.Event{OperationType: change.OpInsert, NS: ns}
		if replicate.Keeps(cfg, "godwit", ev) {
			t.Errorf("%s is replicated", ns)
		}
	}
	ev := &change.Event{OperationType: change.OpDropDatabase, NS: change.Namespace{DB: "shop"}}
	if !replicate.Keeps(cfg, "godwit", ev) {
		t.Errorf("dropDatabase shop is not replicated: the system.* ignore must not drop a database-level event")
	}
	ev = &change.Event{OperationType: change.OpInsert}
	if replicate.Keeps(cfg, "godwit", ev) {
		t.Errorf("an insert without a namespace is kept")
	}
}
