package change_test

import (
	"testing"

	"github.com/godwit-dev/godwit/change"
)

func ns(db, coll string) change.Namespace { return change.Namespace{DB: db, Coll: coll} }

func TestGlob_Match(t *testing.T) {
	cases := []struct {
		glob string
		ns   change.Namespace
		want bool
	}{
		{"shop.*", ns("shop", "orders"), true},
		{"shop.*", ns("shop", "orders.archive"), true},
		{"shop.*", ns("shopping", "orders"), false},
		{"shop.*", ns("shop", ""), true},
		{"*.tmp_*", ns("any", "tmp_import"), true},
		{"*.tmp_*", ns("any", "import"), false},
		{"shop", ns("shop", "orders"), true},
		{"shop.orders", ns("shop", "orders"), true},
		{"shop.orders", ns("shop", "orders2"), false},
		{"s?op.[a-o]*", ns("shop", "orders"), true},
		{"s?op.[a-n]*", ns("shop", "orders"), false},
	}
	for _, c := range cases {
		if got := change.MustGlob(c.glob).Match(c.ns); got != c.want {
			t.Errorf("%q matching %q = %v, want %v", c.glob, c.ns, got, c.want)
		}
	}
}

func TestParseGlob_Errors(t *testing.T) {
	for _, bad := range []string{"", ".orders", "shop.", "shop.[a-", "[.x"} {
		if _, err := change.ParseGlob(bad); err == nil {
			t.Errorf("ParseGlob(%q) accepted a bad pattern", bad)
		}
	}
}

func TestFilter_Keep(t *testing.T) {
	f := change.Filter{
		Include: []change.Glob{change.MustGlob("shop.*"), change.MustGlob("inventory.items")},
		Exclude: []change.Glob{change.MustGlob("*.tmp_*")},
	}
	cases := []struct {
		ns   change.Namespace
		want bool
	}{
		{ns("shop", "orders"), true},
		{ns("shop", "tmp_x"), false},
		{ns("inventory", "items"), true},
		{ns("inventory", "other"), false},
		{ns("shop", ""), true},      // dropDatabase of an included database
		{ns("inventory", ""), true}, // drops inventory.items too
		{ns("crm", ""), false},
	}
	for _, c := range cases {
		if got := f.Keep(c.ns); got != c.want {
			t.Errorf("Keep(%q) = %v, want %v", c.ns, got, c.want)
		}
	}
	if !(change.Filter{}).Keep(ns("x", "y")) {
		t.Error("an empty filter keeps everything")
	}
}
