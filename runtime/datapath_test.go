package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/runtime"
)

// TestGodwit_TwoWayReplication configures A↔B as a user would (two sources,
// two bidirectional replicate sinks) and writes on both sides: both converge,
// and neither capture stores the other side's replicated writes (no echo).
func TestGodwit_TwoWayReplication(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources:
  - {id: a, uri: "lungo:a.lungo"}
  - {id: b, uri: "lungo:b.lungo"}
sinks:
  # Two empty sides: no initial copy (docs/replicate.md, two-way).
  - {id: a2b, type: replicate, on_failure: halt, replicate: {source: a, target: "lungo:b.lungo", bidirectional: true, initial_sync: false}}
  - {id: b2a, type: replicate, on_failure: halt, replicate: {source: b, target: "lungo:a.lungo", bidirectional: true, initial_sync: false}}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	d, stop := runGodwit(t, ctx, cfg)
	defer stop()
	a, b := openSide(t, ctx, dir, "a.lungo"), openSide(t, ctx, dir, "b.lungo")

	// User writes: inserts on both sides, then updates and deletes of
	// documents that came from the other side.
	writes := map[string]int{}
	write := func(side string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		writes[side]++
	}
	ordersA := a.Client.Database("shop").Collection("orders")
	ordersB := b.Client.Database("shop").Collection("orders")
	for i := range 20 {
		_, err := ordersA.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "from", Value: "a"}})
		write("a", err)
		_, err = ordersB.InsertOne(ctx, bson.D{{Key: "_id", Value: 100 + i}, {Key: "from", Value: "b"}})
		write("b", err)
	}
	waitConverged(t, ctx, d, a, b)
	for i := range 5 {
		// B updates documents that came from A; A deletes ones from B.
		_, err := ordersB.UpdateOne(ctx, bson.M{"_id": i}, bson.M{"$set": bson.M{"touched_by": "b"}})
		write("b", err)
		_, err = ordersA.DeleteOne(ctx, bson.M{"_id": 100 + i})
		write("a", err)
	}
	waitConverged(t, ctx, d, a, b)

	st := d.Status()
	for _, s := range st.Sources {
		if s.Captured != uint64(writes[s.ID]) {
			t.Errorf("source %s captured %d events for %d user writes: replicated writes were captured again (echo)", s.ID, s.Captured, writes[s.ID])
		}
	}
	if len(st.Pipelines) != 2 {
		t.Fatalf("status lists %d pipelines", len(st.Pipelines))
	}
	for _, p := range st.Pipelines {
		if p.Phase != replicate.PhaseStreaming || p.LastError != "" {
			t.Errorf("pipeline %s: %+v", p.Pipeline, p)
		}
	}
}

// runGodwit opens and runs godwit on cfg until its sources are ready; stop
// stops and closes it.
func runGodwit(t *testing.T, ctx context.Context, cfg *config.Config) (d *runtime.Godwit, stop func()) {
	t.Helper()
	d, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	stop = func() {
		cancel()
		<-done
		if err := d.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	for _, s := range d.Sources() {
		select {
		case <-s.Ready():
		case <-ctx.Done():
			stop()
			t.Fatal("sources did not start")
		}
	}
	return d, stop
}

// openSide opens one side's embedded deployment file in dir.
func openSide(t *testing.T, ctx context.Context, dir, file string) *mongodb.Conn {
	t.Helper()
	c, err := mongodb.Open(ctx, "lungo:"+filepath.Join(dir, file), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// waitConverged waits until every sink acked everything captured so far and
// both sides hold the same documents.
func waitConverged(t *testing.T, ctx context.Context, d *runtime.Godwit, a, b *mongodb.Conn) {
	t.Helper()
	for {
		last := d.Outbox().LastSeq()
		for _, r := range d.Runners() {
			if err := r.WaitAcked(ctx, last); err != nil {
				st, _ := json.MarshalIndent(d.Status(), "", "  ")
				t.Fatalf("%v\nstatus: %s", err, st)
			}
		}
		rep, err := replicate.Verify(ctx, a.Client, b.Client, replicate.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Equal && d.Outbox().LastSeq() == last {
			return
		}
		if err := d.Outbox().Wait(ctx, last); err != nil {
			t.Fatalf("sides did not converge: %v\n%s", err, fmt.Sprint(rep))
		}
	}
}

// TestGodwit_ConflictIsAudited makes both sides change one document while
// godwit is down: after the restart the later write wins on both sides and
// the losing one is in the audit log as a replication_conflict, once.
func TestGodwit_ConflictIsAudited(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources:
  - {id: a, uri: "lungo:a.lungo"}
  - {id: b, uri: "lungo:b.lungo"}
sinks:
  - {id: a2b, type: replicate, on_failure: halt, replicate: {source: a, target: "lungo:b.lungo", bidirectional: true, initial_sync: false}}
  - {id: b2a, type: replicate, on_failure: halt, replicate: {source: b, target: "lungo:a.lungo", bidirectional: true, initial_sync: false}}
  - {id: audit, type: audit, audit: {path: audit.jsonl}}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	d, stop := runGodwit(t, ctx, cfg)
	a, b := openSide(t, ctx, dir, "a.lungo"), openSide(t, ctx, dir, "b.lungo")
	ordersA := a.Client.Database("shop").Collection("orders")
	ordersB := b.Client.Database("shop").Collection("orders")
	if _, err := ordersA.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "v", Value: "first"}}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, ctx, d, a, b)
	stop()

	// Both sides change the document while godwit is down; B's write is
	// the later one.
	if _, err := ordersA.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ordersB.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": "b"}}); err != nil {
		t.Fatal(err)
	}
	d, stop = runGodwit(t, ctx, cfg)
	defer stop()
	waitConverged(t, ctx, d, a, b)
	for side, c := range map[string]*mongodb.Conn{"a": a, "b": b} {
		var doc struct{ V string }
		if err := c.Client.Database("shop").Collection("orders").FindOne(ctx, bson.M{"_id": 1}).Decode(&doc); err != nil || doc.V != "b" {
			t.Fatalf("side %s holds v=%q (%v), want the later write %q", side, doc.V, err, "b")
		}
	}

	f, err := os.Open(cfg.Sinks[2].Settings.(*audit.Config).Path) // resolved against data_dir
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var conflicts []audit.Record
	for r, err := range audit.Query(f, audit.Filter{Classes: []string{audit.ClassReplicationConflict}}) {
		if err != nil {
			t.Fatal(err)
		}
		conflicts = append(conflicts, r)
	}
	if len(conflicts) != 1 {
		t.Fatalf("%d replication_conflict records, want 1: %+v", len(conflicts), conflicts)
	}
	c := conflicts[0]
	if c.NS == nil || c.NS.String() != "shop.orders" || c.Source != "a" || !strings.Contains(c.Message, "pipeline a2b") ||
		!strings.Contains(c.Message, "last writer wins") {
		t.Fatalf("conflict record %+v, want a2b's losing update of shop.orders", c)
	}
}
