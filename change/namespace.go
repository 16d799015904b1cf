package change

import (
	"fmt"
	"path"
	"strings"
)

// Namespace is a database and (optionally) a collection.
type Namespace struct {
	DB   string `json:"db"`
	Coll string `json:"coll,omitempty"`
}

// String returns "db.coll", or "db" for database-level events.
func (n Namespace) String() string {
	if n.Coll == "" {
		return n.DB
	}
	return n.DB + "." + n.Coll
}

// Glob matches namespaces "db.coll" with shell-style patterns: '*' matches
// any run of characters, '?' one character, '[...]' a class. The pattern is
// split at its first '.': the left side matches the database name and the
// right side the whole collection name, which may itself contain dots (so
// "shop.*" matches "shop.orders.archive"). A pattern without '.' matches a
// database and every collection in it.
type Glob struct {
	pattern string
	db      string
	coll    string // empty: any collection
}

// ParseGlob validates and compiles a namespace glob.
func ParseGlob(p string) (Glob, error) {
	if p == "" {
		return Glob{}, fmt.Errorf("empty namespace glob")
	}
	db, coll, hasColl := strings.Cut(p, ".")
	if db == "" {
		return Glob{}, fmt.Errorf("namespace glob %q: database part is empty (write '*.%s' for every database)", p, coll)
	}
	if hasColl && coll == "" {
		return Glob{}, fmt.Errorf("namespace glob %q: collection part is empty (write '%s.*' for every collection)", p, db)
	}
	for _, part := range []string{db, coll} {
		if _, err := path.Match(part, ""); err != nil {
			return Glob{}, fmt.Errorf("namespace glob %q: bad pattern %q: %v", p, part, err)
		}
	}
	g := Glob{pattern: p, db: db}
	if hasColl {
		g.coll = coll
	}
	return g, nil
}

// MustGlob is ParseGlob for patterns known to be valid.
func MustGlob(p string) Glob {
	g, err := ParseGlob(p)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the pattern.
func (g Glob) String() string { return g.pattern }

// Match reports whether ns matches. A database-level namespace (no
// collection) matches when the database part matches: dropping a database
// drops the collections the glob names.
func (g Glob) Match(ns Namespace) bool {
	if !matchPart(g.db, ns.DB) {
		return false
	}
	if g.coll == "" || ns.Coll == "" {
		return true
	}
	return matchPart(g.coll, ns.Coll)
}

// matchPart is path.Match with '/' never special: namespaces contain no '/',
// but '.' inside collection names must match '*'.
func matchPart(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}

// Filter decides which namespaces to keep: a namespace is kept when it
// matches some include glob (or there are none) and no exclude glob.
type Filter struct {
	Include []Glob
	Exclude []Glob
}

// Keep reports whether ns passes the filter.
func (f Filter) Keep(ns Namespace) bool {
	for _, g := range f.Exclude {
		if g.Match(ns) && !(ns.Coll == "" && g.coll != "") {
			return false
		}
	}
	if len(f.Include) == 0 {
		return true
	}
	for _, g := range f.Include {
		if g.Match(ns) {
			return true
		}
	}
	return false
}
