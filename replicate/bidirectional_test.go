package replicate_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// twoWay is A↔B: two deployments, their captures, and a pipeline each way,
// all on one outbox as in one daemon.
type twoWay struct {
	a, b   *source
	ab, ba *pipe
	ob     *outbox.Outbox
	cfgAB  replicate.Config
}

func startTwoWay(t *testing.T, open deployment, workers int) *twoWay {
	t.Helper()
	ob := openOutbox(t)
	ca, cb := open(t), open(t)
	no := false
	targets := map[string]string{"a": cb.Redacted, "b": ca.Redacted}
	cfg := func(id, src string) replicate.Config {
		return replicate.Config{ID: id, Source: src, Target: targets[src], Include: []string{"shop.*"},
			Bidirectional: true, InitialSync: &no, Workers: workers}
	}
	// Both echo filters exist before either pipeline opens: each pipeline
	// needs the filter of its target's capture.
	ea, eb := replicate.NewEchoFilter(meta), replicate.NewEchoFilter(meta)
	sab := openSink(t, cfg("a2b", "a"), cb, replicate.WithPeer(replicate.Peer{SourceID: "b", Echo: eb, Outbox: ob}))
	sba := openSink(t, cfg("b2a", "b"), ca, replicate.WithPeer(replicate.Peer{SourceID: "a", Echo: ea, Outbox: ob}))
	tw := &twoWay{ob: ob, cfgAB: cfg("a2b", "a")}
	tw.ab = startRunner(t, ob, "a2b", sab, sink.PolicyHalt)
	tw.ba = startRunner(t, ob, "b2a", sba, sink.PolicyHalt)
	tw.a = startCaptureWith(t, ob, ca, "a", ea)
	tw.b = startCaptureWith(t, ob, cb, "b", eb)
	return tw
}

// settle waits until both captures stored every user write (and nothing
// else) and both pipelines applied everything. A final write to a
// namespace no pipeline replicates proves that each capture has observed
// every earlier event, echoes included.
func (tw *twoWay) settle(t *testing.T, eventsA, eventsB uint64) {
	t.Helper()
	for _, s := range []*source{tw.a, tw.b} {
		if _, err := s.conn.Client.Database("other").Collection("sentinel").InsertOne(testCtx(t), bson.D{}); err != nil {
			t.Fatal(err)
		}
	}
	waitCaptured(t, tw.ob, "a", eventsA+1)
	waitCaptured(t, tw.ob, "b", eventsB+1)
	waitApplied(t, tw.ob, tw.ab, tw.ba)
	for _, x := range []struct {
		id   string
		want uint64
	}{{"a", eventsA + 1}, {"b", eventsB + 1}} {
		st, _, _ := tw.ob.Source(x.id)
		if st.Captured != x.want {
			t.Errorf("source %s captured %d events, want %d (user writes and the sentinel): replicated writes were captured as echoes", x.id, st.Captured, x.want)
		}
	}
}

func TestSink_Bidirectional(t *testing.T) {
	t.Run("ConcurrentWritesConvergeWithoutEcho", func(t *testing.T) {
		twoWayConcurrentWrites(t, memory, 1500)
	})
}

// twoWayConcurrentWrites: both sides of A↔B write the same documents at
// once; they converge (last writer wins), every write reaches the other
// side once, and no replicated write is captured again (no echo). Each
// side performs ops operations.
func twoWayConcurrentWrites(t *testing.T, open deployment, ops int) {
	tw := startTwoWay(t, open, 2)
	wa := &sharedWorkload{rnd: rand.New(rand.NewPCG(1, 2)), ids: 40}
	wb := &sharedWorkload{rnd: rand.New(rand.NewPCG(3, 4)), ids: 40}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, x := range []struct {
		w *sharedWorkload
		c lungo.IClient
	}{{wa, tw.a.conn.Client}, {wb, tw.b.conn.Client}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- x.w.run(context.Background(), x.c, ops)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tw.settle(t, wa.events, wb.events)

	mustEqual(t, tw.a.conn.Client, tw.b.conn.Client, replicate.VerifyConfig(tw.cfgAB, meta, nil))
	// Every user write of one side reached the other: applied, or
	// logged as a conflict it lost.
	sab, sba := tw.ab.sink.Status(), tw.ba.sink.Status()
	if got := sab.Applied + sab.Conflicts; got != wa.events {
		t.Errorf("a→b applied %d + %d conflicts, want %d (A's writes)", sab.Applied, sab.Conflicts, wa.events)
	}
	if got := sba.Applied + sba.Conflicts; got != wb.events {
		t.Errorf("b→a applied %d + %d conflicts, want %d (B's writes)", sba.Applied, sba.Conflicts, wb.events)
	}
	if sab.Conflicts+sba.Conflicts == 0 {
		t.Errorf("no conflicts: the workload did not exercise the conflict rule")
	}
	if tw.a.echo.Dropped() == 0 || tw.b.echo.Dropped() == 0 {
		t.Errorf("echo filters dropped %d and %d events; replicated writes must be seen and dropped", tw.a.echo.Dropped(), tw.b.echo.Dropped())
	}
	// Last writer wins: each document is what the write with the
	// highest cluster time (either side) made it; no older write,
	// echoed or not, overwrote a newer one.
	checkLastWriterWins(t, tw.ob, tw.a.conn)
	t.Logf("A wrote %d, B wrote %d; conflicts a→b %d, b→a %d", wa.events, wb.events, sab.Conflicts, sba.Conflicts)
}

// checkLastWriterWins compares every document of conn's shop namespaces
// with the newest user write to it in the outbox.
func checkLastWriterWins(t *testing.T, ob *outbox.Outbox, conn *mongodb.Conn) {
	t.Helper()
	recs, err := ob.Read(0, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	type last struct {
		coll   string
		id     bson.RawValue
		ts     primitive.Timestamp
		source string
		doc    bson.Raw // nil: deleted
	}
	want := map[string]last{}
	for _, r := range recs {
		ev, err := change.Parse(r.Raw)
		if err != nil || !change.IsDML(ev.OperationType) || ev.NS.DB != "shop" {
			continue
		}
		id, _ := ev.DocumentID()
		k := ev.NS.Coll + "/" + id.String()
		cur, ok := want[k]
		newer := !ok || ev.ClusterTime.After(cur.ts) || ev.ClusterTime == cur.ts && r.Source > cur.source
		if !newer {
			continue
		}
		l := last{coll: ev.NS.Coll, id: id, ts: ev.ClusterTime, source: r.Source}
		if ev.OperationType != change.OpDelete {
			l.doc = ev.FullDocument
		}
		want[k] = l
	}
	for k, l := range want {
		var got bson.Raw
		err := conn.Client.Database("shop").Collection(l.coll).FindOne(testCtx(t), bson.D{{Key: "_id", Value: l.id}}).Decode(&got)
		switch {
		case l.doc == nil && err == nil:
			t.Errorf("%s: present %s, but the last write (source %s at %v) deleted it", k, got, l.source, l.ts)
		case l.doc != nil && err != nil:
			t.Errorf("%s: missing (%v), but the last write (source %s at %v) left %s", k, err, l.source, l.ts, l.doc)
		case l.doc != nil && string(got) != string(l.doc):
			t.Errorf("%s: %s, but the last write (source %s at %v) left %s", k, got, l.source, l.ts, l.doc)
		}
	}
}

// sharedWorkload writes to a small pool of _ids that the other side writes
// too: inserts (failing harmlessly when the _id exists), deletes and
// re-inserts, $inc, $set, $unset and replaces.
type sharedWorkload struct {
	rnd    *rand.Rand
	ids    int
	events uint64
}

func (w *sharedWorkload) run(ctx context.Context, c lungo.IClient, n int) error {
	for i := 0; i < n; i++ {
		coll := c.Database("shop").Collection([]string{"orders", "items"}[w.rnd.IntN(2)])
		id := int32(1 + w.rnd.IntN(w.ids))
		f := bson.D{{Key: "_id", Value: id}}
		var mod, err = int64(0), error(nil)
		switch w.rnd.IntN(7) {
		case 0:
			_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: int32(0)}, {Key: "by", Value: i}})
			if err == nil {
				mod = 1
			} else if lungo.IsUniquenessError(err) {
				err = nil
			}
		case 1, 2:
			var r *mongoUpdate
			r, err = update(ctx, coll, f, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(1)}}}})
			mod = r.n()
		case 3:
			var r *mongoUpdate
			r, err = update(ctx, coll, f, bson.D{{Key: "$set", Value: bson.D{{Key: "s", Value: fmt.Sprintf("s%d", i)}, {Key: "sub.x", Value: int32(i)}}}})
			mod = r.n()
		case 4:
			var r *mongoUpdate
			r, err = update(ctx, coll, f, bson.D{{Key: "$unset", Value: bson.D{{Key: "s", Value: ""}}}})
			mod = r.n()
		case 5:
			r, e := coll.ReplaceOne(ctx, f, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: int32(i)}}, options.Replace().SetUpsert(w.rnd.IntN(2) == 0))
			err = e
			if e == nil {
				mod = r.ModifiedCount + r.UpsertedCount
			}
		default:
			r, e := coll.DeleteOne(ctx, f)
			err = e
			if e == nil {
				mod = r.DeletedCount
			}
		}
		if err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
		w.events += uint64(mod)
	}
	return nil
}

type mongoUpdate struct{ modified, upserted int64 }

func (u *mongoUpdate) n() int64 {
	if u == nil {
		return 0
	}
	return u.modified + u.upserted
}

func update(ctx context.Context, coll lungo.ICollection, f, u bson.D) (*mongoUpdate, error) {
	r, err := coll.UpdateOne(ctx, f, u)
	if err != nil {
		return nil, err
	}
	return &mongoUpdate{r.ModifiedCount, r.UpsertedCount}, nil
}
