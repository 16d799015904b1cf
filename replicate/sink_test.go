package replicate_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

func TestSink_Deliver(t *testing.T) {
	t.Run("OneWayRandomWorkloadThenFullReplay", func(t *testing.T) {
		oneWayRandomWorkload(t, memory, replicate.TransactionsAuto, 1000)
	})
	t.Run("WorkerCountChange", func(t *testing.T) {
		dst := memory(t)
		no := false
		cfg := replicate.Config{ID: "wc", Source: "conf", Target: "lungo:memory", InitialSync: &no, Workers: 4}
		var recs []outbox.Record
		for i, raw := range sinktest.Inserts(60) {
			recs = append(recs, outbox.Record{Seq: uint64(i + 1), Source: "conf", Raw: raw})
		}
		if err := openSink(t, cfg, dst).Deliver(testCtx(t), recs[:40]); err != nil {
			t.Fatal(err)
		}
		// With another number of workers, documents map to other workers:
		// every worker restarts from the lowest stored position.
		cfg.Workers = 3
		s := openSink(t, cfg, dst)
		if err := s.Deliver(testCtx(t), recs); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.Client, "conf", "items"); n != 60 {
			t.Fatalf("target holds %d documents, want 60", n)
		}
		if st := s.Status(); st.Applied < 20 || st.Applied > 60 {
			t.Fatalf("applied %d events, want the 20 new ones and at most a replay of the rest", st.Applied)
		}
		if n := count(t, dst.Client, meta, replicate.StateCollection); n != 3 {
			t.Fatalf("%d stored positions, want one per worker (3)", n)
		}
	})
	t.Run("EventsOfOtherSourcesAreAcknowledged", func(t *testing.T) {
		dst := memory(t)
		no := false
		s := openSink(t, replicate.Config{ID: "x", Source: "a", Target: "lungo:memory", InitialSync: &no}, dst)
		if err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "b", Raw: changetest.Event("insert")}}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.Client, "shop", "orders"); n != 0 {
			t.Fatalf("an event of another source was applied")
		}
	})
}

// oneWayRandomWorkload replicates two collections from a deployment opened
// with open to another: initial sync while a random workload writes, then
// apply in the given mode; verify finds them equal, and replaying the whole
// outbox (with and without the pipeline's stored positions) changes
// nothing. ops sizes the workload: 3/10 of it seeded per collection, half
// of it written during the copy, all of it after.
func oneWayRandomWorkload(t *testing.T, open deployment, transactions string, ops int) {
	src, dst := open(t), open(t)
	ob := openOutbox(t)
	w := newWorkload(7, "shop", "orders", "items")
	w.seedDocs(t, src.Client, ops*3/10)
	items := src.Client.Database("shop").Collection("items")
	if _, err := items.Indexes().CreateMany(testCtx(t), []mongo.IndexModel{
		{Keys: bson.D{{Key: "n", Value: 1}}},
		{Keys: bson.D{{Key: "code", Value: 1}}, Options: options.Index().SetUnique(true).SetName("code_unique").
			SetPartialFilterExpression(bson.D{{Key: "code", Value: bson.D{{Key: "$exists", Value: true}}}})},
	}); err != nil {
		t.Fatal(err)
	}

	cfg := replicate.Config{ID: "a2b", Source: "a", Target: dst.Redacted, Include: []string{"shop.*"}, CopyBatchSize: 64,
		Transactions: transactions}
	s := openSink(t, cfg, dst)
	// The runner's cursor exists before capture starts: every event
	// after the stream opened stays in the outbox for it.
	l := startRunnerLater(t, ob, "a2b", s)
	c := startCapture(t, ob, src, "a")
	// The workload keeps writing while the collections are copied.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		w.run(t, src.Client, ops/2)
	}()
	if err := s.InitialSync(testCtx(t), src); err != nil {
		t.Fatal(err)
	}
	<-wrote
	for _, name := range []string{"n_1", "code_unique"} {
		if names := indexNames(t, dst.Client, "shop", "items"); !contains(names, name) {
			t.Fatalf("target indexes %v lack %s before streaming", names, name)
		}
	}
	l.start()
	w.run(t, src.Client, ops)
	waitCaptured(t, ob, c.id, w.events)
	waitApplied(t, ob, l.pipe)
	opts := replicate.VerifyConfig(cfg, meta, nil)
	rep := mustEqual(t, src.Client, dst.Client, opts)
	if len(rep.Namespaces) != 2 {
		t.Fatalf("verified %d namespaces, want 2", len(rep.Namespaces))
	}
	st := s.Status()
	if st.Phase != replicate.PhaseStreaming || st.Copied == 0 || st.Applied == 0 || st.LastEventTime.IsZero() {
		t.Fatalf("status %+v: want streaming, documents copied, events applied", st)
	}
	if want := transactions != replicate.TransactionsOff; st.Transactions != want {
		t.Fatalf("status %+v: applied in transactions %v, want %v (transactions: %s)", st, st.Transactions, want, transactions)
	}
	l.pipe.stop()

	recs, err := ob.Read(0, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	replay := func(s *replicate.Sink) {
		t.Helper()
		for i := 0; i < len(recs); i += 97 {
			if err := s.Deliver(testCtx(t), recs[i:min(i+97, len(recs))]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Replay the whole outbox into a fresh sink on the same target:
	// every event is known to be applied.
	again := openSink(t, cfg, dst)
	replay(again)
	mustEqual(t, src.Client, dst.Client, opts)
	if st := again.Status(); st.Applied != 0 {
		t.Fatalf("replay applied %d events, want 0 (all already applied)", st.Applied)
	}

	// Without its stored positions the pipeline applies every event
	// again on top of the final state: each one sets values, none
	// repeats an operation ($inc doubles nothing), so the target ends
	// with the same documents.
	if _, err := dst.Client.Database(meta).Collection(replicate.StateCollection).DeleteMany(testCtx(t), bson.D{}); err != nil {
		t.Fatal(err)
	}
	blind := openSink(t, cfg, dst)
	replay(blind)
	// A field that an old $set adds to a document that already has it
	// (from the future) keeps its place: the same fields and values,
	// possibly in another order.
	unordered := opts
	unordered.IgnoreFieldOrder = true
	mustEqual(t, src.Client, dst.Client, unordered)
	if st := blind.Status(); st.Applied == 0 {
		t.Fatalf("the blind replay applied nothing")
	}
}

func TestSink_InitialSync(t *testing.T) {
	t.Run("RefusesANonEmptyTarget", func(t *testing.T) {
		src, dst := memory(t), memory(t)
		insertMany(t, src.Client, "shop", "orders", 1, 3)
		insertMany(t, dst.Client, "shop", "orders", 100, 1)
		s := openSink(t, replicate.Config{ID: "ne", Source: "a", Target: "lungo:memory"}, dst)
		if err := s.InitialSync(testCtx(t), src); !errors.Is(err, replicate.ErrNotEmpty) {
			t.Fatalf("initial sync: %v, want ErrNotEmpty", err)
		}
	})
	t.Run("FinishedSyncIsNotRepeated", func(t *testing.T) {
		src, dst := memory(t), memory(t)
		insertMany(t, src.Client, "shop", "orders", 1, 30)
		cfg := replicate.Config{ID: "once", Source: "a", Target: "lungo:memory"}
		if err := openSink(t, cfg, dst).InitialSync(testCtx(t), src); err != nil {
			t.Fatal(err)
		}
		insertMany(t, src.Client, "shop", "orders", 100, 5)
		again := openSink(t, cfg, dst)
		if err := again.InitialSync(testCtx(t), src); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.Client, "shop", "orders"); n != 30 {
			t.Fatalf("target holds %d documents, want the 30 of the first copy", n)
		}
		p, err := replicate.LoadProgress(testCtx(t), dst.Client, meta, "once")
		if err != nil {
			t.Fatal(err)
		}
		if p.Phase != replicate.PhaseStreaming || p.Copied != 30 || len(p.Namespaces) != 1 || !p.Namespaces[0].Done {
			t.Fatalf("progress %+v", p)
		}
	})
}

// laterRunner registers a runner's cursor now and starts it on demand, as
// the daemon does around InitialSync.
type laterRunner struct {
	t    testing.TB
	ob   *outbox.Outbox
	id   string
	s    sink.Sink
	pipe *pipe
}

func startRunnerLater(t testing.TB, ob *outbox.Outbox, id string, s sink.Sink) *laterRunner {
	t.Helper()
	if _, err := ob.RegisterSink(outbox.SinkCursor(id)); err != nil {
		t.Fatal(err)
	}
	return &laterRunner{t: t, ob: ob, id: id, s: s}
}

func (l *laterRunner) start() { l.pipe = startRunner(l.t, l.ob, l.id, l.s, sink.PolicyPark) }

var _ = context.Background
