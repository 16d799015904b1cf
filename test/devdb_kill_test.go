package test

import (
	"context"

	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
)

// freeAddr returns a loopback address with a port nothing listens on, for
// a devdb that must come back on the same address after a kill.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// devdbProc is a `godwit devdb` process that the test kills with SIGKILL
// and restarts on the same data directory and address.
type devdbProc struct {
	name         string
	cmd          *exec.Cmd
	data, listen string
	uri          string
}

// newDevDBProc starts a devdb named name with its data in dir/name.
func newDevDBProc(t *testing.T, dir, name string) *devdbProc {
	t.Helper()
	p := &devdbProc{name: name, data: filepath.Join(dir, name), listen: freeAddr(t)}
	p.cmd, p.uri = startDevDB(t, p.data, p.listen)
	return p
}

func (p *devdbProc) kill9AndRestart(t *testing.T) {
	t.Helper()
	p.kill9(t)
	p.restart(t)
}

// kill9 kills the devdb with SIGKILL and waits until it is gone.
func (p *devdbProc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// restart starts the devdb again on its data and address.
func (p *devdbProc) restart(t *testing.T) {
	t.Helper()
	p.cmd, _ = startDevDB(t, p.data, p.listen)
}

// steadyWriter writes to a deployment through the official driver until
// stopped, retrying each operation until the deployment acknowledges it
// (the deployment is killed and restarted under it). Every operation is
// safe to repeat: an insert that meets its own earlier attempt counts as
// done, updates set values, the transaction upserts.
type steadyWriter struct {
	client *mongo.Client
	base   int32

	mu       sync.Mutex
	acked    int
	failed   int     // attempts that failed (the deployment was down)
	inserted []int32 // _ids of shop.orders inserted
	err      error
	changed  chan struct{} // closed and replaced on every acknowledged write
	stop     chan struct{}
	done     chan struct{}
}

// startSteadyWriter starts writing to uri; its documents' _ids start at
// base.
func startSteadyWriter(ctx context.Context, t *testing.T, uri string, base int32) *steadyWriter {
	t.Helper()
	w := &steadyWriter{client: connectURI(ctx, t, uri), base: base,
		changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *steadyWriter) run(ctx context.Context) {
	defer close(w.done)
	for i := w.base; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		inserted := false
		var err error
		// The driver waits in server selection while the deployment is
		// down: a failed attempt is not a busy loop. The bound turns a
		// deployment that never comes back into a failure.
		for attempt := 0; attempt < 1000; attempt++ {
			if inserted, err = w.write(ctx, i); err == nil || ctx.Err() != nil {
				break
			}
			w.mu.Lock()
			w.failed++
			w.mu.Unlock()
		}
		w.mu.Lock()
		if err != nil {
			w.err = fmt.Errorf("write %d: %w", i, err)
		} else {
			w.acked++
			if inserted {
				w.inserted = append(w.inserted, i)
			}
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// write performs operation i (counted from base, which is a multiple of
// 10): mostly inserts, with updates, deletes and a two-collection
// transaction among them.
func (w *steadyWriter) write(ctx context.Context, i int32) (inserted bool, err error) {
	shop := w.client.Database("shop")
	orders := shop.Collection("orders")
	switch {
	case i%10 == 9:
		sess, err := w.client.StartSession()
		if err != nil {
			return false, err
		}
		defer sess.EndSession(ctx)
		_, err = sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
			if _, err := orders.UpdateOne(sc, bson.M{"_id": i - 1}, bson.M{"$set": bson.M{"txn": i}}); err != nil {
				return nil, err
			}
			_, err := shop.Collection("customers").UpdateOne(sc, bson.M{"_id": i}, bson.M{"$set": bson.M{"order": i - 1}},
				options.Update().SetUpsert(true))
			return nil, err
		})
		return false, err
	case i%7 == 6:
		_, err := orders.DeleteOne(ctx, bson.M{"_id": i - 3})
		return false, err
	case i%5 == 4:
		_, err := orders.UpdateOne(ctx, bson.M{"_id": i - 2}, bson.M{"$set": bson.M{"v": -i}})
		return false, err
	default:
		_, err := orders.InsertOne(ctx, bson.M{"_id": i, "v": i})
		if mongo.IsDuplicateKeyError(err) {
			err = nil // an attempt before the kill was applied
		}
		return err == nil, err
	}
}

// waitAcked waits until n more writes than before were acknowledged.
func (w *steadyWriter) waitAcked(t *testing.T, n int) {
	t.Helper()
	timeout := testwait.Context(t)
	w.mu.Lock()
	want := w.acked + n
	w.mu.Unlock()
	for {
		w.mu.Lock()
		acked, err, ch := w.acked, w.err, w.changed
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
		if acked >= want {
			return
		}
		select {
		case <-ch:
		case <-timeout.Done():
			t.Fatalf("the writer made %d of %d writes", acked, want)
		}
	}
}

// halt stops the writer and returns the _ids it inserted and how many
// attempts failed.
func (w *steadyWriter) halt(t *testing.T) ([]int32, int) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.inserted, w.failed
}

// killAtRandom kills each devdb with SIGKILL at least once, six kills in
// all, each after one of the writers acknowledged a random number of
// further writes, and restarts it on its data and address. It returns
// the number of kills.
func killAtRandom(t *testing.T, rng *rand.Rand, devdbs []*devdbProc, writers ...*steadyWriter) int {
	t.Helper()
	victims := slices.Clone(devdbs)
	for len(victims) < 6 {
		victims = append(victims, devdbs[rng.IntN(len(devdbs))])
	}
	for i, v := range victims {
		writers[rng.IntN(len(writers))].waitAcked(t, 5+rng.IntN(40))
		t.Logf("kill %d: SIGKILL devdb %s", i+1, v.name)
		v.kill9AndRestart(t)
	}
	return len(victims)
}

// TestDevDB_Kill9WhileReplicating: godwit replicates one `godwit devdb`
// into another through mongodb://, in both apply modes, while a writer
// keeps writing to the source; one of them is killed with SIGKILL during the initial copy, then
// the source devdb (which godwit captures from) and the target devdb
// (which godwit applies to) are each killed at random points while it
// streams, and restarted on the same data and address. Capture resumes
// through the driver's own resume with its stored token, apply retries
// into the restarted target: every insert is captured exactly once (the
// godwit process never restarted, so not even at-least-once replays), and
// `godwit verify` finds the target equal to the source.
func TestDevDB_Kill9WhileReplicating(t *testing.T) {
	t.Run("InTransactions", func(t *testing.T) { kill9WhileReplicating(t, "required", 7) })
	t.Run("WithoutTransactions", func(t *testing.T) { kill9WhileReplicating(t, "off", 9) })
}

// kill9WhileReplicating is TestDevDB_Kill9WhileReplicating with the
// pipeline's apply mode (transactions: required or off); stream picks the
// random kill points.
func kill9WhileReplicating(t *testing.T, transactions string, stream uint64) {
	rng := crashRNG(t, stream)
	dir := t.TempDir()
	a := newDevDBProc(t, dir, "a")
	b := newDevDBProc(t, dir, "b")
	ctx := testwait.Context(t)

	// Copied by the initial sync, which takes long enough for a kill.
	ac := connectURI(ctx, t, a.uri)
	for _, coll := range []string{"orders", "items", "users"} {
		var seed []any
		for i := range 500 {
			seed = append(seed, bson.M{"_id": fmt.Sprintf("seed-%d", i), "pad": fmt.Sprintf("%0500d", i)})
		}
		if _, err := ac.Database("shop").Collection(coll).InsertMany(ctx, seed); err != nil {
			t.Fatal(err)
		}
	}

	d, cfg := startReplicating(t, dir, a.uri, b.uri, replicating{transactions: transactions})
	// Every write from here on comes after the stream opened.
	w := startSteadyWriter(ctx, t, a.uri, 0)
	// The first kill comes while the initial sync copies.
	d.waitLine(t, "replication progress", `"phase":"copying"`)
	v := []*devdbProc{a, b}[rng.IntN(2)]
	t.Logf("kill during the initial copy: SIGKILL devdb %s", v.name)
	v.kill9AndRestart(t)
	kills := 1 + killAtRandom(t, rng, []*devdbProc{a, b}, w)
	w.waitAcked(t, 20)
	inserted, failed := w.halt(t)

	// Everything before the sentinel is applied once the sentinel is: one
	// worker applies in the outbox's order.
	bc := connectURI(ctx, t, b.uri)
	streamedSentinelReaches(ctx, t, d, w.client.Database("shop").Collection("orders"), bc.Database("shop").Collection("orders"), "done")
	stopAndVerify(t, d, cfg)

	recs := capturedEvents(t, dir)
	checkCaptured(t, recs, "a", inserted, w.base)
	if t.Failed() || testing.Verbose() {
		t.Logf("daemon log:\n%s", d.logs())
	}
	t.Logf("%d kills; %d inserts among the writes, %d write attempts failed and were retried, %d events captured",
		kills, len(inserted), failed, len(recs))
}

// capturedEvents returns every event in the outbox of the daemon that ran
// in dir (with keep_acked).
func capturedEvents(t *testing.T, dir string) []outbox.Record {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(dir, "data", "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	recs, err := ob.Read(0, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// writerSpan is how many _ids a steadyWriter may use from its base.
const writerSpan = 1_000_000

// checkCaptured checks the events captured from source against the writer
// that wrote there (its documents' _ids start at base): no change is
// captured twice (godwit never restarted, so not even at-least-once
// replays), each insert the writer made is captured exactly once, no
// document of another writer is captured (a replicated write echoed back),
// and the writer's transactions keep their lsid and txnNumber, also when
// read again after a restart.
func checkCaptured(t *testing.T, recs []outbox.Record, source string, inserted []int32, base int32) {
	t.Helper()
	tokens := map[string]uint64{}
	inserts := map[int32]int{}
	for _, r := range recs {
		if r.Source != source {
			continue
		}
		ev, err := change.Parse(r.Raw)
		if err != nil {
			t.Fatalf("event %d: %v", r.Seq, err)
		}
		tok := string(ev.Token)
		if seq, dup := tokens[tok]; dup {
			t.Errorf("source %s: events %d and %d are the same change (token %x): captured twice", source, seq, r.Seq, ev.Token)
		}
		tokens[tok] = r.Seq
		id, ok := ev.DocumentID()
		n, isInt := id.Int32OK()
		if !ok || !isInt {
			continue // seeds and sentinels
		}
		if n < base || n >= base+writerSpan {
			t.Errorf("source %s: event %d (%s of %s _id %d) is another side's write echoed back", source, r.Seq, ev.OperationType, ev.NS, n)
		}
		if ev.NS.Coll == "customers" && !ev.HasTxn {
			t.Errorf("source %s: event %d (%s of a customer) lacks the lsid and txnNumber of the writer's transaction", source, r.Seq, ev.OperationType)
		}
		if ev.OperationType == change.OpInsert && ev.NS.Coll == "orders" {
			inserts[n]++
		}
	}
	for _, id := range inserted {
		if inserts[id] != 1 {
			t.Errorf("source %s: insert of order %d captured %d times, want once", source, id, inserts[id])
		}
	}
	if len(inserts) != len(inserted) {
		t.Errorf("source %s: captured %d inserts of the writer's orders, it made %d", source, len(inserts), len(inserted))
	}
}

// TestDevDB_Kill9WhileReplicatingBothWays: two-way replication between two
// `godwit devdb`s while a writer keeps writing on each side; each devdb
// (captured from and applied to) is killed with SIGKILL at random points
// and restarted. The origin markers keep working across the restarts: no
// replicated write is captured back as its target's own (no echo), every
// insert of each side is captured exactly once, and verify finds both
// sides equal.
func TestDevDB_Kill9WhileReplicatingBothWays(t *testing.T) {
	rng := crashRNG(t, 8)
	dir := t.TempDir()
	a := newDevDBProc(t, dir, "a")
	b := newDevDBProc(t, dir, "b")
	ctx := testwait.Context(t)
	d, cfg := startReplicating(t, dir, a.uri, b.uri, replicating{twoWay: true})
	wa := startSteadyWriter(ctx, t, a.uri, 0)
	wb := startSteadyWriter(ctx, t, b.uri, writerSpan)

	kills := killAtRandom(t, rng, []*devdbProc{a, b}, wa, wb)
	wa.waitAcked(t, 20)
	wb.waitAcked(t, 20)
	insertedA, failedA := wa.halt(t)
	insertedB, failedB := wb.halt(t)

	// One worker per pipeline applies in its outbox order. After A's
	// sentinel reached B, B's after it reached A and A's last one reached
	// B, each capture has also seen every write the other pipeline applied
	// to its deployment, echoes included.
	ordersA, ordersB := wa.client.Database("shop").Collection("orders"), wb.client.Database("shop").Collection("orders")
	sentinelReaches(ctx, t, d, ordersA, ordersB, "a-done")
	sentinelReaches(ctx, t, d, ordersB, ordersA, "b-done")
	sentinelReaches(ctx, t, d, ordersA, ordersB, "a-final")
	stopAndVerify(t, d, cfg)

	recs := capturedEvents(t, dir)
	checkCaptured(t, recs, "a", insertedA, wa.base)
	checkCaptured(t, recs, "b", insertedB, wb.base)
	if strings.Contains(d.logs(), "newer write of this document") {
		t.Errorf("conflicts logged, but the sides never write the same document")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("daemon log:\n%s", d.logs())
	}
	t.Logf("%d kills; inserts %d on a, %d on b; %d write attempts failed and were retried; %d events captured",
		kills, len(insertedA), len(insertedB), failedA+failedB, len(recs))
}

// TestDevDB_DownLongerThanTheDriverWaits: the source devdb stays down
// until the driver gave up (godwit's URIs allow one second of server
// selection) and capture reports the stream failed; capture then reopens
// the stream itself at its stored token. The target devdb stays down until
// the pipeline reports it unreachable; the pipeline retries the same
// changes. Meanwhile a writer keeps writing to the source whenever it is
// up: nothing is lost or captured twice, and verify finds them equal.
func TestDevDB_DownLongerThanTheDriverWaits(t *testing.T) {
	dir := t.TempDir()
	a := newDevDBProc(t, dir, "a")
	b := newDevDBProc(t, dir, "b")
	ctx := testwait.Context(t)
	const quick = "&serverSelectionTimeoutMS=1000"
	d, cfg := startReplicating(t, dir, a.uri+quick, b.uri+quick, replicating{})
	w := startSteadyWriter(ctx, t, a.uri, 0)
	d.waitLine(t, "initial sync finished; streaming")

	w.waitAcked(t, 20)
	a.kill9(t)
	d.waitLine(t, "change stream failed; reconnecting")
	a.restart(t)
	w.waitAcked(t, 20)

	b.kill9(t)
	d.waitLine(t, "target unreachable; retrying the same changes")
	b.restart(t)
	w.waitAcked(t, 20)
	inserted, _ := w.halt(t)

	bc := connectURI(ctx, t, b.uri)
	streamedSentinelReaches(ctx, t, d, w.client.Database("shop").Collection("orders"), bc.Database("shop").Collection("orders"), "done")
	stopAndVerify(t, d, cfg)
	checkCaptured(t, capturedEvents(t, dir), "a", inserted, w.base)
	if t.Failed() || testing.Verbose() {
		t.Logf("daemon log:\n%s", d.logs())
	}
}
