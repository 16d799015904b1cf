package replicate_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

func TestSink_Conformance(t *testing.T) {
	target := func(t *testing.T, dir string) *mongodb.Conn {
		t.Helper()
		// Both opens of one file share an engine: a reopened sink finds
		// what the previous one wrote, as after a restart.
		c, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, "target.lungo"), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	no := false
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			cfg := replicate.Config{ID: "conf-rep", Source: "conf", Target: "lungo:target.lungo", InitialSync: &no}
			return openSink(t, cfg, target(t, dir))
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			c := target(t, dir)
			cur, err := c.Client.Database("conf").Collection("items").Find(context.Background(), bson.D{},
				options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
			if err != nil {
				t.Fatal(err)
			}
			var docs []struct {
				ID int64 `bson:"_id"`
				N  int64 `bson:"n"`
			}
			if err := cur.All(context.Background(), &docs); err != nil {
				t.Fatal(err)
			}
			if len(docs) != len(want) {
				t.Fatalf("target holds %d documents, want %d", len(docs), len(want))
			}
			for i, d := range docs {
				if d.ID != int64(i+1) || d.N != d.ID*10 {
					t.Fatalf("document %d is %+v, want _id %d n %d", i, d, i+1, (i+1)*10)
				}
			}
		},
	})
}
