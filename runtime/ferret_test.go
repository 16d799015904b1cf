package runtime_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/internal/ferrettest"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
	"github.com/godwit-dev/godwit/trigger"
)

// TestGodwit_FerretDB runs godwit with every role a server without change
// streams can take played by FerretDB, a MongoDB-wire server nobody here
// wrote: the metadata store (functions and triggers survive a restart), the
// audit sink's mirror, and a replication target; the replica is checked
// with verify's comparison.
func TestGodwit_FerretDB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fdb := ferrettest.Start(t)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
metadata: {uri: %[1]q}
sources: [{id: shop, uri: "lungo:source.lungo"}]
sinks:
  - {id: audit, type: audit, audit: {path: audit.jsonl, mirror: {uri: %[1]q, database: audit_mirror, collection: records}}}
  - {id: replica, type: replicate, on_failure: halt, replicate: {source: shop, target: %[1]q, include: ["shop.*"]}}
`, fdb.URI)

	src := runtimetest.Source(t, dir, "source.lungo")
	orders := src.Database("shop").Collection("orders")
	for i := range 50 {
		if _, err := orders.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "n", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	srv := runtimetest.Start(t, dir, yaml)
	wasm, err := guests.Wasm("notifier")
	if err != nil {
		t.Fatal(err)
	}
	fn, err := srv.Triggers.CreateFunction(ctx, trigger.Function{UserID: "ann", Name: "notifier", Wasm: wasm})
	if err != nil {
		t.Fatalf("create a function in a FerretDB metadata store: %v", err)
	}
	trg, err := srv.Triggers.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "notify-items", Type: trigger.TypeDatabase,
		FunctionID: fn.ID, Enabled: false, Database: &trigger.DatabaseConfig{DataSource: "shop", Database: "inventory", Collection: "items"}})
	if err != nil {
		t.Fatalf("create a trigger in a FerretDB metadata store: %v", err)
	}
	// Streaming: updates, deletes and a dropped collection (audited).
	for i := range 20 {
		if _, err := orders.UpdateOne(ctx, bson.D{{Key: "_id", Value: i}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: -i - 1}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := orders.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: 40}}}}); err != nil {
		t.Fatal(err)
	}
	tmp := src.Database("shop").Collection("tmp")
	if _, err := tmp.InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until capture stored every event written above (20 updates that
	// each change a document, 10 deletes, the insert and the drop), then
	// until every sink acked them: the outbox's last sequence read right
	// after the writes can predate the last of them.
	const written = 20 + 10 + 2
	var last uint64
	if err := srv.Outbox().WaitUntil(ctx, func(v outbox.View) (bool, error) {
		st, _, err := v.Source("shop")
		last = v.Last()
		return st.Captured >= written, err
	}); err != nil {
		t.Fatalf("capture of the writes: %v (%+v)", err, srv.Status())
	}
	if errs := srv.WaitDelivered(ctx, last); len(errs) != 0 {
		t.Fatalf("sinks: %v (%+v)", errs, srv.Status())
	}
	srv.Stop() // the audit mirror catches up at close

	// The metadata store kept the function (its wasm included) and the
	// trigger across the restart.
	srv = runtimetest.Start(t, dir, yaml)
	got, err := srv.Triggers.GetFunction(ctx, fn.ID, true)
	if err != nil || !bytes.Equal(got.Wasm, wasm) {
		t.Fatalf("function after restart: %v (wasm %d bytes, want %d)", err, len(got.Wasm), len(wasm))
	}
	trigs, err := srv.Triggers.QueryTriggers(ctx, trigger.TriggerQuery{})
	if err != nil || len(trigs) != 1 || trigs[0].ID != trg.ID {
		t.Fatalf("triggers after restart: %v %+v", err, trigs)
	}
	srv.Stop()

	dst, err := mongodb.Open(ctx, fdb.URI, "")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(context.Background())
	rep, err := replicate.Verify(ctx, src, dst.Client, replicate.VerifyOptions{Include: []string{"shop.*"}})
	if err != nil || !rep.Equal {
		t.Fatalf("replica in FerretDB: %v %+v", err, rep)
	}
	mirrored, err := dst.Client.Database("audit_mirror").Collection("records").CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(yaml), dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := countLines(t, cfg.Sinks[0].Settings.(*audit.Config).Path); mirrored != int64(n) || n < 2 {
		t.Fatalf("audit mirror in FerretDB holds %d records, the log %d (want at least the drop and the daemon's start)", mirrored, n)
	}
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	return n
}
