package capture_test

import (
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/filtertest"
)

// filterConfig is the capture configuration of a filtertest case, when
// capture can say it: capture lists operation types, always keeps
// invalidate and unknown types, so a case with operations must have
// KeepUnknown and invalidate in its list.
func filterConfig(t *testing.T, c filtertest.Case) capture.Config {
	f, err := c.Filter()
	if err != nil {
		t.Fatal(err)
	}
	cfg := capture.Config{Filter: change.Filter{Include: f.Include, Ignore: f.Ignore}, MetadataDatabase: filtertest.MetadataDB}
	for _, op := range c.Operations {
		if op != change.OpInvalidate {
			cfg.OperationTypes = append(cfg.OperationTypes, op)
		}
	}
	return cfg
}

func captureCan(c filtertest.Case) bool {
	return len(c.Operations) == 0 ||
		c.KeepUnknown && slices.Contains(c.Operations, change.OpInvalidate) && len(c.Operations) > 1
}

// TestConfig_Keep runs the shared filter table against what capture stores.
func TestConfig_Keep(t *testing.T) {
	filtertest.Run(t, captureCan, func(t *testing.T, c filtertest.Case) bool {
		return filterConfig(t, c).Keep(c.Event())
	})
}

// TestPipeline_FilterTable runs the shared filter table against the $match
// a real server gets: it keeps what Keep keeps.
func TestPipeline_FilterTable(t *testing.T) {
	filtertest.Run(t, captureCan, func(t *testing.T, c filtertest.Case) bool {
		match := capture.Pipeline(filterConfig(t, c))[0].(bson.D)[0].Value.(bson.D)
		var doc bson.D
		if err := bson.Unmarshal(c.Raw(), &doc); err != nil {
			t.Fatal(err)
		}
		return evalQuery(t, doc, match)
	})
}
