package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/internal/ferrettest"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// The FerretDB tier: a real MongoDB-wire server nobody here wrote, with no
// transactions and no change streams, as a replication target. The source
// is the embedded engine.

// ferretCtx bounds one FerretDB test (real I/O over TCP on a loaded CI
// machine).
func ferretCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ferret starts FerretDB and connects to it the way godwit does.
func ferret(t testing.TB) (*ferrettest.Server, *mongodb.Conn) {
	t.Helper()
	srv := ferrettest.Start(t)
	conn, err := mongodb.Open(ferretCtx(t), srv.URI, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return srv, conn
}

func TestSink_FerretDBTarget(t *testing.T) {
	t.Run("InitialSyncStreamingAndDrop", func(t *testing.T) {
		ctx := ferretCtx(t)
		srv, dst := ferret(t)
		src := memory(t)
		ob := openOutbox(t)
		w := newWorkload(21, "shop", "orders", "items")
		w.seedDocs(t, src.Client, 150)
		if _, err := src.Client.Database("shop").Collection("orders").Indexes().CreateOne(ctx,
			mongo.IndexModel{Keys: bson.D{{Key: "s", Value: 1}}}); err != nil {
			t.Fatal(err)
		}
		cfg := replicate.Config{ID: "to-ferret", Source: "a", Target: srv.URI, Include: []string{"shop.*"}, CopyBatchSize: 64}
		s := openSink(t, cfg, dst)
		if st, caps := s.Status(), s.Capabilities(); st.Transactions || caps.Topology != "standalone" || caps.NoTransactions == "" {
			t.Fatalf("status %+v, capabilities %+v: want no transactions on a standalone FerretDB, with the reason", st, caps)
		}
		l := startRunnerLater(t, ob, "to-ferret", s)
		c := startCapture(t, ob, src, "a")
		if err := s.InitialSync(ctx, src); err != nil {
			t.Fatal(err)
		}
		if st := s.Status(); st.Copied != 300 || st.Total != 300 {
			t.Fatalf("copied %d of %d documents, want 300 of 300", st.Copied, st.Total)
		}
		if names := indexNames(t, dst.Client, "shop", "orders"); !contains(names, "s_1") {
			t.Fatalf("target indexes %v, want s_1 built before the copy", names)
		}
		l.start()
		w.run(t, src.Client, 300)
		insertMany(t, src.Client, "shop", "tmp", 1, 20)
		if err := src.Client.Database("shop").Collection("tmp").Drop(ctx); err != nil {
			t.Fatal(err)
		}
		insertMany(t, src.Client, "shop", "tmp", 100, 3)
		waitCaptured(t, ob, c.id, w.events+24)
		waitApplied(t, ob, l.pipe)
		mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
		if n := count(t, dst.Client, "shop", "tmp"); n != 3 {
			t.Fatalf("target shop.tmp holds %d documents, want the 3 written after the drop", n)
		}
		// Replaying the whole outbox into a new sink changes nothing.
		again := openSink(t, cfg, dst)
		recs, err := ob.Read(0, 1<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Deliver(ctx, recs); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
	})

	t.Run("InsertOfAnExistingDocumentReplacesIt", func(t *testing.T) {
		// Inserts are written as inserts; one that meets its document
		// already there (a replay) must end as the event's document, and
		// the writes after it in the same batch must still be applied.
		ctx := ferretCtx(t)
		srv, dst := ferret(t)
		orders := dst.Client.Database("shop").Collection("orders")
		if _, err := orders.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}, {Key: "v", Value: "old"}, {Key: "gone", Value: true}}); err != nil {
			t.Fatal(err)
		}
		no := false
		s := openSink(t, replicate.Config{ID: "ins", Source: "r", Target: srv.URI, InitialSync: &no, Workers: 1}, dst)
		var recs []outbox.Record
		for i := int32(1); i <= 3; i++ {
			raw, err := bson.Marshal(bson.D{
				{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("82%08d", i)}}}, {Key: "operationType", Value: "insert"},
				{Key: "clusterTime", Value: primitive.Timestamp{T: 1800000000, I: uint32(i)}},
				{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
				{Key: "documentKey", Value: bson.D{{Key: "_id", Value: i}}},
				{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: i}, {Key: "v", Value: "new"}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, outbox.Record{Seq: uint64(i), Source: "r", Raw: raw})
		}
		if err := s.Deliver(ctx, recs); err != nil {
			t.Fatal(err)
		}
		cur, err := orders.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var got []bson.D
		if err := cur.All(ctx, &got); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprint([]bson.D{
			{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "new"}},
			{{Key: "_id", Value: int32(2)}, {Key: "v", Value: "new"}},
			{{Key: "_id", Value: int32(3)}, {Key: "v", Value: "new"}},
		})
		if fmt.Sprint(got) != want {
			t.Fatalf("target holds %v, want %v", got, want)
		}
	})

	t.Run("RecordedDDL", func(t *testing.T) {
		ctx := ferretCtx(t)
		srv, dst := ferret(t)
		no := false
		s := openSink(t, replicate.Config{ID: "ddl", Source: "r", Target: srv.URI, InitialSync: &no, Workers: 1}, dst)
		seq := uint64(0)
		deliver := func(names ...string) error {
			var recs []outbox.Record
			for _, n := range names {
				seq++
				recs = append(recs, outbox.Record{Seq: seq, Source: "r", Raw: changetest.Event(n)})
			}
			return s.Deliver(ctx, recs)
		}
		// FerretDB does not know the recorded insert's Decimal128 (it drops
		// the connection): a plain document stands in for it.
		if _, err := dst.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "sku", Value: "A-1"}}); err != nil {
			t.Fatal(err)
		}
		if err := deliver("createIndexes"); err != nil {
			t.Fatal(err)
		}
		if names := indexNames(t, dst.Client, "shop", "orders"); !contains(names, "sku_1") {
			t.Fatalf("indexes %v, want sku_1 from createIndexes", names)
		}
		if err := deliver("dropIndexes", "create"); err != nil {
			t.Fatal(err)
		}
		if names := indexNames(t, dst.Client, "shop", "orders"); contains(names, "sku_1") {
			t.Fatalf("indexes %v: dropIndexes did not drop sku_1", names)
		}
		colls, err := dst.Client.Database("shop").ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		if !contains(colls, "invoices") {
			t.Fatalf("collections %v, want invoices from create", colls)
		}
		if err := deliver("drop"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UnsupportedDDLNamesPipelineTargetAndCapability", func(t *testing.T) {
		ctx := ferretCtx(t)
		srv, dst := ferret(t)
		no := false
		s := openSink(t, replicate.Config{ID: "mod", Source: "r", Target: srv.URI, InitialSync: &no, Workers: 1}, dst)
		if _, err := dst.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "sku", Value: "A-1"}}); err != nil {
			t.Fatal(err)
		}
		err := s.Deliver(ctx, []outbox.Record{{Seq: 1, Source: "r", Raw: changetest.Event("modify")}})
		if !errors.Is(err, replicate.ErrUnsupported) || !sink.IsPermanent(err) {
			t.Fatalf("deliver collMod to FerretDB: %v, want a permanent ErrUnsupported", err)
		}
		t.Logf("the message: %v", err)
		for _, want := range []string{"pipeline mod", srv.URI, "modify of shop.orders"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
		}
	})

	t.Run("RefusesWhatNeedsTransactions", func(t *testing.T) {
		ctx := ferretCtx(t)
		srv, dst := ferret(t)
		_, err := replicate.Open(ctx, replicate.Config{ID: "strict", Source: "a", Target: srv.URI, Transactions: replicate.TransactionsRequired},
			dst, meta, testLog(t))
		if !errors.Is(err, replicate.ErrUnsupported) {
			t.Fatalf("open with transactions: required: %v, want ErrUnsupported", err)
		}
		for _, want := range []string{"pipeline strict", srv.URI, "standalone"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
		}
		peer := replicate.WithPeer(replicate.Peer{SourceID: "b", Echo: replicate.NewEchoFilter(meta)})
		_, err = replicate.Open(ctx, replicate.Config{ID: "two-way", Source: "a", Target: srv.URI, Bidirectional: true},
			dst, meta, testLog(t), peer)
		if !errors.Is(err, replicate.ErrUnsupported) || !strings.Contains(err.Error(), "two-way") || !strings.Contains(err.Error(), "pipeline two-way") {
			t.Fatalf("open a two-way pipeline to FerretDB: %v, want ErrUnsupported saying why", err)
		}
	})

	t.Run("TargetRestartMidStream", func(t *testing.T) {
		srv, dst := ferret(t)
		src := memory(t)
		ob := openOutbox(t)
		w := newWorkload(5, "shop", "orders")
		w.seedDocs(t, src.Client, 50)
		cfg := replicate.Config{ID: "restart", Source: "a", Target: srv.URI, Include: []string{"shop.*"}}
		down := make(chan struct{})
		var once sync.Once
		log := zerolog.New(lineWriter(func(line string) {
			if strings.Contains(line, "target unreachable") {
				once.Do(func() { close(down) })
			}
		}))
		s, err := replicate.Open(ferretCtx(t), cfg, dst, meta, log)
		if err != nil {
			t.Fatal(err)
		}
		l := startRunnerLater(t, ob, "restart", s)
		c := startCapture(t, ob, src, "a")
		if err := s.InitialSync(ferretCtx(t), src); err != nil {
			t.Fatal(err)
		}
		l.start()
		w.run(t, src.Client, 100)
		waitCaptured(t, ob, c.id, w.events)
		waitApplied(t, ob, l.pipe)
		srv.Stop()
		w.run(t, src.Client, 100)
		waitCaptured(t, ob, c.id, w.events)
		// The sink meets the target down and waits for it: nothing may be
		// parked.
		select {
		case <-down:
		case <-ferretCtx(t).Done():
			t.Fatal("the sink never reported the target unreachable")
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		w.run(t, src.Client, 50)
		waitCaptured(t, ob, c.id, w.events)
		waitApplied(t, ob, l.pipe)
		mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
	})
}

// lineWriter hands every log line to fn.
type lineWriter func(string)

func (w lineWriter) Write(p []byte) (int, error) {
	w(string(p))
	return len(p), nil
}

// TestSink_SurvivesSIGKILLIntoFerretDB kills the replicator (a child
// process) with SIGKILL during the initial copy and at random points while
// it streams into FerretDB, which has no transactions: every restart replays
// idempotently, and the target ends equal to the source.
func TestSink_SurvivesSIGKILLIntoFerretDB(t *testing.T) {
	survivesSIGKILL(t, ferrettest.Start(t).URI)
}
