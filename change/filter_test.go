package change_test

import (
	"testing"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/filtertest"
)

func TestFilter_Match(t *testing.T) {
	filtertest.Run(t, func(filtertest.Case) bool { return true }, func(t *testing.T, c filtertest.Case) bool {
		f, err := c.Filter()
		if err != nil {
			t.Fatal(err)
		}
		return f.Match(c.Event())
	})
}

func TestFilter_MatchDefaultMetadataDB(t *testing.T) {
	ev := &change.Event{OperationType: change.OpInsert, NS: change.Namespace{DB: change.DefaultMetadataDB, Coll: "x"}}
	if (change.Filter{}).Match(ev) {
		t.Errorf("the zero Filter passes an insert into %s", change.DefaultMetadataDB)
	}
}

func TestExactGlob_Match(t *testing.T) {
	for _, tc := range []struct {
		exact, ns change.Namespace
		want      bool
	}{
		{change.Namespace{DB: "shop", Coll: "a*b"}, change.Namespace{DB: "shop", Coll: "a*b"}, true},
		{change.Namespace{DB: "shop", Coll: "a*b"}, change.Namespace{DB: "shop", Coll: "axxb"}, false},
		{change.Namespace{DB: "shop", Coll: "[ab]"}, change.Namespace{DB: "shop", Coll: "a"}, false},
		{change.Namespace{DB: "shop", Coll: "[ab]"}, change.Namespace{DB: "shop", Coll: "[ab]"}, true},
		{change.Namespace{DB: "sh?p"}, change.Namespace{DB: "shop", Coll: "x"}, false},
		{change.Namespace{DB: "shop"}, change.Namespace{DB: "shop", Coll: "x.y"}, true},
		{change.Namespace{DB: "shop", Coll: `a\b`}, change.Namespace{DB: "shop", Coll: `a\b`}, true},
		{change.Namespace{DB: "shop", Coll: "orders.2024"}, change.Namespace{DB: "shop", Coll: "orders.2024"}, true},
		{change.Namespace{DB: "a.b"}, change.Namespace{DB: "a", Coll: "b"}, false},
	} {
		if got := change.ExactGlob(tc.exact).Match(tc.ns); got != tc.want {
			t.Errorf("ExactGlob(%s).Match(%s) = %t, want %t", tc.exact, tc.ns, got, tc.want)
		}
	}
}

func TestQuoteGlob(t *testing.T) {
	for _, name := range []string{"plain", "a*b", "a?b", "[x]", `back\slash`, "données", "orders.2024"} {
		g, err := change.ParseGlob("db." + change.QuoteGlob(name))
		if err != nil {
			t.Fatalf("QuoteGlob(%q) does not parse: %v", name, err)
		}
		if !g.Match(change.Namespace{DB: "db", Coll: name}) {
			t.Errorf("QuoteGlob(%q) = %q does not match its name", name, change.QuoteGlob(name))
		}
		if name != "plain" && g.Match(change.Namespace{DB: "db", Coll: "plain"}) {
			t.Errorf("QuoteGlob(%q) matches another name", name)
		}
	}
}
