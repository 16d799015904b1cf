package capture

import (
	"fmt"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
)

// fragments reassembles events split by $changeStreamSplitLargeEvent. The
// server sends the fragments of one event consecutively, numbered 1..of;
// every fragment carries its own _id, and the last one's _id is the resume
// token of the whole event.
type fragments struct {
	of     int32
	next   int32
	fields bson.D
	seen   map[string]bool
}

func (f *fragments) empty() bool { return f.of == 0 }

// add takes one fragment; when it completes the event, it returns the
// reassembled raw event and true.
func (f *fragments) add(ev *change.Event) (bson.Raw, bool, error) {
	sp := ev.Split
	if f.of == 0 {
		if sp.Fragment != 1 {
			return nil, false, fmt.Errorf("fragment %d of %d arrived without fragment 1", sp.Fragment, sp.Of)
		}
		f.of, f.next, f.fields, f.seen = sp.Of, 1, nil, map[string]bool{}
	}
	if sp.Of != f.of || sp.Fragment != f.next {
		err := fmt.Errorf("expected fragment %d of %d, got %d of %d", f.next, f.of, sp.Fragment, sp.Of)
		f.of = 0
		return nil, false, err
	}
	elems, err := ev.Raw.Elements()
	if err != nil {
		return nil, false, err
	}
	for _, el := range elems {
		k := el.Key()
		if k == "_id" || k == "splitEvent" {
			continue
		}
		if f.seen[k] {
			f.of = 0
			return nil, false, fmt.Errorf("field %q appears in two fragments", k)
		}
		f.seen[k] = true
		f.fields = append(f.fields, bson.E{Key: k, Value: el.Value()})
	}
	f.next++
	if sp.Fragment < f.of {
		return nil, false, nil
	}
	whole := append(bson.D{{Key: "_id", Value: ev.Token}}, f.fields...)
	f.of = 0
	raw, err := bson.Marshal(whole)
	return raw, err == nil, err
}
