package auth

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/godwit-dev/godwit/change"
)

// Allow is a user's allow-list: the data sources (source ids) and
// namespaces (globs, as in change.ParseGlob) the user's triggers may watch
// and write. An empty list allows everything of its kind; the zero Allow
// allows everything. NoAccess allows nothing: what a user without a token
// gets.
type Allow struct {
	none    bool
	sources []string
	globs   []change.Glob
	pats    []pattern // the globs, split, for coverage checks
}

// pattern is a namespace glob split at its first '.'; coll "*" when the
// glob names a whole database.
type pattern struct{ db, coll string }

func splitPattern(g string) pattern {
	db, coll, ok := strings.Cut(g, ".")
	if !ok {
		coll = "*"
	}
	return pattern{db: db, coll: coll}
}

// NewAllow checks and compiles an allow-list. Errors name the list and the
// index (namespaces[1]: …).
func NewAllow(sources, namespaces []string) (Allow, error) {
	var a Allow
	for i, s := range sources {
		if s == "" {
			return Allow{}, fmt.Errorf("sources[%d]: empty", i)
		}
		a.sources = append(a.sources, s)
	}
	for i, n := range namespaces {
		g, err := change.ParseGlob(n)
		if err != nil {
			return Allow{}, fmt.Errorf("namespaces[%d]: %v", i, err)
		}
		a.globs = append(a.globs, g)
		a.pats = append(a.pats, splitPattern(n))
	}
	return a, nil
}

// NoAccess returns the Allow that allows nothing: no source, no
// namespace. Authenticator.AllowOf gives it to a user without a token.
func NoAccess() Allow { return Allow{none: true} }

// None reports whether the allow-list allows nothing (NoAccess).
func (a Allow) None() bool { return a.none }

// Unrestricted reports whether the allow-list allows everything.
func (a Allow) Unrestricted() bool { return !a.none && len(a.sources) == 0 && len(a.globs) == 0 }

// Sources returns the allowed source ids (none: all).
func (a Allow) Sources() []string { return slices.Clone(a.sources) }

// Namespaces returns the allowed namespace globs (none: all).
func (a Allow) Namespaces() []string {
	out := make([]string, len(a.globs))
	for i, g := range a.globs {
		out[i] = g.String()
	}
	return out
}

// Source reports whether the data source id is allowed.
func (a Allow) Source(id string) bool {
	if a.none {
		return false
	}
	return len(a.sources) == 0 || slices.Contains(a.sources, id)
}

// Namespace reports whether one namespace is allowed: what a running
// trigger checks for every event and every write.
func (a Allow) Namespace(ns change.Namespace) bool {
	if a.none {
		return false
	}
	if len(a.globs) == 0 {
		return true
	}
	for _, g := range a.globs {
		if g.Match(ns) {
			return true
		}
	}
	return false
}

// Watch reports whether everything a database trigger selecting database
// db and collection coll ("" meaning all) can see is allowed. A trigger on
// a whole database needs a glob covering all of its collections ("shop.*"
// or "shop"); a trigger on the whole deployment needs "*.*" or "*".
func (a Allow) Watch(db, coll string) bool {
	if a.none {
		return false
	}
	if len(a.pats) == 0 {
		return true
	}
	for _, p := range a.pats {
		dbOK := p.db == "*"
		if db != "" {
			dbOK = matchPart(p.db, db)
		}
		collOK := p.coll == "*"
		if coll != "" {
			collOK = matchPart(p.coll, coll)
		}
		if dbOK && collOK {
			return true
		}
	}
	return false
}

// Glob reports whether every namespace the glob g can match is allowed.
// Deciding that for any two globs is hard, so a part of g counts as covered
// when the allowed part is "*", the same pattern, or matches it as a
// literal name: "shop.*" covers "shop.orders" and "shop.*" but not
// "sho?.*". Narrow the glob, or widen the allow-list, when this refuses a
// glob that is in fact inside it.
func (a Allow) Glob(g string) bool {
	if a.none {
		return false
	}
	if len(a.pats) == 0 {
		return true
	}
	w := splitPattern(g)
	for _, p := range a.pats {
		if covers(p.db, w.db) && covers(p.coll, w.coll) {
			return true
		}
	}
	return false
}

// String describes the allow-list for error messages.
func (a Allow) String() string {
	if a.none {
		return "nothing: the user has no token"
	}
	src, ns := "any", "any"
	if len(a.sources) > 0 {
		src = strings.Join(a.sources, ", ")
	}
	if len(a.globs) > 0 {
		ns = strings.Join(a.Namespaces(), ", ")
	}
	return fmt.Sprintf("sources: %s; namespaces: %s", src, ns)
}

func (a Allow) equal(b Allow) bool {
	return a.none == b.none && slices.Equal(a.sources, b.sources) && slices.Equal(a.Namespaces(), b.Namespaces())
}

func covers(allowed, sub string) bool {
	return allowed == "*" || allowed == sub || (!strings.ContainsAny(sub, `*?[\`) && matchPart(allowed, sub))
}

// matchPart is path.Match on one side of a namespace; '/' never occurs in
// namespaces, so path's special treatment of it does not matter.
func matchPart(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}
