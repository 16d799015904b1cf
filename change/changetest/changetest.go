// Package changetest loads the recorded real-format change events in
// change/testdata/real-events.json for tests in any package.
package changetest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"go.mongodb.org/mongo-driver/bson"
)

var (
	once   sync.Once
	events map[string]bson.Raw
	err    error
)

// Event returns the recorded event with the given name as raw BSON. It
// panics on an unknown name: fixtures are part of the test.
func Event(name string) bson.Raw {
	once.Do(load)
	if err != nil {
		panic(err)
	}
	e, ok := events[name]
	if !ok {
		panic(fmt.Sprintf("changetest: no recorded event %q", name))
	}
	return append(bson.Raw(nil), e...)
}

// Names returns the names of all recorded events.
func Names() []string {
	once.Do(load)
	var out []string
	for n := range events {
		out = append(out, n)
	}
	return out
}

func load() {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "testdata", "real-events.json")
	data, e := os.ReadFile(path)
	if e != nil {
		err = e
		return
	}
	var m map[string]json.RawMessage
	if err = json.Unmarshal(data, &m); err != nil {
		return
	}
	events = map[string]bson.Raw{}
	for k, v := range m {
		if k == "_comment" {
			continue
		}
		var raw bson.Raw
		if err = bson.UnmarshalExtJSON(v, true, &raw); err != nil {
			err = fmt.Errorf("%s: %w", k, err)
			return
		}
		events[k] = raw
	}
}
