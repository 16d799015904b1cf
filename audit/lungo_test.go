package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// TestSink_embeddedEngine drives real change events of the embedded engine
// through a real outbox and runner into the audit sink.
func TestSink_embeddedEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	client, engine, err := lungo.Open(ctx, lungo.Options{Store: lungo.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	stream, err := client.Watch(ctx, bson.A{}) // the engine takes no pipeline
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(ctx)

	shop := client.Database("shop")
	var docs []any
	for i := range 20 {
		docs = append(docs, bson.M{"_id": i + 1, "total": i})
	}
	if _, err := shop.Collection("orders").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Collection("orders").DeleteMany(ctx, bson.M{}); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Collection("carts").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	if err := shop.Collection("carts").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Collection("drafts").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	rename := bson.D{{Key: "renameCollection", Value: "shop.drafts"}, {Key: "to", Value: "shop.archive"}}
	if err := client.Database("admin").RunCommand(ctx, rename).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Database("staging").Collection("x").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	if err := client.Database("staging").Drop(ctx); err != nil {
		t.Fatal(err)
	}

	var raws [][]byte
	for stream.Next(ctx) {
		var raw bson.Raw
		if err := stream.Decode(&raw); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
		if op, _ := raw.Lookup("operationType").StringValueOK(); op == change.OpDropDatabase {
			break
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	last, err := ob.Append(ctx, "embedded", raws, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.jsonl")
	cfg := audit.Config{Path: path, MassDelete: audit.MassDelete{Threshold: 5, Window: 10 * time.Second}}
	s, err := audit.Open(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := sink.NewRunner(outbox.SinkCursor("audit"), ob, s, sink.RunnerConfig{BatchSize: 4}, zerolog.Nop())
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	if err := r.WaitAcked(ctx, last); err != nil {
		t.Fatal(err)
	}
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)

	recs := readLog(t, path)
	var got []string
	for _, r := range recs {
		s := r.Class + " " + r.NS.String()
		if r.Burst != nil {
			s += fmt.Sprintf(" %d", r.Burst.Count)
		}
		if r.To != nil {
			s += " -> " + r.To.String()
		}
		got = append(got, s)
	}
	// The burst is written when a later event shows its window closed,
	// or at Close if all events fell within it.
	want1 := "[mass_delete shop.orders 20 drop shop.carts rename shop.drafts -> shop.archive drop staging.x dropDatabase staging]"
	want2 := "[drop shop.carts rename shop.drafts -> shop.archive drop staging.x dropDatabase staging mass_delete shop.orders 20]"
	if fmt.Sprint(got) != want1 && fmt.Sprint(got) != want2 {
		t.Fatalf("records %v", got)
	}
}
