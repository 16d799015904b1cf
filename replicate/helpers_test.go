package replicate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

const meta = "godwit"

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	t.Cleanup(cancel)
	return ctx
}

func testLog(t testing.TB) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	return zerolog.Nop()
}

// memory opens an embedded engine of its own.
func memory(t testing.TB) *mongodb.Conn {
	t.Helper()
	c, err := mongodb.Open(context.Background(), "lungo:memory", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// openOutbox opens an outbox that keeps acknowledged events, so a test can
// replay them.
func openOutbox(t testing.TB) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{KeepAcked: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ob.Check(); err != nil {
			t.Errorf("outbox check: %v", err)
		}
		ob.Close(context.Background())
	})
	return ob
}

// source is a capture source running in the background.
type source struct {
	id   string
	conn *mongodb.Conn
	echo *replicate.EchoFilter
	src  *capture.Source
}

// startCapture captures conn into ob under id, with an echo filter, and
// returns once the change stream is open.
func startCapture(t testing.TB, ob *outbox.Outbox, conn *mongodb.Conn, id string) *source {
	t.Helper()
	return startCaptureWith(t, ob, conn, id, replicate.NewEchoFilter(meta))
}

func startCaptureWith(t testing.TB, ob *outbox.Outbox, conn *mongodb.Conn, id string, echo *replicate.EchoFilter) *source {
	t.Helper()
	// The daemon's default fullDocument, which replication needs (the
	// embedded engine sends the post-image anyway).
	src := capture.New(capture.Config{ID: id, MetadataDatabase: meta, BatchInterval: 5 * time.Millisecond,
		CheckpointInterval: time.Millisecond, FullDocument: "updateLookup"}, conn, ob, echo, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture %s: %v", id, err)
		}
	})
	select {
	case <-src.Ready():
	case err := <-done:
		t.Fatalf("capture %s stopped before its stream opened: %v", id, err)
	case <-time.After(testwait.Long):
		t.Fatalf("capture %s did not open its stream", id)
	}
	return &source{id: id, conn: conn, echo: echo, src: src}
}

// pipe is a replicate sink drained by a runner.
type pipe struct {
	sink   *replicate.Sink
	runner *sink.Runner
	stop   func()
}

func openSink(t testing.TB, cfg replicate.Config, target *mongodb.Conn, opts ...replicate.Option) *replicate.Sink {
	t.Helper()
	s, err := replicate.Open(testCtx(t), cfg, target, meta, testLog(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startRunner drains ob into s. The runner registers its cursor first.
func startRunner(t testing.TB, ob *outbox.Outbox, id string, s sink.Sink, policy string) *pipe {
	t.Helper()
	r := sink.NewRunner(outbox.SinkCursor(id), ob, s, sink.RunnerConfig{BatchSize: 200, MaxAttempts: 3, Policy: policy,
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}, testLog(t))
	if _, err := r.Register(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && !errors.Is(err, sink.ErrHalted) {
			t.Errorf("runner %s: %v", id, err)
		}
	}
	t.Cleanup(stop)
	var rs *replicate.Sink
	rs, _ = s.(*replicate.Sink)
	return &pipe{sink: rs, runner: r, stop: stop}
}

// waitCaptured waits until capture stored n events of source id.
func waitCaptured(t testing.TB, ob *outbox.Outbox, id string, n uint64) {
	t.Helper()
	if err := waitSourceEvents(testCtx(t), ob, id, n); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until every runner acknowledged everything in ob.
func waitApplied(t testing.TB, ob *outbox.Outbox, pipes ...*pipe) {
	t.Helper()
	ctx := testCtx(t)
	last := ob.LastSeq()
	for _, p := range pipes {
		if err := p.runner.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		if st := p.runner.Status(); st.Parked > 0 {
			t.Fatalf("%s parked %d events: %s", st.ID, st.Parked, st.LastError)
		}
	}
}

// mustEqual verifies that the target holds what the source does.
func mustEqual(t testing.TB, src, dst lungo.IClient, opts replicate.VerifyOptions) replicate.Report {
	t.Helper()
	var out bytes.Buffer
	opts.Out = &out
	rep, err := replicate.Verify(testCtx(t), src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Equal {
		t.Fatalf("target differs from source:\n%s", out.String())
	}
	return rep
}

// workload writes a random mix of document changes and counts the change
// events it produced (writes that change nothing produce none).
type workload struct {
	rnd     *rand.Rand
	colls   []string
	db      string
	live    map[string][]int32 // collection → live ids
	deleted map[string][]int32
	next    int32
	events  uint64
	ops     int
}

func newWorkload(seed uint64, db string, colls ...string) *workload {
	return &workload{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), db: db, colls: colls,
		live: map[string][]int32{}, deleted: map[string][]int32{}, next: 1}
}

// seedDocs inserts n documents per collection, outside the counted workload.
func (w *workload) seedDocs(t testing.TB, c lungo.IClient, n int) {
	t.Helper()
	ctx := testCtx(t)
	for _, coll := range w.colls {
		docs := make([]any, 0, n)
		for i := 0; i < n; i++ {
			id := w.next
			w.next++
			docs = append(docs, w.doc(id))
			w.live[coll] = append(w.live[coll], id)
		}
		if _, err := c.Database(w.db).Collection(coll).InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *workload) doc(id int32) bson.D {
	return bson.D{{Key: "_id", Value: id}, {Key: "n", Value: int32(w.rnd.IntN(100))},
		{Key: "s", Value: fmt.Sprintf("v%d", w.rnd.IntN(1000))},
		{Key: "tags", Value: bson.A{"a"}},
		{Key: "sub", Value: bson.D{{Key: "a", Value: int32(1)}, {Key: "b", Value: "x"}}}}
}

// run applies n operations to c.
func (w *workload) run(t testing.TB, c lungo.IClient, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := w.step(testCtx(t), c); err != nil {
			t.Fatalf("workload operation %d: %v", w.ops, err)
		}
	}
}

func (w *workload) pick(ids []int32) (int32, int) {
	i := w.rnd.IntN(len(ids))
	return ids[i], i
}

func (w *workload) step(ctx context.Context, c lungo.IClient) error {
	w.ops++
	coll := w.colls[w.rnd.IntN(len(w.colls))]
	col := c.Database(w.db).Collection(coll)
	live := w.live[coll]
	kind := w.rnd.IntN(10)
	if len(live) == 0 {
		kind = 0
	}
	switch kind {
	case 0: // insert, or re-insert a deleted _id
		id := w.next
		if d := w.deleted[coll]; len(d) > 0 && w.rnd.IntN(2) == 0 {
			var i int
			id, i = w.pick(d)
			w.deleted[coll] = append(d[:i], d[i+1:]...)
		} else {
			w.next++
		}
		if _, err := col.InsertOne(ctx, w.doc(id)); err != nil {
			return err
		}
		w.live[coll] = append(w.live[coll], id)
		w.events++
		return nil
	case 1, 2: // $inc
		id, _ := w.pick(live)
		return w.update(ctx, col, id, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(1 + w.rnd.IntN(5))}}}})
	case 3: // $set, nested included
		id, _ := w.pick(live)
		return w.update(ctx, col, id, bson.D{{Key: "$set", Value: bson.D{
			{Key: "s", Value: fmt.Sprintf("s%d", w.rnd.IntN(50))},
			{Key: "sub.a", Value: int32(w.rnd.IntN(9))},
			{Key: fmt.Sprintf("f%d", w.rnd.IntN(4)), Value: true},
		}}})
	case 4: // $unset
		id, _ := w.pick(live)
		return w.update(ctx, col, id, bson.D{{Key: "$unset", Value: bson.D{{Key: "s", Value: ""}, {Key: "sub.b", Value: ""}}}})
	case 5: // $push (a numeric path in the event: post-image fallback)
		id, _ := w.pick(live)
		return w.update(ctx, col, id, bson.D{{Key: "$push", Value: bson.D{{Key: "tags", Value: fmt.Sprintf("t%d", w.rnd.IntN(5))}}}})
	case 6, 7: // replace
		id, _ := w.pick(live)
		r, err := col.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, w.doc(id))
		if err != nil {
			return err
		}
		w.events += uint64(r.ModifiedCount + r.UpsertedCount)
		return nil
	default: // delete
		id, i := w.pick(live)
		r, err := col.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
		if err != nil {
			return err
		}
		w.live[coll] = append(live[:i], live[i+1:]...)
		w.deleted[coll] = append(w.deleted[coll], id)
		w.events += uint64(r.DeletedCount)
		return nil
	}
}

func (w *workload) update(ctx context.Context, col lungo.ICollection, id int32, upd bson.D) error {
	r, err := col.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, upd)
	if err != nil {
		return err
	}
	w.events += uint64(r.ModifiedCount + r.UpsertedCount)
	return nil
}

// insertMany inserts n small documents into db.coll.
func insertMany(t testing.TB, c lungo.IClient, db, coll string, from, n int) {
	t.Helper()
	docs := make([]any, 0, n)
	for i := from; i < from+n; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: int32(i)}, {Key: "v", Value: fmt.Sprintf("d%d", i)}})
	}
	if _, err := c.Database(db).Collection(coll).InsertMany(testCtx(t), docs); err != nil {
		t.Fatal(err)
	}
}

func count(t testing.TB, c lungo.IClient, db, coll string) int64 {
	t.Helper()
	n, err := c.Database(db).Collection(coll).CountDocuments(testCtx(t), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func indexNames(t testing.TB, c lungo.IClient, db, coll string) []string {
	t.Helper()
	cur, err := c.Database(db).Collection(coll).Indexes().List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var specs []bson.M
	if err := cur.All(testCtx(t), &specs); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, fmt.Sprint(s["name"]))
	}
	return names
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
