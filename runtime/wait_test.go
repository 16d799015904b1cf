package runtime_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/runtime"
)

// WaitDelivered is the one wait for "everything captured so far has been
// handled": it returns once every sink's cursor reached the sequence, and
// otherwise names each sink that did not get there.
func TestGodwit_WaitDelivered(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	a := openSide(t, ctx, dir, "a.lungo")
	cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources:
  - {id: a, uri: "lungo:a.lungo"}
sinks:
  - {id: first, type: jsonl, jsonl: {path: first.jsonl}}
  - {id: second, type: jsonl, jsonl: {path: second.jsonl}}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		<-done
		_ = d.Close(context.Background())
	}()
	<-d.Sources()[0].Ready()

	const n = 20
	for i := range n {
		if _, err := a.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	ob := d.Outbox()
	var last uint64
	if err := ob.WaitUntil(ctx, func(v outbox.View) (bool, error) {
		st, _, err := v.Source("a")
		last = v.Last()
		return st.Captured >= n, err
	}); err != nil {
		t.Fatal(err)
	}

	if errs := d.WaitDelivered(ctx, last); len(errs) != 0 {
		t.Fatalf("WaitDelivered: %v", errs)
	}
	if err := ob.WaitUntil(ctx, func(v outbox.View) (bool, error) {
		for _, id := range []string{"first", "second"} {
			st, _, err := v.Sink(outbox.SinkCursor(id))
			if err != nil || st.Acked < last {
				t.Fatalf("sink %s acked %d after WaitDelivered(%d) returned (%v)", id, st.Acked, last, err)
			}
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}

	// A sequence nothing will reach: each sink is named when ctx ends (the
	// triggers, none here, have started: they add nothing).
	select {
	case <-d.Triggers.Started():
	case <-ctx.Done():
		t.Fatal("the trigger manager did not start")
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	errs := d.WaitDelivered(short, last+1)
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "first") || !strings.Contains(errs[1].Error(), "second") {
		t.Fatalf("WaitDelivered past the end: %v, want one error per sink, naming it", errs)
	}
}
