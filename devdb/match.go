package devdb

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

var registerOnce sync.Once

// registerOperators adds $regex to lungo's query matcher, which lacks it;
// godwit's change-stream pipeline matches namespace globs with $regex.
// lungo keeps operators in a package-level table, so this also enables
// $regex for other users of lungo in this process (it only adds).
func registerOperators() {
	registerOnce.Do(func() {
		mongokit.ExpressionQueryOperators["$regex"] = matchRegex
	})
}

var regexCache sync.Map // pattern+options → *regexp.Regexp

func compileRegex(rx primitive.Regex) (*regexp.Regexp, error) {
	key := rx.Options + "/" + rx.Pattern
	if re, ok := regexCache.Load(key); ok {
		return re.(*regexp.Regexp), nil
	}
	flags := ""
	for _, o := range rx.Options {
		switch o {
		case 'i', 'm', 's':
			flags += string(o)
		case 'x', 'u', 'l':
		default:
			return nil, fmt.Errorf("$regex: unknown option %q", o)
		}
	}
	pattern := rx.Pattern
	if flags != "" {
		pattern = "(?" + flags + ")" + pattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("$regex %q: %v (devdb uses Go's RE2 syntax)", rx.Pattern, err)
	}
	regexCache.Store(key, re)
	return re, nil
}

func matchRegex(_ mongokit.Context, doc bsonkit.Doc, name, path string, v any) error {
	var rx primitive.Regex
	switch p := v.(type) {
	case string:
		rx.Pattern = p
	case primitive.Regex:
		rx = p
	default:
		return fmt.Errorf("%s: expected a string or regular expression", name)
	}
	re, err := compileRegex(rx)
	if err != nil {
		return err
	}
	value, _ := bsonkit.All(doc, path, true, true)
	test := func(f any) bool {
		switch s := f.(type) {
		case string:
			return re.MatchString(s)
		case primitive.Symbol:
			return re.MatchString(string(s))
		}
		return false
	}
	if arr, ok := value.(bson.A); ok {
		for _, f := range arr {
			if test(f) {
				return nil
			}
		}
	}
	if test(value) {
		return nil
	}
	return mongokit.ErrNotMatched
}

// prepareQuery rewrites {$regex: s, $options: o} and {field: /re/} into
// the {$regex: Regex} form the registered operator understands.
func prepareQuery(q bson.D) bson.D {
	out := make(bson.D, 0, len(q))
	for _, e := range q {
		switch v := e.Value.(type) {
		case primitive.Regex:
			if !strings.HasPrefix(e.Key, "$") {
				e.Value = bson.D{{Key: "$regex", Value: v}}
			}
		case bson.D:
			e.Value = prepareExpr(v)
		case bson.A:
			a := make(bson.A, len(v))
			for i, x := range v {
				if d, ok := x.(bson.D); ok {
					a[i] = prepareQuery(d)
				} else {
					a[i] = x
				}
			}
			e.Value = a
		}
		out = append(out, e)
	}
	return out
}

func prepareExpr(d bson.D) bson.D {
	pattern, hasRegex := lookup(d, "$regex"), false
	for _, e := range d {
		if e.Key == "$regex" {
			hasRegex = true
		}
	}
	if !hasRegex {
		return prepareQuery(d)
	}
	rx := primitive.Regex{}
	switch p := pattern.(type) {
	case string:
		rx.Pattern = p
	case primitive.Regex:
		rx = p
	}
	if o, ok := lookup(d, "$options").(string); ok {
		rx.Options = o
	}
	out := bson.D{}
	for _, e := range d {
		switch e.Key {
		case "$regex":
			out = append(out, bson.E{Key: "$regex", Value: rx})
		case "$options":
		default:
			out = append(out, e)
		}
	}
	return out
}
