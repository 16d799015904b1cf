package change

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
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
// any run of characters ('.' and '/' included), '?' one character, '[...]' a
// class ("[a-c]", "[!x]" or "[^x]" for "not x", "[]a]" for ']' or 'a'), and
// '\' makes the next character literal. Characters are Unicode code points:
// "donn?es" matches "données". The pattern is split at its first '.': the
// left side matches the database name and the right side the whole
// collection name, which may itself contain dots (so "shop.*" matches
// "shop.orders.archive"). A pattern without '.' matches a database and every
// collection in it.
//
// Glob also translates itself into the regular expression a server's $match
// uses (DBRegex, CollRegex): both keep exactly the same names.
type Glob struct {
	pattern string
	db      []globTok
	coll    []globTok
	hasColl bool // false: any collection
}

type tokKind uint8

const (
	tokLit   tokKind = iota // one literal rune
	tokAny                  // '?'
	tokStar                 // '*'
	tokClass                // '[...]'
)

type globTok struct {
	kind   tokKind
	r      rune
	neg    bool
	ranges [][2]rune // class members as inclusive ranges
}

// ParseGlob validates and compiles a namespace glob.
func ParseGlob(p string) (Glob, error) {
	if p == "" {
		return Glob{}, fmt.Errorf("empty namespace glob")
	}
	if !utf8.ValidString(p) {
		return Glob{}, fmt.Errorf("namespace glob %q is not valid UTF-8", p)
	}
	db, coll, hasColl := strings.Cut(p, ".")
	if db == "" {
		return Glob{}, fmt.Errorf("namespace glob %q: database part is empty (write '*.%s' for every database)", p, coll)
	}
	if hasColl && coll == "" {
		return Glob{}, fmt.Errorf("namespace glob %q: collection part is empty (write '%s.*' for every collection)", p, db)
	}
	g := Glob{pattern: p, hasColl: hasColl}
	var err error
	if g.db, err = parsePart(db); err != nil {
		return Glob{}, fmt.Errorf("namespace glob %q: bad pattern %q: %v", p, db, err)
	}
	if hasColl {
		if g.coll, err = parsePart(coll); err != nil {
			return Glob{}, fmt.Errorf("namespace glob %q: bad pattern %q: %v", p, coll, err)
		}
	}
	return g, nil
}

func parsePart(s string) ([]globTok, error) {
	rs := []rune(s)
	var toks []globTok
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case 0:
			return nil, fmt.Errorf("a namespace never contains the NUL character")
		case '*':
			if len(toks) == 0 || toks[len(toks)-1].kind != tokStar {
				toks = append(toks, globTok{kind: tokStar})
			}
		case '?':
			toks = append(toks, globTok{kind: tokAny})
		case '\\':
			if i+1 == len(rs) {
				return nil, fmt.Errorf(`ends with a lone '\' (write '\\' to match a backslash)`)
			}
			i++
			if rs[i] == 0 {
				return nil, fmt.Errorf("a namespace never contains the NUL character")
			}
			toks = append(toks, globTok{kind: tokLit, r: rs[i]})
		case '[':
			t, n, err := parseClass(rs[i+1:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += n
		default:
			toks = append(toks, globTok{kind: tokLit, r: r})
		}
	}
	return toks, nil
}

// parseClass reads a class after its '['. It returns the class and how many
// runes it used, the closing ']' included.
func parseClass(rs []rune) (globTok, int, error) {
	t := globTok{kind: tokClass}
	i := 0
	if i < len(rs) && (rs[i] == '!' || rs[i] == '^') {
		t.neg = true
		i++
	}
	first := true
	member := func() (rune, error) {
		r := rs[i]
		if r == '\\' {
			if i+1 == len(rs) {
				return 0, errOpenClass
			}
			i++
			r = rs[i]
		}
		if r == 0 {
			return 0, fmt.Errorf("a namespace never contains the NUL character")
		}
		i++
		return r, nil
	}
	for {
		if i == len(rs) {
			return t, 0, errOpenClass
		}
		if rs[i] == ']' && !first {
			return t, i + 1, nil
		}
		first = false
		lo, err := member()
		if err != nil {
			return t, 0, err
		}
		hi := lo
		if i+1 < len(rs) && rs[i] == '-' && rs[i+1] != ']' {
			i++
			if hi, err = member(); err != nil {
				return t, 0, err
			}
			if hi < lo {
				return t, 0, fmt.Errorf("class range %q-%q is out of order (write the lower character first)", lo, hi)
			}
		}
		t.ranges = append(t.ranges, [2]rune{lo, hi})
	}
}

var errOpenClass = errors.New(`a class opened by '[' is never closed (write '\[' for a literal '[')`)

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
	if !g.hasColl || ns.Coll == "" {
		return true
	}
	return matchPart(g.coll, ns.Coll)
}

// HasCollection reports whether the glob has a collection part.
func (g Glob) HasCollection() bool { return g.hasColl }

// DBRegex returns a regular expression that matches exactly the database
// names the glob's database part matches, read the same way by PCRE (as
// MongoDB's $regex reads it) and by Go's regexp.
func (g Glob) DBRegex() string { return regex(g.db) }

// CollRegex returns a regular expression that matches exactly the
// collection names the glob's collection part matches; "" when the glob has
// no collection part.
func (g Glob) CollRegex() string {
	if !g.hasColl {
		return ""
	}
	return regex(g.coll)
}

func (t globTok) matches(r rune) bool {
	switch t.kind {
	case tokLit:
		return r == t.r
	case tokAny:
		return true
	case tokClass:
		in := false
		for _, rg := range t.ranges {
			if rg[0] <= r && r <= rg[1] {
				in = true
				break
			}
		}
		return in != t.neg
	}
	return false
}

// matchPart matches a whole name rune by rune, backtracking to the last '*'.
func matchPart(toks []globTok, name string) bool {
	rs := []rune(name)
	ti, ni := 0, 0
	star, starN := -1, 0
	for ni < len(rs) {
		switch {
		case ti < len(toks) && toks[ti].kind == tokStar:
			star, starN = ti, ni
			ti++
		case ti < len(toks) && toks[ti].matches(rs[ni]):
			ti++
			ni++
		case star >= 0:
			starN++
			ti, ni = star+1, starN
		default:
			return false
		}
	}
	for ti < len(toks) && toks[ti].kind == tokStar {
		ti++
	}
	return ti == len(toks)
}

// regex writes tokens as a regular expression that means the same in PCRE
// (UTF mode, as MongoDB compiles $regex) and in Go's regexp:
//
//   - "(?s)" makes '.' match every code point, '\n' included, as '?' and '*'
//     do; both dialects read it the same.
//   - "\A" and "\z" anchor at the very start and end: PCRE's '$' would also
//     match before a final newline.
//   - ASCII letters and digits stand for themselves; other printable ASCII
//     characters are escaped with '\' (in both dialects "\" followed by a
//     non-alphanumeric ASCII character is that character, inside a class too);
//     ASCII control characters are written "\x{HH}".
//   - Other code points are written literally as UTF-8: no metacharacter of
//     either dialect is outside ASCII, and both read a UTF-8 sequence as one
//     code point (PCRE in UTF mode), so '.' and classes count code points.
func regex(toks []globTok) string {
	var sb strings.Builder
	sb.WriteString(`(?s)\A`)
	for _, t := range toks {
		switch t.kind {
		case tokLit:
			quoteRune(&sb, t.r)
		case tokAny:
			sb.WriteString(".")
		case tokStar:
			sb.WriteString(".*")
		case tokClass:
			sb.WriteString("[")
			if t.neg {
				sb.WriteString("^")
			}
			for _, rg := range t.ranges {
				quoteRune(&sb, rg[0])
				if rg[1] != rg[0] {
					sb.WriteString("-")
					quoteRune(&sb, rg[1])
				}
			}
			sb.WriteString("]")
		}
	}
	sb.WriteString(`\z`)
	return sb.String()
}

func quoteRune(sb *strings.Builder, r rune) {
	switch {
	case r >= utf8.RuneSelf:
		sb.WriteRune(r)
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		sb.WriteRune(r)
	case r < 0x20 || r == 0x7f:
		fmt.Fprintf(sb, `\x{%02X}`, r)
	default:
		sb.WriteByte('\\')
		sb.WriteRune(r)
	}
}

// QuoteGlob returns a glob part that matches exactly the name s: every
// metacharacter ('*', '?', '[', ']', '\') is escaped. It quotes one part,
// a database or a collection name; join the parts with '.' yourself.
func QuoteGlob(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// ExactGlob returns the glob that matches exactly ns, as an exact name
// means it: every character literal, none a metacharacter. ns.Coll == ""
// matches every collection of ns.DB. Unlike ParseGlob it accepts any name,
// even one a server would refuse (a database name with '.'), which then
// simply matches nothing.
func ExactGlob(ns Namespace) Glob {
	lit := func(s string) []globTok {
		var toks []globTok
		for _, r := range s {
			toks = append(toks, globTok{kind: tokLit, r: r})
		}
		return toks
	}
	g := Glob{pattern: QuoteGlob(ns.DB), db: lit(ns.DB)}
	if ns.Coll != "" {
		g.pattern += "." + QuoteGlob(ns.Coll)
		g.coll, g.hasColl = lit(ns.Coll), true
	}
	return g
}
