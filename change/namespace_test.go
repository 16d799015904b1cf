package change_test

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

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
		// Characters are code points, not bytes (issue 13, R1).
		{"données.*", ns("données", "clients"), true},
		{"donn?es.*", ns("données", "clients"), true},
		{"donn??es.*", ns("données", "clients"), false},
		{"*.🦆", ns("x", "🦆"), true},
		// Classes: ']' first is literal, '\' escapes, '!' and '^' negate.
		{"[]a]b", ns("]b", ""), true},
		{"[]a]b", ns("ab", ""), true},
		{"[]a]b", ns("cb", ""), false},
		{`[\]]b`, ns("]b", ""), true},
		{"[!x]y", ns("xy", ""), false},
		{"[!x]y", ns("!y", ""), true},
		{"[^x]y", ns("zy", ""), true},
		{"[a-]", ns("-", ""), true},
		{"[é-ü]", ns("ö", ""), true},
		// '*' matches any run: '/', '.' and newlines included.
		{"a.*", ns("a", "x/y.z\n"), true},
		{`a\*`, ns("a*", ""), true},
		{`a\*`, ns("ab", ""), false},
	}
	for _, c := range cases {
		if got := change.MustGlob(c.glob).Match(c.ns); got != c.want {
			t.Errorf("%q matching %q = %v, want %v", c.glob, c.ns, got, c.want)
		}
	}
}

func TestParseGlob_Errors(t *testing.T) {
	for _, bad := range []string{"", ".orders", "shop.", "shop.[a-", "[.x", "[]", "a.[!]", `a\`, "a.[z-a]", "a\x00", "\xff"} {
		if _, err := change.ParseGlob(bad); err == nil {
			t.Errorf("ParseGlob(%q) accepted a bad pattern", bad)
		}
	}
}

func TestFilter_Namespace(t *testing.T) {
	f := change.Filter{
		Include: []change.Glob{change.MustGlob("shop.*"), change.MustGlob("inventory.items")},
		Ignore:  []change.Glob{change.MustGlob("*.tmp_*")},
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
		if got := f.Namespace(c.ns); got != c.want {
			t.Errorf("Namespace(%q) = %v, want %v", c.ns, got, c.want)
		}
	}
	if !(change.Filter{}).Namespace(ns("x", "y")) {
		t.Error("an empty filter keeps everything")
	}
}

func TestParseGlob_ErrorSaysWhatToFix(t *testing.T) {
	for bad, want := range map[string]string{
		"shop.[abc":  `write '\[' for a literal '['`,
		`shop.x\`:    `write '\\' to match a backslash`,
		"shop.[z-a]": "out of order",
		"\xffshop.x": "not valid UTF-8",
	} {
		_, err := change.ParseGlob(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseGlob(%q) = %v, want an error saying %q", bad, err, want)
		}
	}
}

// globRunes are what FuzzGlob_Regex's seeds are made of: every glob and
// regular-expression metacharacter and multi-byte code points.
func FuzzGlob_Regex(f *testing.F) {
	for _, seed := range [][2]string{
		{"données.*", "données"}, {"[]a]", "]"}, {`[\]]`, "]"}, {"[!x]", "y"},
		{"*.tmp_*", "a.tmp_1"}, {"a?c", "a\nc"}, {"a.b", "a\n"}, {"[é-ü]*", "öx"},
		{`\^\$.(|)+{}`, "^$"}, {"🦆?", "🦆日"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if name == "" || !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
			return
		}
		// The pattern as a database part (a name without dots), and as a
		// collection part (any name) behind a database part that matches all.
		if g, err := change.ParseGlob(pattern); err == nil && !strings.Contains(name, ".") {
			checkRegex(t, pattern, g.DBRegex(), name, g.Match(change.Namespace{DB: name}))
		}
		if g, err := change.ParseGlob("*." + pattern); err == nil {
			checkRegex(t, pattern, g.CollRegex(), name, g.Match(change.Namespace{DB: "x", Coll: name}))
		}
	})
}

func checkRegex(t *testing.T, glob, pattern, name string, want bool) {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Fatalf("glob %q: regex %q does not compile: %v", glob, pattern, err)
	}
	if got := re.MatchString(name); got != want {
		t.Fatalf("glob %q, name %q: regex %q matches=%v, glob matches=%v", glob, name, pattern, got, want)
	}
}
