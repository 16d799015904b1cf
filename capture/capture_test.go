package capture_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// The contract suite: these run on the embedded engine, and against a real
// replica set when GODWIT_TEST_MONGODB_URI is set.

func TestSource_CapturesEveryWriteInOrder(t *testing.T) {
	conn, db := deployment(t)
	ob := openOutbox(t, outbox.Options{})
	src := newSource(capture.Config{Database: db}, conn, ob)
	startReady(t, src)

	ctx := context.Background()
	coll := conn.Client.Database(db).Collection("orders")
	var want []string
	for i := range 20 {
		insert(t, conn, db, "orders", i)
		want = append(want, fmt.Sprintf("insert %s.orders %d", db, i))
	}
	if _, err := coll.UpdateOne(ctx, bson.M{"_id": 3}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("update %s.orders 3", db))
	if _, err := coll.ReplaceOne(ctx, bson.M{"_id": 4}, bson.M{"w": 2}); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("replace %s.orders 4", db))
	if _, err := coll.DeleteOne(ctx, bson.M{"_id": 5}); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("delete %s.orders 5", db))
	// A rename, the way drivers and mongosh send it.
	rename := bson.D{{Key: "renameCollection", Value: db + ".orders"}, {Key: "to", Value: db + ".archive"}}
	if err := conn.Client.Database("admin").RunCommand(ctx, rename).Err(); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("rename %s.orders -> %s.archive", db, db))

	recs := waitEvents(t, ob, len(want))
	if got := summaries(t, recs); !slices.Equal(got, want) {
		t.Fatalf("outbox:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.Source != "src" {
			t.Fatalf("record %d has seq %d source %q", i, r.Seq, r.Source)
		}
	}
	st, _, _ := ob.Source("src")
	if len(st.Token) == 0 || st.Captured != uint64(len(want)) || st.State != outbox.StateRunning {
		t.Fatalf("checkpoint = %+v", st)
	}
}

func TestSource_RestartResumesWithoutGap(t *testing.T) {
	conn, db := deployment(t)
	ob := openOutbox(t, outbox.Options{})
	cfg := capture.Config{Database: db}
	r := startReady(t, newSource(cfg, conn, ob))
	for i := range 5 {
		insert(t, conn, db, "c", i)
	}
	waitEvents(t, ob, 5)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}

	for i := 5; i < 12; i++ { // written while capture is stopped
		insert(t, conn, db, "c", i)
	}
	startReady(t, newSource(cfg, conn, ob))
	insert(t, conn, db, "c", 12)

	recs := waitEvents(t, ob, 13)
	var want []string
	for i := range 13 {
		want = append(want, fmt.Sprintf("insert %s.c %d", db, i))
	}
	if got := summaries(t, recs); !slices.Equal(got, want) {
		t.Fatalf("after restart:\n%s", strings.Join(got, "\n"))
	}
}

func TestSource_Filters(t *testing.T) {
	conn, db := deployment(t)
	other := db + "_other"
	t.Cleanup(func() { _ = conn.Client.Database(other).Drop(context.Background()) })
	ob := openOutbox(t, outbox.Options{})
	cfg := capture.Config{
		Filter: change.Filter{
			Include: []change.Glob{change.MustGlob(db + ".*")},
			Ignore:  []change.Glob{change.MustGlob("*.tmp_*")},
		},
		OperationTypes:   []string{change.OpInsert, change.OpDelete},
		MetadataDatabase: db + "_meta",
	}
	startReady(t, newSource(cfg, conn, ob))
	ctx := context.Background()

	insert(t, conn, db, "keep", 1)          // kept
	insert(t, conn, db, "tmp_load", 1)      // ignored glob
	insert(t, conn, other, "x", 1)          // not included
	insert(t, conn, db+"_meta", "state", 1) // godwit's metadata
	if _, err := conn.Client.Database(db).Collection("keep").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}}); err != nil {
		t.Fatal(err) // update: operation type not kept
	}
	if _, err := conn.Client.Database(db).Collection("keep").DeleteOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err) // kept
	}
	insert(t, conn, db, "keep", 2) // sentinel: once it is in, everything before was decided

	recs := waitEvents(t, ob, 3)
	want := []string{
		fmt.Sprintf("insert %s.keep 1", db),
		fmt.Sprintf("delete %s.keep 1", db),
		fmt.Sprintf("insert %s.keep 2", db),
	}
	if got := summaries(t, recs); !slices.Equal(got, want) {
		t.Fatalf("kept:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Embedded-engine tests: behaviour that needs a capped oplog or an
// in-process engine.

func TestSource_HistoryLostHalts(t *testing.T) {
	embeddedOnly(t, "overflowing a real oplog is not practical in a test")
	conn, db := deployment(t)
	other, otherDB := deployment(t)
	ob := openOutbox(t, outbox.Options{})

	lossy := capture.Config{ID: "lossy", Database: db}
	r := startReady(t, newSource(lossy, conn, ob))
	insert(t, conn, db, "c", 0)
	waitEvents(t, ob, 1)
	r.stop(t)

	// Overflow the oplog (300 entries here) while capture is stopped.
	overflowOplog(t, conn, db, "c")

	healthy := startReady(t, newSource(capture.Config{ID: "healthy", Database: otherDB}, other, ob))
	_ = healthy
	lost := start(t, newSource(lossy, conn, ob))
	err := <-lost.done
	lost.done <- err // let cleanup's stop read it again
	if !isHalted(err) {
		t.Fatalf("Run = %v, want ErrHalted", err)
	}
	st, _, _ := ob.Source("lossy")
	if st.State != outbox.StateHalted || !strings.Contains(st.Reason, "godwit resync --config FILE --source lossy") {
		t.Fatalf("state = %q, reason = %q; want halted naming the resync command", st.State, st.Reason)
	}

	// The other source keeps capturing.
	insert(t, other, otherDB, "c", 1)
	recs := waitEvents(t, ob, 2)
	if got := summary(t, recs[len(recs)-1]); got != fmt.Sprintf("insert %s.c 1", otherDB) {
		t.Fatalf("healthy source's event = %q", got)
	}

	// Halted survives a restart: no silent restart from "now".
	again := start(t, newSource(lossy, conn, ob))
	if err := <-again.done; !isHalted(err) {
		t.Fatalf("restarted halted source: Run = %v, want ErrHalted", err)
	}
	again.done <- nil
	if n := len(readAll(t, ob)); n != 2 {
		t.Fatalf("outbox holds %d events; a halted source must add none", n)
	}
}

func TestSource_CorruptTokenHalts(t *testing.T) {
	embeddedOnly(t, "same path on a real server; one engine is enough")
	conn, db := deployment(t)
	ob := openOutbox(t, outbox.Options{})
	if _, err := ob.Append(context.Background(), "orders-src", nil, outbox.Checkpoint{Token: []byte{9, 0, 0, 0, 3, 'x'}}); err != nil {
		t.Fatal(err)
	}
	r := start(t, newSource(capture.Config{ID: "orders-src", Database: db}, conn, ob))
	err := <-r.done
	r.done <- err
	if !isHalted(err) || !strings.Contains(err.Error(), "orders-src") || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Run = %v; want ErrHalted naming the source and the corrupt token", err)
	}
}

// gate is a sink that blocks until released, then records what it got.
type gate struct {
	open chan struct{}
	got  *[]outbox.Record
}

func (g gate) Deliver(ctx context.Context, recs []outbox.Record) error {
	select {
	case <-g.open:
		*g.got = append(*g.got, recs...)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestSource_BackPressurePausesWithoutLoss(t *testing.T) {
	embeddedOnly(t, "the bound is on the outbox; one engine is enough")
	conn, db := deployment(t)
	const bound = 8 << 10
	ob := openOutbox(t, outbox.Options{MaxBytes: bound})
	var got []outbox.Record
	g := gate{open: make(chan struct{}), got: &got}
	runner := sink.NewRunner(outbox.SinkCursor("stalled"), ob, g, sink.RunnerConfig{BatchSize: 10}, zerolog.Nop())
	if _, err := runner.Register(); err != nil {
		t.Fatal(err)
	}
	startReady(t, newSource(capture.Config{Database: db, BatchSize: 5}, conn, ob))

	const n = 200 // about 30 KiB of events: well over the bound
	for i := range n {
		insert(t, conn, db, "c", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	if err := ob.WaitPaused(ctx); err != nil {
		t.Fatalf("capture never paused: %v", err)
	}
	if s := ob.Stats(); s.Bytes > bound || s.Last >= n {
		t.Fatalf("paused with %d bytes (bound %d) and %d events", s.Bytes, bound, s.Last)
	}

	// Release the sink: retention frees space and capture resumes.
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	close(g.open)
	if err := runner.WaitAcked(ctx, n); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	if len(got) != n {
		t.Fatalf("sink got %d events, want %d", len(got), n)
	}
	for i, r := range got {
		if want := fmt.Sprintf("insert %s.c %d", db, i); summary(t, r) != want {
			t.Fatalf("event %d = %q, want %q", i, summary(t, r), want)
		}
	}
}

func TestSource_FirstStartPointIsDurable(t *testing.T) {
	embeddedOnly(t, "a real server's start point is its opening resume token, tested with recorded replies")
	conn, db := deployment(t)
	ob := openOutbox(t, outbox.Options{})
	cfg := capture.Config{Database: db}
	// Opened, then stopped before anything was written or checkpointed.
	r := startReady(t, newSource(cfg, conn, ob))
	r.stop(t)
	for i := range 3 { // written while capture is down
		insert(t, conn, db, "c", i)
	}
	startReady(t, newSource(cfg, conn, ob))
	recs := waitEvents(t, ob, 3)
	if got := summaries(t, recs); len(got) != 3 || got[0] != fmt.Sprintf("insert %s.c 0", db) {
		t.Fatalf("writes after the first start were lost: %v", got)
	}
}
