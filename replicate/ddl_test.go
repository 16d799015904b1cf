package replicate_test

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// ddlRun replicates shop.* from a fresh source under a DDL policy while a
// workload writes, drops shop.tmp midway, and writes to it again.
type ddlRun struct {
	src, dst *source
	p        *pipe
	cfg      replicate.Config
	events   uint64
}

func runDDLUnderLoad(t *testing.T, open deployment, policy string) *ddlRun {
	t.Helper()
	src, dst := open(t), open(t)
	ob := openOutbox(t)
	no := false
	cfg := replicate.Config{ID: "ddl", Source: "a", Target: dst.Redacted, Include: []string{"shop.*"}, DDL: policy, InitialSync: &no}
	s := openSink(t, cfg, dst)
	p := startRunner(t, ob, "ddl", s, sink.PolicyHalt)
	c := startCapture(t, ob, src, "a")
	w := newWorkload(3, "shop", "orders")
	w.run(t, src.Client, 150)
	insertMany(t, src.Client, "shop", "tmp", 1, 50)
	w.run(t, src.Client, 100)
	if err := src.Client.Database("shop").Collection("tmp").Drop(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.run(t, src.Client, 100)
	insertMany(t, src.Client, "shop", "tmp", 1000, 5)
	// 50 + 5 inserts and one drop event besides the workload's.
	waitCaptured(t, ob, c.id, w.events+56)
	if policy != replicate.DDLHalt {
		waitApplied(t, ob, p)
	}
	return &ddlRun{src: c, dst: &source{conn: dst}, p: p, cfg: cfg, events: w.events + 56}
}

func TestSink_DDL(t *testing.T) {
	ddlPolicies(t, memory)
	t.Run("RecordedRealServerEvents", func(t *testing.T) {
		dst := memory(t)
		no := false
		cfg := replicate.Config{ID: "rec", Source: "r", Target: "lungo:memory", InitialSync: &no, Workers: 1}
		s := openSink(t, cfg, dst)
		seq := uint64(0)
		deliver := func(names ...string) error {
			var recs []outbox.Record
			for _, n := range names {
				seq++
				recs = append(recs, outbox.Record{Seq: seq, Source: "r", Raw: changetest.Event(n)})
			}
			return s.Deliver(testCtx(t), recs)
		}
		// In the recorded events' cluster-time order.
		if err := deliver("insert", "rename"); err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, dst.Client, "shop", "orders"), count(t, dst.Client, "shop", "orders_2024"); n != 0 || m != 1 {
			t.Fatalf("after rename: shop.orders %d documents, shop.orders_2024 %d; want 0 and 1", n, m)
		}
		if err := deliver("createIndexes"); err != nil {
			t.Fatal(err)
		}
		if names := indexNames(t, dst.Client, "shop", "orders"); !contains(names, "sku_1") {
			t.Fatalf("indexes %v, want sku_1 from createIndexes", names)
		}
		if err := deliver("dropIndexes", "create", "modify", "unknown_op", "shardCollection"); err != nil {
			t.Fatal(err)
		}
		if names := indexNames(t, dst.Client, "shop", "orders"); contains(names, "sku_1") {
			t.Fatalf("indexes %v: dropIndexes did not drop sku_1", names)
		}
		// Delivering everything again changes nothing and applies nothing.
		before := s.Status().Applied
		seq = 0
		if err := deliver("insert", "rename", "createIndexes", "dropIndexes", "create", "modify", "unknown_op", "shardCollection"); err != nil {
			t.Fatal(err)
		}
		if st := s.Status(); st.Applied != before {
			t.Fatalf("replay applied %d events", st.Applied-before)
		}
	})
	t.Run("UnknownOperationTypeHalts", func(t *testing.T) {
		dst := memory(t)
		no := false
		s := openSink(t, replicate.Config{ID: "unk", Source: "r", Target: "lungo:memory", InitialSync: &no, DDL: replicate.DDLHalt}, dst)
		err := s.Deliver(testCtx(t), []outbox.Record{
			{Seq: 1, Source: "r", Raw: changetest.Event("insert")},
			{Seq: 2, Source: "r", Raw: changetest.Event("unknown_op")},
		})
		var pe *sink.PartialError
		if !errors.As(err, &pe) || pe.Delivered != 1 || !errors.Is(err, replicate.ErrHalted) {
			t.Fatalf("deliver: %v, want the insert delivered, then halted", err)
		}
		if n := count(t, dst.Client, "shop", "orders"); n != 1 {
			t.Fatalf("the insert before the halt was not applied")
		}
	})
}

// ddlPolicies replicates a collection dropped and written again under
// each DDL policy between deployments opened with open.
func ddlPolicies(t *testing.T, open deployment) {
	t.Run("ApplyDropsAndRecreates", func(t *testing.T) {
		r := runDDLUnderLoad(t, open, replicate.DDLApply)
		mustEqual(t, r.src.conn.Client, r.dst.conn.Client, replicate.VerifyConfig(r.cfg, meta, nil))
		if n := count(t, r.dst.conn.Client, "shop", "tmp"); n != 5 {
			t.Fatalf("target shop.tmp holds %d documents, want the 5 written after the drop", n)
		}
	})
	t.Run("IgnoreKeepsTheTarget", func(t *testing.T) {
		r := runDDLUnderLoad(t, open, replicate.DDLIgnore)
		if n := count(t, r.dst.conn.Client, "shop", "tmp"); n != 55 {
			// The statuses say where the missing inserts went (seen once
			// under load, never reproduced in isolation).
			t.Fatalf("target shop.tmp holds %d documents, want 55 (the drop is ignored); sink %+v; runner %+v",
				n, r.p.sink.Status(), r.p.runner.Status())
		}
		if n, m := count(t, r.src.conn.Client, "shop", "orders"), count(t, r.dst.conn.Client, "shop", "orders"); n != m {
			t.Fatalf("shop.orders: source %d documents, target %d", n, m)
		}
	})
	t.Run("ApplyRenamesOntoACollection", func(t *testing.T) {
		// A collection written and renamed onto another one
		// (dropTarget) while the workload runs: the target does the same
		// with one renameCollection command.
		src, dst := open(t), open(t)
		ob := openOutbox(t)
		no := false
		cfg := replicate.Config{ID: "ren", Source: "a", Target: dst.Redacted, Include: []string{"shop.*"}, InitialSync: &no}
		p := startRunner(t, ob, "ren", openSink(t, cfg, dst), sink.PolicyHalt)
		c := startCapture(t, ob, src, "a")
		w := newWorkload(5, "shop", "orders")
		w.run(t, src.Client, 100)
		insertMany(t, src.Client, "shop", "imported", 1, 3)
		insertMany(t, src.Client, "shop", "staging", 100, 20)
		w.run(t, src.Client, 100)
		rename := bson.D{{Key: "renameCollection", Value: "shop.staging"}, {Key: "to", Value: "shop.imported"}, {Key: "dropTarget", Value: true}}
		if err := src.Client.Database("admin").RunCommand(testCtx(t), rename).Err(); err != nil {
			t.Fatal(err)
		}
		w.run(t, src.Client, 100)
		insertMany(t, src.Client, "shop", "imported", 200, 2)
		// 3 + 20 + 2 inserts and the rename besides the workload's.
		waitCaptured(t, ob, c.id, w.events+26)
		waitApplied(t, ob, p)
		mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
		if n, m := count(t, dst.Client, "shop", "staging"), count(t, dst.Client, "shop", "imported"); n != 0 || m != 22 {
			t.Fatalf("target: shop.staging %d documents, shop.imported %d; want 0 and 22", n, m)
		}
	})
	t.Run("HaltStopsAtTheDrop", func(t *testing.T) {
		r := runDDLUnderLoad(t, open, replicate.DDLHalt)
		err := r.p.runner.WaitAcked(testCtx(t), 1<<62)
		if !errors.Is(err, sink.ErrHalted) {
			t.Fatalf("runner: %v, want halted", err)
		}
		if st := r.p.sink.Status(); st.Phase != replicate.PhaseHalted {
			t.Fatalf("phase %q, want halted", st.Phase)
		}
		if n := count(t, r.dst.conn.Client, "shop", "tmp"); n != 50 {
			t.Fatalf("target shop.tmp holds %d documents, want the 50 before the drop", n)
		}
		// The halt is durable: a reopened pipeline refuses to continue.
		again := openSink(t, r.cfg, r.dst.conn)
		err = again.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "a", Raw: changetest.Event("insert")}})
		if !errors.Is(err, replicate.ErrHalted) || !sink.IsPermanent(err) {
			t.Fatalf("deliver after halt: %v, want permanent ErrHalted", err)
		}
		if err := replicate.Reset(testCtx(t), r.dst.conn.Client, meta, r.cfg.ID); err != nil {
			t.Fatal(err)
		}
		reset := openSink(t, r.cfg, r.dst.conn)
		if st := reset.Status(); st.Phase == replicate.PhaseHalted {
			t.Fatalf("still halted after Reset")
		}
	})
}

func TestSink_Mapping(t *testing.T) {
	t.Run("RenamesAndIgnoreGlobs", func(t *testing.T) {
		mappingRenamesAndIgnoreGlobs(t, memory)
	})
}

// mappingRenamesAndIgnoreGlobs: a database and a collection mapping to
// other names, and an ignore glob, between deployments opened with open.
func mappingRenamesAndIgnoreGlobs(t *testing.T, open deployment) {
	src, dst := open(t), open(t)
	ob := openOutbox(t)
	w := newWorkload(11, "shop", "orders", "items", "tmp_import")
	w.seedDocs(t, src.Client, 40)
	cfg := replicate.Config{ID: "map", Source: "a", Target: dst.Redacted,
		Include: []string{"shop.*"}, Ignore: []string{"shop.tmp_*"},
		Mapping: map[string]string{"shop": "shop_copy", "shop.orders": "archive.orders_v2"}}
	s := openSink(t, cfg, dst)
	l := startRunnerLater(t, ob, "map", s)
	c := startCapture(t, ob, src, "a")
	if err := s.InitialSync(testCtx(t), src); err != nil {
		t.Fatal(err)
	}
	l.start()
	w.run(t, src.Client, 300)
	waitCaptured(t, ob, c.id, w.events)
	waitApplied(t, ob, l.pipe)
	rep := mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
	got := map[string]string{}
	for _, n := range rep.Namespaces {
		got[n.Source] = n.Target
	}
	want := map[string]string{"shop.orders": "archive.orders_v2", "shop.items": "shop_copy.items"}
	if len(got) != len(want) || got["shop.orders"] != want["shop.orders"] || got["shop.items"] != want["shop.items"] {
		t.Fatalf("verified %v, want %v", got, want)
	}
	for _, ns := range [][2]string{{"shop_copy", "tmp_import"}, {"shop", "orders"}, {"shop", "items"}} {
		if n := count(t, dst.Client, ns[0], ns[1]); n != 0 {
			t.Fatalf("target %s.%s holds %d documents, want none", ns[0], ns[1], n)
		}
	}
}

func TestSink_Updates(t *testing.T) {
	oid, _ := primitive.ObjectIDFromHex("65a1b2c3d4e5f60718293000")
	setup := func(t *testing.T) (*replicate.Sink, *source) {
		dst := memory(t)
		no := false
		s := openSink(t, replicate.Config{ID: "upd", Source: "r", Target: "lungo:memory", InitialSync: &no, Workers: 1}, dst)
		if _, err := dst.Client.Database("shop").Collection("orders").InsertOne(testCtx(t), bson.D{
			{Key: "_id", Value: oid}, {Key: "sku", Value: "A-1"}, {Key: "qty", Value: int32(3)}, {Key: "note", Value: "n"},
			{Key: "history", Value: bson.A{1, 2, 3, 4}},
		}); err != nil {
			t.Fatal(err)
		}
		return s, &source{conn: dst}
	}
	get := func(t *testing.T, d *source) bson.M {
		var m bson.M
		if err := d.conn.Client.Database("shop").Collection("orders").FindOne(testCtx(t), bson.D{{Key: "_id", Value: oid}}).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	rec := func(seq uint64, raw []byte) []outbox.Record {
		return []outbox.Record{{Seq: seq, Source: "r", Raw: raw}}
	}
	t.Run("AmbiguousWithoutPostImageIsPermanent", func(t *testing.T) {
		s, _ := setup(t)
		err := s.Deliver(testCtx(t), rec(1, changetest.Event("update")))
		if !errors.Is(err, replicate.ErrNoPostImage) || !sink.IsPermanent(err) {
			t.Fatalf("deliver: %v, want permanent ErrNoPostImage", err)
		}
	})
	t.Run("SetFromUpdatedFields", func(t *testing.T) {
		s, d := setup(t)
		if err := s.Deliver(testCtx(t), rec(1, changetest.Event("update_with_lookup"))); err != nil {
			t.Fatal(err)
		}
		if m := get(t, d); m["qty"] != int32(5) || m["note"] != "n" {
			t.Fatalf("document %v: want qty 5 and the other fields kept", m)
		}
	})
	t.Run("PostImageGoneStillSets", func(t *testing.T) {
		s, d := setup(t)
		if err := s.Deliver(testCtx(t), rec(1, changetest.Event("update_lookup_gone"))); err != nil {
			t.Fatal(err)
		}
		if m := get(t, d); m["qty"] != int32(6) {
			t.Fatalf("document %v: want qty 6", m)
		}
	})
	t.Run("TruncatedArraysAndRemovedFields", func(t *testing.T) {
		s, d := setup(t)
		raw, _ := bson.Marshal(bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: "82AA"}}}, {Key: "operationType", Value: "update"},
			{Key: "clusterTime", Value: primitive.Timestamp{T: uint32(time.Now().Unix()), I: 1}},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: oid}}},
			{Key: "updateDescription", Value: bson.D{
				{Key: "updatedFields", Value: bson.D{{Key: "qty", Value: int32(9)}}},
				{Key: "removedFields", Value: bson.A{"note"}},
				{Key: "truncatedArrays", Value: bson.A{bson.D{{Key: "field", Value: "history"}, {Key: "newSize", Value: int32(2)}}}},
			}},
		})
		if err := s.Deliver(testCtx(t), rec(1, raw)); err != nil {
			t.Fatal(err)
		}
		m := get(t, d)
		if _, ok := m["note"]; ok || m["qty"] != int32(9) || len(m["history"].(bson.A)) != 2 {
			t.Fatalf("document %v: want qty 9, no note, history cut to 2", m)
		}
	})
	t.Run("SourceTransactionInOneTargetTransaction", func(t *testing.T) {
		s, d := setup(t)
		err := s.Deliver(testCtx(t), []outbox.Record{
			{Seq: 1, Source: "r", Raw: changetest.Event("txn_insert_1")},
			{Seq: 2, Source: "r", Raw: changetest.Event("txn_insert_2")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, d.conn.Client, "shop", "orders"), count(t, d.conn.Client, "shop", "customers"); n != 2 || m != 1 {
			t.Fatalf("shop.orders holds %d documents, shop.customers %d; want 2 and 1", n, m)
		}
	})
}
