package events_test

import (
	"testing"

	"github.com/godwit-dev/godwit/change/filtertest"
	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/outbox"
)

// TestRequest_Filter runs the shared filter table against what a
// subscription sends. A subscription's operation list is exact: it cannot
// ask for operation types godwit does not know.
func TestRequest_Filter(t *testing.T) {
	can := func(c filtertest.Case) bool { return !c.KeepUnknown || len(c.Operations) == 0 }
	filtertest.Run(t, can, func(t *testing.T, c filtertest.Case) bool {
		req := events.Request{Namespaces: c.Include, Ignore: c.Ignore, Operations: c.Operations}
		ok, err := events.Matches(req, filtertest.MetadataDB, outbox.Record{Seq: 1, Source: "src", Raw: c.Raw()})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
}
