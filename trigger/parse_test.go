package trigger_test

import (
	"strings"
	"testing"

	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/trigger"
)

func TestParseExtJSON(t *testing.T) {
	deep := func(open, close string, n int) string {
		return `{"a": ` + strings.Repeat(open, n) + "1" + strings.Repeat(close, n) + "}"
	}
	for _, tc := range []struct {
		name, in string
		want     string // "" means accepted
	}{
		{"Relaxed", `{"qty": {"$gte": 5}, "at": {"$date": "2026-01-01T00:00:00Z"}}`, ""},
		{"BracketsInStrings", `{"s": "[[[[{{{{\"]]]"}`, ""},
		{"AtTheDepthLimit", deep("[", "]", trigger.MaxDepth), ""},
		{"ArraysTooDeep", deep("[", "]", trigger.MaxDepth+1), "nested deeper than 100"},
		{"ArraysFarTooDeep", deep("[", "]", 1<<20), "nested deeper than 100"},
		{"DocumentsTooDeep", deep(`{"a": `, "}", trigger.MaxDepth+1), "nested deeper than 100"},
		{"NotJSON", `{"a": `, "not an Extended JSON document"},
		{"Array", `[1]`, "not an Extended JSON document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := trigger.ParseExtJSON(tc.in)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("ParseExtJSON: %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzParseExtJSON feeds arbitrary text to the parser of API documents
// (match, project, events, details): whatever it accepts must encode and
// be matchable without exhausting the stack.
func FuzzParseExtJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": [1, {"b": "c"}]}`, `{"$and": [{"a": 1}]}`, `{"s": "\"]"}`, `[[[`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := trigger.ParseExtJSON(s)
		if err != nil {
			return
		}
		if _, err := bson.Marshal(d); err != nil {
			return
		}
		_, _ = mongokit.Match(&bson.D{{Key: "a", Value: int32(1)}, {Key: "b", Value: bson.A{"x", bson.D{{Key: "c", Value: 2.5}}}}}, &d)
	})
}
