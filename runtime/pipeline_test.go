package runtime_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/replicate"
)

// TestGodwit_PipelineStreamsAfterItsInitialSync: a pipeline copies what its
// source held before godwit started, then applies what is written later.
// Its runner is a component that depends on the initial sync, which
// depends on the source: an initial sync that finishes at once must still
// let the runner start.
func TestGodwit_PipelineStreamsAfterItsInitialSync(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	src := openSide(t, ctx, dir, "a.lungo")
	orders := src.Client.Database("shop").Collection("orders")
	for i := range 5 {
		if _, err := orders.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources: [{id: a, uri: "lungo:a.lungo"}]
sinks: [{id: copy, type: replicate, on_failure: halt, replicate: {source: a, target: "lungo:b.lungo"}}]
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	d, stop := runGodwit(t, ctx, cfg)
	defer stop()
	for i := 5; i < 8; i++ {
		if _, err := orders.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	// The three later inserts are the outbox's first events.
	if err := d.Runners()[0].WaitAcked(ctx, 3); err != nil {
		t.Fatalf("the pipeline did not stream: %v; status %+v", err, d.Status())
	}
	dst := openSide(t, ctx, dir, "b.lungo")
	rep, err := replicate.Verify(ctx, src.Client, dst.Client, replicate.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Equal {
		t.Fatalf("target differs from the source: %v", rep)
	}
	if st := d.Status(); len(st.Pipelines) != 1 || st.Pipelines[0].Phase != replicate.PhaseStreaming {
		t.Fatalf("pipelines %+v", st.Pipelines)
	}
}
