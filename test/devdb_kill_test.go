package test

import (
	"context"

	"fmt"
	"net"
	"os/exec"
	"path/filepath"
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
	cmd          *exec.Cmd
	data, listen string
	uri          string
}

func newDevDBProc(t *testing.T, data string) *devdbProc {
	t.Helper()
	p := &devdbProc{data: data, listen: freeAddr(t)}
	p.cmd, p.uri = startDevDB(t, p.data, p.listen)
	return p
}

func (p *devdbProc) kill9AndRestart(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	p.cmd, _ = startDevDB(t, p.data, p.listen)
}

// steadyWriter writes to a deployment through the official driver until
// stopped, retrying each operation until the deployment acknowledges it
// (the deployment is killed and restarted under it). Every operation is
// safe to repeat: an insert that meets its own earlier attempt counts as
// done, updates set values, the transaction upserts.
type steadyWriter struct {
	client *mongo.Client

	mu       sync.Mutex
	acked    int
	failed   int     // attempts that failed (the deployment was down)
	inserted []int32 // _ids of shop.orders inserted
	err      error
	changed  chan struct{} // closed and replaced on every acknowledged write
	stop     chan struct{}
	done     chan struct{}
}

func startSteadyWriter(ctx context.Context, t *testing.T, uri string) *steadyWriter {
	t.Helper()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	w := &steadyWriter{client: client, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *steadyWriter) run(ctx context.Context) {
	defer close(w.done)
	for i := int32(0); ; i++ {
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

// write performs operation i: mostly inserts, with updates, deletes and a
// two-collection transaction among them.
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

// TestDevDB_Kill9WhileReplicating: godwit replicates one `godwit devdb`
// into another through mongodb:// while a writer keeps writing to the
// source; the source devdb (which godwit captures from) and the target
// devdb (which godwit applies to) are each killed with SIGKILL at random
// points and restarted on the same data and address. Capture resumes
// through the driver's own resume with its stored token, apply retries
// into the restarted target: every insert is captured exactly once (the
// godwit process never restarted, so not even at-least-once replays), and
// `godwit verify` finds the target equal to the source.
func TestDevDB_Kill9WhileReplicating(t *testing.T) {
	rng := crashRNG(t, 7)
	dir := t.TempDir()
	a := newDevDBProc(t, filepath.Join(dir, "a"))
	b := newDevDBProc(t, filepath.Join(dir, "b"))
	ctx := testwait.Context(t)

	ac, err := mongo.Connect(ctx, options.Client().ApplyURI(a.uri))
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Disconnect(context.Background())
	var seed []any // copied by the initial sync
	for i := range 100 {
		seed = append(seed, bson.M{"_id": fmt.Sprintf("seed-%d", i)})
	}
	if _, err := ac.Database("shop").Collection("orders").InsertMany(ctx, seed); err != nil {
		t.Fatal(err)
	}

	d, cfg := startA2B(t, dir, a.uri, b.uri)
	// Every write from here on comes after the stream opened.
	w := startSteadyWriter(ctx, t, a.uri)

	// Both are killed at least once; the rest are chosen at random.
	victims := []*devdbProc{a, b}
	for range 4 {
		victims = append(victims, victims[rng.IntN(2)])
	}
	for i, v := range victims {
		w.waitAcked(t, 5+rng.IntN(40))
		name := map[*devdbProc]string{a: "source", b: "target"}[v]
		t.Logf("kill %d: SIGKILL the %s devdb", i+1, name)
		v.kill9AndRestart(t)
	}
	w.waitAcked(t, 20)
	inserted, failed := w.halt(t)

	// Everything before the sentinel is applied once the sentinel is: one
	// worker applies in the outbox's order.
	bc, err := mongo.Connect(ctx, options.Client().ApplyURI(b.uri))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Disconnect(context.Background())
	cs := watchID(ctx, t, bc.Database("shop").Collection("orders"), "done")
	sentinelReaches(ctx, t, d, w.client.Database("shop").Collection("orders"), cs)
	stopAndVerify(t, d, cfg)

	// The outbox holds each insert exactly once, no event twice, and the
	// transaction's events carry its lsid and txnNumber, also those read
	// again after a restart.
	ob, err := outbox.Open(filepath.Join(dir, "data", "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	recs, err := ob.Read(0, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]uint64{}
	inserts := map[int32]int{}
	for _, r := range recs {
		ev, err := change.Parse(r.Raw)
		if err != nil {
			t.Fatalf("event %d: %v", r.Seq, err)
		}
		tok := string(ev.Token)
		if seq, dup := tokens[tok]; dup {
			t.Errorf("events %d and %d are the same change (token %x): captured twice", seq, r.Seq, ev.Token)
		}
		tokens[tok] = r.Seq
		if ev.NS.Coll == "customers" && !ev.HasTxn {
			t.Errorf("event %d (%s of a customer) lacks the lsid and txnNumber of the writer's transaction", r.Seq, ev.OperationType)
		}
		if ev.OperationType == change.OpInsert && ev.NS.Coll == "orders" {
			if id, ok := ev.DocumentID(); ok {
				if n, ok := id.Int32OK(); ok {
					inserts[n]++
				}
			}
		}
	}
	for _, id := range inserted {
		if inserts[id] != 1 {
			t.Errorf("insert of order %d captured %d times, want once", id, inserts[id])
		}
	}
	if len(inserts) != len(inserted) {
		t.Errorf("captured %d inserts of orders with int _ids, the writer made %d", len(inserts), len(inserted))
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("daemon log:\n%s", d.logs())
	}
	t.Logf("%d kills; %d inserts among the writes, %d write attempts failed and were retried, %d events captured",
		len(victims), len(inserted), failed, len(recs))

}
