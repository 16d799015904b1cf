package trigger_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/filtertest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/trigger"
)

// triggerConfig is the database trigger of a filtertest case, when a
// trigger can say it: one exact namespace (database, collection), no
// ignore list, and an explicit list of DML operation types (an empty list
// means the four DML types, not every type).
func triggerConfig(c filtertest.Case) (trigger.DatabaseConfig, bool) {
	cfg := trigger.DatabaseConfig{DataSource: "src", OperationTypes: c.Operations}
	if c.KeepUnknown || len(c.Ignore) > 0 || len(c.Include) > 1 || len(c.Operations) == 0 {
		return cfg, false
	}
	for _, op := range c.Operations {
		if !change.IsDML(op) {
			return cfg, false
		}
	}
	if len(c.Include) == 1 {
		if strings.ContainsAny(c.Include[0], `*?[]\`) {
			return cfg, false
		}
		cfg.Database, cfg.Collection, _ = strings.Cut(c.Include[0], ".")
	}
	return cfg, true
}

// TestEventFilter_Table runs the shared filter table against what a
// database trigger runs its function on.
func TestEventFilter_Table(t *testing.T) {
	can := func(c filtertest.Case) bool { _, ok := triggerConfig(c); return ok }
	filtertest.Run(t, can, func(t *testing.T, c filtertest.Case) bool {
		cfg, _ := triggerConfig(c)
		ok, err := trigger.Fires(cfg, filtertest.MetadataDB, outbox.Record{Seq: 1, Source: "src", Raw: c.Raw()})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
}

// TestEventFilter_ExactNames: a trigger's database and collection are exact
// names, as they always were. A glob metacharacter in them is that
// character, never a pattern.
func TestEventFilter_ExactNames(t *testing.T) {
	for _, tc := range []struct {
		db, coll string
		ns       change.Namespace
		want     bool
	}{
		{"shop", "a*b", change.Namespace{DB: "shop", Coll: "a*b"}, true},
		{"shop", "a*b", change.Namespace{DB: "shop", Coll: "axxb"}, false},
		{"shop", "or?ers", change.Namespace{DB: "shop", Coll: "orders"}, false},
		{"shop", "[o]rders", change.Namespace{DB: "shop", Coll: "orders"}, false},
		{"shop", "[o]rders", change.Namespace{DB: "shop", Coll: "[o]rders"}, true},
		{"shop", `a\b`, change.Namespace{DB: "shop", Coll: `a\b`}, true},
		{"shop", "orders.2024", change.Namespace{DB: "shop", Coll: "orders.2024"}, true},
		{"sh*", "", change.Namespace{DB: "shop", Coll: "orders"}, false},
		{"shop", "", change.Namespace{DB: "shop", Coll: "orders.2024"}, true},
	} {
		c := filtertest.Case{Op: change.OpInsert, NS: tc.ns}
		cfg := trigger.DatabaseConfig{DataSource: "src", Database: tc.db, Collection: tc.coll}
		got, err := trigger.Fires(cfg, "godwit", outbox.Record{Seq: 1, Source: "src", Raw: c.Raw()})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("trigger on database %q collection %q fires for %s: %t, want %t", tc.db, tc.coll, tc.ns, got, tc.want)
		}
	}
}

// TestEventFilter_DefaultOperations: without operation_types a database
// trigger fires for the four DML types only, never for DDL, invalidate or
// operation types godwit does not know.
func TestEventFilter_DefaultOperations(t *testing.T) {
	for _, op := range append(slices.Clone(change.KnownOperationTypes), filtertest.Unknown) {
		c := filtertest.Case{Op: op, NS: change.Namespace{DB: "shop", Coll: "orders"}, To: change.Namespace{DB: "shop", Coll: "x"}}
		got, err := trigger.Fires(trigger.DatabaseConfig{DataSource: "src", Database: "shop"}, "godwit", outbox.Record{Seq: 1, Source: "src", Raw: c.Raw()})
		if err != nil {
			t.Fatal(err)
		}
		if got != change.IsDML(op) {
			t.Errorf("%s: fires = %t, want %t", op, got, change.IsDML(op))
		}
	}
}
