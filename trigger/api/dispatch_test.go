package api_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/outbox"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

func ids(docs []bson.M, field string) []int32 {
	var out []int32
	for _, d := range docs {
		v := d[field]
		if m, ok := v.(bson.M); ok {
			v = m["_id"]
		}
		out = append(out, v.(int32))
	}
	slices.Sort(out)
	return out
}

func TestDispatch_MatchingEventsInOrder(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	audit := e.createFunction("audit", guests["auditenricher"])
	cache := e.createFunction("cache", guests["cacheupdater"])
	big := e.createTrigger(dbTrigger("big-orders", audit.Id, &pb.DatabaseConfig{Database: "shop", Collection: "orders",
		OperationTypes: []string{"insert"}, Match: `{"fullDocument.qty": {"$gte": 5}}`, Project: `{"fullDocument": 0}`}, "audit.*"))
	mirror := e.createTrigger(dbTrigger("mirror", cache.Id, &pb.DatabaseConfig{Database: "shop", Collection: "orders",
		FullDocument: true}, "cache.*"))
	denied := e.createTrigger(dbTrigger("denied", cache.Id, &pb.DatabaseConfig{Database: "shop", Collection: "orders",
		OperationTypes: []string{"delete"}}, "elsewhere.*"))

	var evs [][]byte
	for i := int32(1); i <= 10; i++ {
		evs = append(evs, event("insert", "shop", "orders", i, bson.D{{Key: "_id", Value: i}, {Key: "qty", Value: i}}))
	}
	// Events the triggers must not fire for: another collection, another
	// source, and a big order in another database.
	e.add("other", event("insert", "shop", "orders", int32(50), bson.D{{Key: "_id", Value: int32(50)}, {Key: "qty", Value: int32(9)}}))
	evs = append(evs,
		event("insert", "shop", "customers", int32(60), bson.D{{Key: "_id", Value: int32(60)}, {Key: "qty", Value: int32(9)}}),
		event("insert", "crm", "orders", int32(70), bson.D{{Key: "_id", Value: int32(70)}, {Key: "qty", Value: int32(9)}}))
	// Updates of _id 1 in order: the cache must end at the last one.
	for _, q := range []int32{100, 200, 300} {
		evs = append(evs, event("update", "shop", "orders", int32(1), bson.D{{Key: "_id", Value: int32(1)}, {Key: "qty", Value: q}}))
	}
	evs = append(evs, event("delete", "shop", "orders", int32(2), nil))
	last := e.add("src", evs...)
	for _, tr := range []*pb.Trigger{big, mirror, denied} {
		e.waitAcked(tr, last)
	}

	t.Run("FiresExactlyForMatches", func(t *testing.T) {
		got := e.docs("audit.enriched")
		if want := []int32{5, 6, 7, 8, 9, 10}; !slices.Equal(ids(got, "key"), want) {
			t.Fatalf("audit.enriched keys %v, want %v", ids(got, "key"), want)
		}
		for _, d := range got {
			if d["ns"] != "shop.orders" || d["op"] != "insert" {
				t.Fatalf("entry %v", d)
			}
		}
	})
	t.Run("InOrder", func(t *testing.T) {
		got := e.docs("cache.shop.orders")
		if want := []int32{1, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(ids(got, "_id"), want) {
			t.Fatalf("cache ids %v, want %v (2 deleted)", ids(got, "_id"), want)
		}
		for _, d := range got {
			if d["_id"] == int32(1) && d["doc"].(bson.M)["qty"] != int32(300) {
				t.Fatalf("cache of 1 is %v, want the last update (qty 300)", d)
			}
		}
	})
	t.Run("WriteOutsideAllowedNamespacesIsParked", func(t *testing.T) {
		dls, err := e.mgr.DeadLetters(ctxT(t), denied.Id)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) != 1 || !strings.Contains(dls[0].Error, "not allowed") {
			t.Fatalf("dead letters %+v, want the delete refused as not allowed", dls)
		}
		got, err := e.tc.GetTrigger(ctxT(t), &pb.GetTriggerRequest{Id: denied.Id})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.GetStatus(); st.DeadLetters != 1 || st.Acked != last || st.State != "running" {
			t.Fatalf("status %v", st)
		}
	})
}

func TestDispatch_Unordered(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{PoolSize: 3}})
	audit := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(dbTrigger("parallel", audit.Id, &pb.DatabaseConfig{Unordered: true}, "audit.*"))
	var evs [][]byte
	for i := int32(1); i <= 40; i++ {
		evs = append(evs, event("insert", "shop", "orders", i, bson.D{{Key: "_id", Value: i}}))
	}
	e.waitAcked(tr, e.add("src", evs...))
	if got := e.docs("audit.enriched"); len(got) != 40 {
		t.Fatalf("%d entries, want 40", len(got))
	}
}

func TestDispatch_DisableEnableSkip(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	audit := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(dbTrigger("audit", audit.Id, &pb.DatabaseConfig{}, "audit.*"))
	n := int32(0)
	insert := func(k int) uint64 {
		var evs [][]byte
		for range k {
			n++
			evs = append(evs, event("insert", "shop", "orders", n, bson.D{{Key: "_id", Value: n}}))
		}
		return e.add("src", evs...)
	}
	count := func() int { return len(e.docs("audit.enriched")) }

	e.waitAcked(tr, insert(3))
	if got := count(); got != 3 {
		t.Fatalf("%d entries, want 3", got)
	}
	if _, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id}); err != nil {
		t.Fatal(err)
	}
	seq := insert(2)
	if err := e.mgr.WaitAcked(ctx, tr.Id, seq); err == nil {
		t.Fatal("a disabled trigger is still running")
	}
	if got := count(); got != 3 {
		t.Fatalf("disabled trigger ran: %d entries", got)
	}
	t.Run("EnableResumes", func(t *testing.T) {
		if _, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: tr.Id}); err != nil {
			t.Fatal(err)
		}
		e.waitAcked(tr, seq)
		if got := count(); got != 5 {
			t.Fatalf("%d entries, want 5: the events that arrived while disabled run on enable", got)
		}
	})
	t.Run("EnableSkipsToNow", func(t *testing.T) {
		if _, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id}); err != nil {
			t.Fatal(err)
		}
		insert(4)
		if _, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: tr.Id, SkipToNow: true}); err != nil {
			t.Fatal(err)
		}
		e.waitAcked(tr, insert(1))
		if got := count(); got != 6 {
			t.Fatalf("%d entries, want 6: the 4 skipped events must not run", got)
		}
	})
}

// TestDispatch_Containment runs a trapping, an endlessly looping and a
// memory-hungry function next to a healthy trigger: each bad event ends in
// its trigger's dead letters with the reason, the healthy trigger delivers
// everything, and godwit keeps running.
func TestDispatch_Containment(t *testing.T) {
	// The call deadline ends the looping calls, and it also bounds every
	// other call and each function's first instantiation: all of them run
	// the hand-written module, which needs well under a millisecond. (A Go
	// guest's initialisation alone took up to 500 ms, all of this deadline,
	// at GOMAXPROCS=1 beside two busy loops.)
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{MemoryLimit: 64 << 20, Timeout: 500 * time.Millisecond}})
	bad := e.createFunction("bad", abiWasm)
	healthy := e.createFunction("healthy", abiWasm) // "writ": inserts the event into test.out
	good := e.createTrigger(dbTrigger("good", healthy.Id, &pb.DatabaseConfig{Database: "shop", Collection: "good"}, "test.*"))
	modes := map[string]string{"trap": "trapped", "loop": "deadline", "hogm": "memory limit"}
	triggers := map[string]*pb.Trigger{}
	for mode := range modes {
		triggers[mode] = e.createTrigger(dbTrigger("bad-"+mode, bad.Id, &pb.DatabaseConfig{Database: "shop", Collection: "bad",
			Match: `{"fullDocument.mode": "` + mode + `"}`}))
	}
	var evs [][]byte
	for i := int32(1); i <= 3; i++ {
		evs = append(evs, event("insert", "shop", "good", i, bson.D{{Key: "_id", Value: i}, {Key: "mode", Value: "writ"}}))
		for mode := range modes {
			evs = append(evs, event("insert", "shop", "bad", mode+string(rune('0'+i)), bson.D{{Key: "mode", Value: mode}}))
		}
	}
	last := e.add("src", evs...)
	e.waitAcked(good, last)
	if got := e.docs("test.out"); len(got) != 3 {
		t.Fatalf("healthy trigger wrote %d documents, want 3", len(got))
	}
	for mode, want := range modes {
		t.Run(mode, func(t *testing.T) {
			e.waitAcked(triggers[mode], last)
			dls := deadLetters(t, e, triggers[mode].Id)
			if len(dls) != 3 {
				t.Fatalf("%d dead letters, want 3", len(dls))
			}
			if !strings.Contains(dls[0].Error, want) || dls[0].Attempts != 2 || dls[0].Source != "src" ||
				!strings.Contains(dls[0].Event, `"insert"`) {
				t.Fatalf("dead letters %v, want the 3 events (%q after 2 attempts)", dls, want)
			}
			got, err := e.tc.GetTrigger(ctxT(t), &pb.GetTriggerRequest{Id: triggers[mode].Id})
			if err != nil {
				t.Fatal(err)
			}
			if st := got.GetStatus(); st.State != "running" || st.DeadLetters != 3 || !strings.Contains(st.LastError, want) {
				t.Fatalf("status %v", st)
			}
		})
	}
}

// TestManager_Restart stops everything and opens the same data again:
// triggers, functions and cursors survive, and only new events run.
func TestManager_Restart(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, envOptions{persist: true})
	audit := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(dbTrigger("audit", audit.Id, &pb.DatabaseConfig{}, "audit.*"))
	off := e.createTrigger(dbTrigger("off", audit.Id, &pb.DatabaseConfig{}, "audit.*"))
	if _, err := e.tc.DisableTrigger(ctxT(t), &pb.DisableTriggerRequest{Id: off.Id}); err != nil {
		t.Fatal(err)
	}
	var evs [][]byte
	for i := int32(1); i <= 5; i++ {
		evs = append(evs, event("insert", "shop", "orders", i, bson.D{{Key: "_id", Value: i}}))
	}
	e.waitAcked(tr, e.add("src", evs...))
	e.stop()

	e = startEnv(t, dir, envOptions{persist: true})
	ctx := ctxT(t)
	got, err := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
	if err != nil || got.Name != "audit" || got.GetStatus().GetState() != "running" {
		t.Fatalf("after restart: %v %v", got, err)
	}
	if f, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: audit.Id, IncludeWasm: true}); err != nil || len(f.Wasm) != len(guests["auditenricher"]) {
		t.Fatalf("function after restart: %v", err)
	}
	if got, _ := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: off.Id}); got.GetStatus().GetState() != "disabled" {
		t.Fatalf("disabled trigger is %q after restart", got.GetStatus().GetState())
	}
	last := e.add("src", event("insert", "shop", "orders", int32(6), bson.D{{Key: "_id", Value: int32(6)}}))
	e.waitAcked(tr, last)
	got, err = e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
	if err != nil {
		t.Fatal(err)
	}
	if inv := got.GetStatus().GetInvocations(); inv != 1 {
		t.Fatalf("%d invocations after restart, want 1: the cursor must continue after the 5 handled events", inv)
	}
	if n := len(e.docs("audit.enriched")); n != 6 {
		t.Fatalf("%d entries, want 6", n)
	}
}

// TestManager_BehindRetention lets retention delete events a disabled
// trigger has not seen (its cursor is not registered after a restart), then
// enables it: tolerate_resume_errors skips ahead, otherwise the trigger
// halts; both are audited.
func TestManager_BehindRetention(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, envOptions{persist: true})
	audit := e.createFunction("audit", guests["auditenricher"])
	skip := e.createTrigger(dbTrigger("skip", audit.Id, &pb.DatabaseConfig{TolerateResumeErrors: true}, "audit.*"))
	halt := e.createTrigger(dbTrigger("halt", audit.Id, &pb.DatabaseConfig{}, "audit.*"))
	for _, tr := range []*pb.Trigger{skip, halt} {
		if _, err := e.tc.DisableTrigger(ctxT(t), &pb.DisableTriggerRequest{Id: tr.Id}); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()

	e = startEnv(t, dir, envOptions{persist: true})
	ctx := ctxT(t)
	// Another sink reads and acks everything: retention deletes it, since
	// the disabled triggers' cursors hold nothing.
	if _, err := e.ob.RegisterSink(outbox.SinkCursor("other")); err != nil {
		t.Fatal(err)
	}
	last := e.add("src", event("insert", "shop", "orders", int32(1), bson.D{{Key: "_id", Value: int32(1)}}),
		event("insert", "shop", "orders", int32(2), bson.D{{Key: "_id", Value: int32(2)}}))
	if err := e.ob.Ack(outbox.SinkCursor("other"), last, 2); err != nil {
		t.Fatal(err)
	}
	if st := e.ob.Stats(); st.Oldest != 0 {
		t.Fatalf("retention kept events from %d", st.Oldest)
	}
	s, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: skip.Id})
	if err != nil || s.GetStatus().GetState() != "running" {
		t.Fatalf("enable tolerant trigger: %v %v", s, err)
	}
	h, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: halt.Id})
	if err != nil {
		t.Fatal(err)
	}
	h, _ = e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: halt.Id})
	if st := h.GetStatus(); st.State != "halted" || !strings.Contains(st.LastError, "retention") {
		t.Fatalf("intolerant trigger: %v, want halted about retention", st)
	}
	want := []string{"trigger.resume_skipped:skip", "trigger.changed:skip", "trigger.resume_halted:halt", "trigger.changed:halt"}
	if got := e.audits.kinds(); !slices.Equal(got, want) {
		t.Fatalf("audited %v, want %v", got, want)
	}
	// The tolerant trigger runs new events; enabling the halted one with
	// skip_to_now starts it again.
	next := e.add("src", event("insert", "shop", "orders", int32(3), bson.D{{Key: "_id", Value: int32(3)}}))
	e.waitAcked(skip, next)
	if _, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: halt.Id, SkipToNow: true}); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: halt.Id}); h.GetStatus().GetState() != "running" {
		t.Fatalf("after enable with skip: %v", h.GetStatus())
	}
}

func TestScheduledTrigger_FakeClock(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	clock := newFakeClock(start)
	e := startEnv(t, dir, envOptions{clock: clock, persist: true})
	audit := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(&pb.Trigger{Name: "every5", TriggerType: pb.TriggerType_TRIGGER_TYPE_SCHEDULED, FunctionId: audit.Id, Enabled: true,
		Config: &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "*/5 * * * *"}},
		Writes: &pb.WriteConfig{DataSource: "src", Namespaces: []string{"audit.*"}}})
	runs := func() []string {
		var out []string
		for _, d := range e.docs("audit.enriched") {
			out = append(out, d["_id"].(string))
		}
		slices.Sort(out)
		return out
	}
	at := func(t time.Time) string { return tr.Id + ":" + itoa(t.Unix()) }

	clock.awaitWaiter(t)
	clock.advance(5 * time.Minute) // 00:05:10: the 00:05 run is due
	if err := e.mgr.WaitInvocations(ctxT(t), tr.Id, 1); err != nil {
		t.Fatal(err)
	}
	if got, want := runs(), []string{at(start.Add(-10*time.Second + 5*time.Minute))}; !slices.Equal(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	got, _ := e.tc.GetTrigger(ctxT(t), &pb.GetTriggerRequest{Id: tr.Id})
	if got.GetStatus().GetLastFired().AsTime() != time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC) {
		t.Fatalf("last fired %v", got.GetStatus().GetLastFired().AsTime())
	}

	t.Run("MissedRunsWhileDown", func(t *testing.T) {
		clock.awaitWaiter(t)
		e.stop()
		clock.advance(time.Hour) // 01:05:10; runs 00:10 .. 01:05 were missed
		e = startEnv(t, dir, envOptions{clock: clock, persist: true})
		if err := e.mgr.WaitInvocations(ctxT(t), tr.Id, 1); err != nil {
			t.Fatal(err)
		}
		want := []string{at(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)), at(time.Date(2026, 1, 1, 1, 5, 0, 0, time.UTC))}
		if got := runs(); !slices.Equal(got, want) {
			t.Fatalf("runs %v, want one catch-up run at the latest missed time: %v", got, want)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
