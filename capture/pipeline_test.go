package capture_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
)

// nsRunes are the characters random namespaces are made of: ASCII letters,
// every regular-expression metacharacter, '.', '/', a newline, and code
// points of two, three and four UTF-8 bytes.
var nsRunes = []rune("ab.z_-$/\\^|()+{}[]*?!\n éßü日本🦆Ω")

func randomName(r *rand.Rand, dots bool) string {
	n := 1 + r.IntN(6)
	var sb strings.Builder
	for sb.Len() == 0 || n > 0 {
		c := nsRunes[r.IntN(len(nsRunes))]
		if c == '.' && !dots {
			continue
		}
		sb.WriteRune(c)
		n--
	}
	return sb.String()
}

// globFor derives a glob from a name: some characters kept (escaped when
// special), some turned into '?', '*' or a class that does or does not
// contain them.
func globFor(r *rand.Rand, name string) string {
	var sb strings.Builder
	for _, c := range name {
		switch r.IntN(8) {
		case 0:
			sb.WriteString("?")
		case 1:
			sb.WriteString("*")
		case 2:
			neg := []string{"", "!", "^"}[r.IntN(3)]
			other := nsRunes[r.IntN(len(nsRunes))]
			sb.WriteString("[" + neg + escapeGlob(c) + escapeGlob(other) + "]")
		case 3:
			// ']' first in a class is literal: "[]a]".
			sb.WriteString("[]" + escapeGlob(c) + "]")
		default:
			sb.WriteString(escapeGlob(c))
		}
	}
	return sb.String()
}

func escapeGlob(c rune) string {
	if strings.ContainsRune(`*?[]\!^-`, c) {
		return `\` + string(c)
	}
	return string(c)
}

// TestPipeline_FilterEquivalence_Unicode is the property behind the
// pushed-down $match: for random Unicode namespaces and globs, the server
// keeps exactly the events the client-side filter keeps. evalQuery runs the
// $regex with Go's regexp: change.Glob's regex comment explains why its
// patterns read the same in PCRE (change's TestGlob_RegexAgreesWithPCRE
// checks that against PCRE2 itself where grep -P is installed).
func TestPipeline_FilterEquivalence_Unicode(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 13))
	// The namespaces of issue 13's R1 first, then random ones.
	names := []change.Namespace{{DB: "données", Coll: "clients"}, {DB: "données"}, {DB: "shop", Coll: "tmp\n"}}
	globs := []string{"données.*", "donn?es.c*", "shop.tmp?"}
	for range 80 {
		names = append(names, change.Namespace{DB: randomName(r, false), Coll: randomName(r, true)})
		if r.IntN(5) == 0 {
			names = append(names, change.Namespace{DB: randomName(r, false)})
		}
	}
	for range 100 {
		ns := names[r.IntN(len(names))]
		g := globFor(r, ns.DB)
		if r.IntN(4) > 0 {
			g += "." + globFor(r, ns.Coll)
		}
		globs = append(globs, g)
	}
	checked := 0
	for i := 0; i < len(globs); i++ {
		inc, err := change.ParseGlob(globs[i])
		if err != nil {
			continue
		}
		cfgs := []capture.Config{
			{Filter: change.Filter{Include: []change.Glob{inc}}},
			{Filter: change.Filter{Ignore: []change.Glob{inc}}},
		}
		if j := (i + 1) % len(globs); j != i {
			if other, err := change.ParseGlob(globs[j]); err == nil {
				cfgs = append(cfgs, capture.Config{Filter: change.Filter{Include: []change.Glob{other}, Ignore: []change.Glob{inc}}})
			}
		}
		for _, cfg := range cfgs {
			match := capture.Pipeline(cfg)[0].(bson.D)[0].Value.(bson.D)
			for _, ns := range names {
				nsDoc := bson.D{{Key: "db", Value: ns.DB}}
				if ns.Coll != "" {
					nsDoc = append(nsDoc, bson.E{Key: "coll", Value: ns.Coll})
				}
				raw, err := bson.Marshal(bson.D{{Key: "_id", Value: bson.D{{Key: "_data", Value: "00"}}},
					{Key: "operationType", Value: "insert"}, {Key: "ns", Value: nsDoc}})
				if err != nil {
					t.Fatal(err)
				}
				ev, err := change.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				var doc bson.D
				if err := bson.Unmarshal(raw, &doc); err != nil {
					t.Fatal(err)
				}
				if got, want := evalQuery(t, doc, match), cfg.Keep(ev); got != want {
					t.Fatalf("namespace %q, include %v exclude %v: server-side $match keeps=%v, client-side keeps=%v\n$match: %v",
						ns.String(), cfg.Filter.Include, cfg.Filter.Ignore, got, want, match)
				}
				checked++
			}
		}
	}
	if checked < 10000 {
		t.Fatalf("only %d namespace/filter pairs checked: the generator makes too few valid globs", checked)
	}
}

// TestPipeline_GlobClasses (issue 13 N6): classes with ']' in them, and
// negated ones, become valid regular expressions that keep what the glob
// keeps (before, "[\]]" became the unterminated class "[\]\]" and the
// server refused the whole stream).
func TestPipeline_GlobClasses(t *testing.T) {
	for _, glob := range []string{"[]a]b", `[\]]b`, "[!x]b", "[^x]b", "[a-]b"} {
		g, err := change.ParseGlob(glob)
		if err != nil {
			t.Fatalf("ParseGlob(%q): %v", glob, err)
		}
		cfg := capture.Config{Filter: change.Filter{Include: []change.Glob{g}}}
		match := capture.Pipeline(cfg)[0].(bson.D)[0].Value.(bson.D)
		for _, db := range []string{"]b", "ab", "xb", "-b", "éb", "b"} {
			doc := bson.D{{Key: "operationType", Value: "drop"}, {Key: "ns", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: "c"}}}}
			raw, _ := bson.Marshal(doc)
			ev, err := change.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := evalQuery(t, doc, match), cfg.Keep(ev); got != want {
				t.Errorf("glob %q, database %q: $match keeps=%v, client-side keeps=%v (%v)", glob, db, got, want, match)
			}
		}
	}
}
