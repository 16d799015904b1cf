package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/outbox"
	eventpb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// sharedCompilationCache is the wasm compilation cache the tests' daemons
// share: the directory of servertest.SharedCompilationCache (not imported:
// this package drives the binary and links none of the daemon). Entries
// are keyed by module hash and runtime version, so sharing is safe across
// processes and builds.
var sharedCompilationCache = filepath.Join(os.TempDir(), "godwit-test-wazero-cache")

// startDevDB runs `godwit devdb` and returns it with the URI it printed.
func startDevDB(t *testing.T, data, listen string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(godwit, "devdb", "--data", data, "--listen", listen, "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	uri := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			uri <- sc.Text()
		}
		close(uri)
	}()
	select {
	case u, ok := <-uri:
		if !ok || !strings.HasPrefix(u, "mongodb://") {
			t.Fatalf("godwit devdb printed %q, want its URI:\n%s", u, stderr.String())
		}
		return cmd, u
	case <-time.After(2 * time.Minute):
		t.Fatalf("godwit devdb printed no URI:\n%s", stderr.String())
		return nil, ""
	}
}

// TestDevDB_Kill9WhileCapturing: godwit captures from a `godwit devdb`
// through mongodb://; devdb is killed with SIGKILL and restarted on the same
// address and data; capture resumes through the driver and the outbox holds
// every write exactly once, in order, and the daemon's subscribers see them.
func TestDevDB_Kill9WhileCapturing(t *testing.T) {
	dir := t.TempDir()
	devdb := newDevDBProc(t, dir, "devdb")
	uri := devdb.uri

	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources:
  - id: dev
    uri: %q
    database: shop
sinks:
  - id: events
    type: jsonl
    jsonl: {path: events.jsonl}
`, uri))
	d := startDaemon(t, cfg)
	d.waitLine(t, "change stream open")
	grpc := d.addr(t, "gRPC API listening")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("shop").Collection("orders")
	const n = 20

	// A live subscriber started before the writes returns once the daemon
	// captured n events (and holds retention until it read them).
	tail := exec.CommandContext(ctx, godwit, "events", "tail", "--addr", grpc, "--count", fmt.Sprint(n), "--json")
	tailErr, err := tail.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var tailOut syncBuffer
	tail.Stdout = &tailOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(tailErr)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "from sequence") {
				ok = true
				started <- true
			}
		}
		if !ok {
			started <- false
		}
	}()
	if !<-started {
		t.Fatalf("events tail did not start: %v", tail.Wait())
	}
	for i := range n {
		if i == n/2 {
			// kill -9 devdb; every acknowledged write is on disk.
			devdb.kill9AndRestart(t)
		}
		if _, err := coll.InsertOne(ctx, bson.M{"_id": i}); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if err := tail.Wait(); err != nil {
		t.Fatalf("events tail: %v\n%s\n%s", err, tailOut.String(), d.logs())
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}

	var got, want []string
	for i := range n {
		want = append(want, fmt.Sprintf("insert %d", i))
	}
	for _, line := range strings.Split(strings.TrimSpace(tailOut.String()), "\n") {
		var m eventpb.SubscribeResponse
		if err := protojson.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("tail line %q: %v", line, err)
		}
		if e := m.GetEvent(); e != nil {
			var key struct {
				ID int64 `bson:"_id"`
			}
			if err := bson.UnmarshalExtJSON([]byte(e.GetDocumentKey().GetJson()), false, &key); err != nil {
				t.Fatalf("event %d: %v: %s", e.GetSequence(), err, line)
			}
			got = append(got, fmt.Sprintf("%s %d", e.GetOperationType(), key.ID))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("outbox after devdb was killed and restarted:\n%s\nwant inserts 0..%d exactly once\ndaemon log:\n%s", strings.Join(got, "\n"), n-1, d.logs())
	}
}

// TestDevDB_ReplicatesBetweenTwoDevDBs: a replicate pipeline whose source
// and target are both `godwit devdb` processes reached through mongodb://
// (initial sync, then change-stream apply including a source transaction)
// leaves the target equal to the source by `godwit verify`.
func TestDevDB_ReplicatesBetweenTwoDevDBs(t *testing.T) {
	dir := t.TempDir()
	_, src := startDevDB(t, filepath.Join(dir, "a"), "127.0.0.1:0")
	_, dst := startDevDB(t, filepath.Join(dir, "b"), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := connectURI(ctx, t, src), connectURI(ctx, t, dst)
	orders := a.Database("shop").Collection("orders")
	for i := range 5 { // copied by the initial sync
		if _, err := orders.InsertOne(ctx, bson.M{"_id": i, "qty": i}); err != nil {
			t.Fatal(err)
		}
	}
	d, cfg := startReplicating(t, dir, src, dst, replicating{})

	for i := 5; i < 15; i++ {
		if _, err := orders.InsertOne(ctx, bson.M{"_id": i, "qty": i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := orders.UpdateMany(ctx, bson.M{"_id": bson.M{"$lt": 3}}, bson.M{"$inc": bson.M{"qty": 100}}); err != nil {
		t.Fatal(err)
	}
	if _, err := orders.DeleteOne(ctx, bson.M{"_id": 7}); err != nil {
		t.Fatal(err)
	}
	sess, err := a.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
		if _, err := orders.InsertOne(sc, bson.M{"_id": 20, "qty": 1}); err != nil {
			return nil, err
		}
		_, err := a.Database("shop").Collection("customers").InsertOne(sc, bson.M{"_id": "c1", "orders": bson.A{20}})
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
	sess.EndSession(ctx)
	streamedSentinelReaches(ctx, t, d, orders, b.Database("shop").Collection("orders"), "done")
	stopAndVerify(t, d, cfg)
	if n, _ := b.Database("shop").Collection("customers").CountDocuments(ctx, bson.M{}); n != 1 {
		t.Fatalf("target holds %d customers, want the one written in the source transaction", n)
	}
}

// replicating says how startReplicating replicates.
type replicating struct {
	twoWay bool // also back from uriB to uriA, without an initial sync
	// transactions is the pipelines' apply mode; "" is the default (auto).
	transactions string
}

// startReplicating starts a daemon (in dir) replicating shop.* from the
// deployment at uriA (source a) to the one at uriB with one worker, so the
// target applies in the source's order, and with how.twoWay also back
// from uriB (source b) to uriA. It returns once the change streams are
// open. The outbox keeps acknowledged events for the test to read.
func startReplicating(t *testing.T, dir, uriA, uriB string, how replicating) (*daemon, string) {
	t.Helper()
	twoWay := how.twoWay
	mode := "auto"
	if how.transactions != "" {
		mode = how.transactions
	}
	pipe := func(id, src, dst string) string {
		return fmt.Sprintf(`
  - id: %s
    type: replicate
    replicate: {source: %s, target: %q, include: ["shop.*"], workers: 1, bidirectional: %v, initial_sync: %v, transactions: %s}`,
			id, src, dst, twoWay, !twoWay, mode)
	}
	sources, sinks := fmt.Sprintf("\n  - {id: a, uri: %q}", uriA), pipe("a2b", "a", uriB)
	if twoWay {
		sources += fmt.Sprintf("\n  - {id: b, uri: %q}", uriB)
		sinks += pipe("b2a", "b", uriA)
	}
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, `
data_dir: data
outbox: {keep_acked: true}
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources:`+sources+`
sinks:`+sinks+"\n")
	d := startDaemon(t, cfg)
	d.waitLine(t, "change stream open", `"source":"a"`)
	if twoWay {
		d.waitLine(t, "change stream open", `"source":"b"`)
	}
	return d, cfg
}

// connectURI connects the official driver to uri until the test ends.
func connectURI(ctx context.Context, t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// sentinelReaches inserts the sentinel {_id: id} into the collection from
// (a pipeline's source) and waits until a change stream on to (the same
// collection on its target, opened before the insert) shows it replicated.
func sentinelReaches(ctx context.Context, t *testing.T, d *daemon, from, to *mongo.Collection, id string) {
	t.Helper()
	cs, err := to.Watch(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.M{"documentKey._id": id}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(context.Background())
	if _, err := from.InsertOne(ctx, bson.M{"_id": id}); err != nil {
		t.Fatal(err)
	}
	if !cs.Next(ctx) {
		t.Fatalf("sentinel %s never reached the target: %v\n%s", id, cs.Err(), d.logs())
	}
}

// streamedSentinelReaches is sentinelReaches for a pipeline with an initial
// sync: the sentinel is written after the copy finished, so it reaches the
// target by streaming, after every change captured before it. (Written
// during the copy, it could arrive with the copy while changes captured
// before it were still waiting to stream.)
func streamedSentinelReaches(ctx context.Context, t *testing.T, d *daemon, from, to *mongo.Collection, id string) {
	t.Helper()
	d.waitLine(t, "initial sync finished")
	sentinelReaches(ctx, t, d, from, to, id)
}

// stopAndVerify stops the daemon, which must exit cleanly, and runs
// `godwit verify` on its config, which must find every target equal to
// its source.
func stopAndVerify(t *testing.T, d *daemon, cfg string) {
	t.Helper()
	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
	out, err := cli(t, nil, "verify", "--config", cfg)
	if err != nil || !strings.Contains(out, "equal") {
		t.Fatalf("verify: %v\n%s\n%s", err, out, d.logs())
	}
}

// TestDevDB_DatabaseTriggerThroughMongoURI: triggers and functions stored in
// a devdb (metadata.uri), a database trigger on a devdb source, and the
// function's writes back into that deployment, all through mongodb://.
func TestDevDB_DatabaseTriggerThroughMongoURI(t *testing.T) {
	dir := t.TempDir()
	_, uri := startDevDB(t, filepath.Join(dir, "devdb"), "127.0.0.1:0")
	wasm, err := guests.Wasm("cacheupdater")
	if err != nil {
		t.Fatal(err)
	}
	wasmPath := filepath.Join(dir, "cacheupdater.wasm")
	writeFile(t, wasmPath, string(wasm))
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
metadata: {uri: %q}
triggers: {compilation_cache: %q}
sources:
  - id: dev
    uri: %q
sinks:
  - id: events
    type: jsonl
    jsonl: {path: events.jsonl}
`, uri, sharedCompilationCache, uri))
	d := startDaemon(t, cfg)
	addr := d.addr(t, "gRPC API listening")
	run := func(args ...string) string {
		t.Helper()
		out, err := cli(t, nil, append(args, "--addr", addr, "--json")...)
		if err != nil {
			t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &v); err != nil || v.ID == "" {
			t.Fatalf("no id in %q: %v", out, err)
		}
		return v.ID
	}
	fnID := run("function", "create", "--user", "app", "--name", "cache", "--wasm", wasmPath)
	run("trigger", "create", "--user", "app", "--name", "cache-orders", "--type", "database", "--function", fnID,
		"--source", "dev", "--database", "shop", "--collection", "orders", "--ops", "insert,update,replace,delete",
		"--full-document", "--writes", "cache.*", "--write-source", "dev")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	// The function's write into the cache is what the test waits for.
	cs, err := client.Database("cache").Collection("shop.orders").Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	if _, err := client.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": 1, "item": "kettle"}); err != nil {
		t.Fatal(err)
	}
	if !cs.Next(ctx) {
		t.Fatalf("the trigger's write never arrived: %v\n%s", cs.Err(), d.logs())
	}
	var cached struct {
		Doc bson.M `bson:"doc"`
		Op  string `bson:"op"`
	}
	if err := client.Database("cache").Collection("shop.orders").FindOne(ctx, bson.M{"_id": 1}).Decode(&cached); err != nil {
		t.Fatal(err)
	}
	if cached.Op != "insert" || cached.Doc["item"] != "kettle" {
		t.Fatalf("cache entry %+v, want the inserted order", cached)
	}
	// The trigger and function live in the devdb's metadata database.
	n, err := client.Database("godwit").Collection("triggers").CountDocuments(ctx, bson.M{})
	if err != nil || n != 1 {
		names, _ := client.Database("godwit").ListCollectionNames(ctx, bson.M{})
		t.Fatalf("metadata database holds %d triggers (%v); collections %v", n, err, names)
	}
}

// TestDevDB_TwoWayBetweenTwoDevDBs: two-way replication between two devdbs
// through mongodb://: writes on each side reach the other once, with no
// echo, and godwit verify finds them equal.
func TestDevDB_TwoWayBetweenTwoDevDBs(t *testing.T) {
	dir := t.TempDir()
	_, uriA := startDevDB(t, filepath.Join(dir, "a"), "127.0.0.1:0")
	_, uriB := startDevDB(t, filepath.Join(dir, "b"), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := connectURI(ctx, t, uriA), connectURI(ctx, t, uriB)
	d, cfg := startReplicating(t, dir, uriA, uriB, replicating{twoWay: true})

	sentinel := func(on, other *mongo.Client, id string) {
		t.Helper()
		sentinelReaches(ctx, t, d, on.Database("shop").Collection("orders"), other.Database("shop").Collection("orders"), id)
	}
	for i := range 5 {
		if _, err := a.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": i, "from": "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": 100 + i, "from": "b"}); err != nil {
			t.Fatal(err)
		}
	}
	sentinel(a, b, "a-done") // A's orders are on B
	if res, err := b.Database("shop").Collection("orders").UpdateOne(ctx, bson.M{"_id": 2}, bson.M{"$set": bson.M{"seen": "b"}}); err != nil || res.ModifiedCount != 1 {
		t.Fatalf("update of A's order on B: %+v, %v", res, err)
	}
	sentinel(b, a, "b-done")
	stopAndVerify(t, d, cfg)
	for _, c := range []*mongo.Client{a, b} {
		n, err := c.Database("shop").Collection("orders").CountDocuments(ctx, bson.M{})
		if err != nil || n != 12 {
			t.Fatalf("a side holds %d orders (%v), want 12", n, err)
		}
		var two bson.M
		if err := c.Database("shop").Collection("orders").FindOne(ctx, bson.M{"_id": 2}).Decode(&two); err != nil || two["seen"] != "b" {
			t.Fatalf("order 2 = %v (%v), want B's update on both sides", two, err)
		}
	}
	// No echo: each source captured only its users' writes (5 inserts and
	// a sentinel on A; 5 inserts, the update and a sentinel on B).
	ob, err := outbox.Open(filepath.Join(dir, "data", "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	for id, want := range map[string]uint64{"a": 6, "b": 7} {
		st, _, err := ob.Source(id)
		if err != nil || st.Captured != want {
			t.Fatalf("source %s captured %d events (%v), want %d: replicated writes echoed back", id, st.Captured, err, want)
		}
	}
	if strings.Contains(d.logs(), "newer write of this document") {
		t.Fatalf("conflicts logged without concurrent writes to one document:\n%s", d.logs())
	}
}

// TestDemo_Listen: `godwit demo --keep-running --listen` serves the demo's
// source over the wire protocol; a document inserted with the official
// driver shows in `godwit events tail` and fires the demo's cache trigger.
func TestDemo_Listen(t *testing.T) {
	d := keepDemo(t, "--ops", "20", "--data", t.TempDir(), "--listen", "127.0.0.1:0")
	if !strings.HasPrefix(d.source, "mongodb://") {
		t.Fatalf("demo printed source URI %q", d.source)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(d.source))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	// The cache trigger mirrors shop.orders into cache.shop.orders.
	cs, err := client.Database("cache").Collection("shop.orders").Watch(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.M{"documentKey._id": "from-driver"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	tail := exec.CommandContext(ctx, godwit, "events", "tail", "--addr", d.grpc, "--ns", "shop.orders", "--count", "1", "--json")
	var tailOut syncBuffer
	tail.Stdout = &tailOut
	tailErr, err := tail.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(tailErr)
	for sc.Scan() && !strings.Contains(sc.Text(), "from sequence") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if _, err := client.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": "from-driver", "note": "hello"}); err != nil {
		t.Fatal(err)
	}
	if err := tail.Wait(); err != nil {
		t.Fatalf("events tail: %v\n%s", err, d.stderr)
	}
	if !strings.Contains(tailOut.String(), "from-driver") {
		t.Fatalf("events tail shows %s, want the driver's insert", tailOut.String())
	}
	if !cs.Next(ctx) {
		t.Fatalf("the cache trigger did not mirror the driver's insert: %v\n%s", cs.Err(), d.stderr)
	}
	d.stop(t)
}
