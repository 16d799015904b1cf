package api_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

func authTrigger(name, fnID string, ops ...string) *pb.Trigger {
	return &pb.Trigger{Name: name, TriggerType: pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION, FunctionId: fnID, Enabled: true,
		Config: &pb.Trigger_Authentication{Authentication: &pb.AuthenticationConfig{OperationTypes: ops}},
		Writes: &pb.WriteConfig{DataSource: "src", Namespaces: []string{"audit.*", "test.*"}}}
}

func deadLetters(t *testing.T, e *env, id string) []*pb.DeadLetter {
	t.Helper()
	stream, err := e.tc.ListDeadLetters(ctxT(t), &pb.ListDeadLettersRequest{Id: id})
	return collect(t, stream, err)
}

// Reported events are queued durably before the call returns: a restart
// loses none, and each runs exactly as often as it was reported once
// delivered (the example function is idempotent by event _id).
func TestAuthTrigger_QueuedEventsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, envOptions{persist: true})
	fn := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(authTrigger("logins", fn.Id, "login"))
	ctx := ctxT(t)
	const n = 40
	var want []string
	var last uint64
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Second)
		res, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc",
			UserId: fmt.Sprintf("user%d", i), Time: timestamppb.New(at)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Queued, []string{tr.Id}) || res.Sequence <= last || len(res.Triggered) != 0 {
			t.Fatalf("report %d: %v, want queued for %s after sequence %d", i, res, tr.Id, last)
		}
		last = res.Sequence
		want = append(want, fmt.Sprintf("auth:login:oidc:user%d:%d", i, at.UnixNano()))
	}
	// Stop at once: whatever the trigger had not run yet is in the queue.
	e.stop()
	e = startEnv(t, dir, envOptions{persist: true})
	e.waitAcked(tr, last)
	var got []string
	for _, d := range e.docs("audit.enriched") {
		got = append(got, d["_id"].(string))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after a restart the function wrote %d entries, want the %d reported:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	if st := getTrigger(t, e, tr.Id).GetStatus(); st.Acked != last || st.DeadLetters != 0 {
		t.Fatalf("status %v, want acked %d and no dead letters", st, last)
	}
}

// A failing authentication trigger retries, parks the event in its dead
// letters and goes on; the dead letters can be listed and, once the
// function is fixed, retried.
func TestAuthTrigger_DeadLettersListAndRetry(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("strict", abiWasm)
	tr := e.createTrigger(authTrigger("logins", fn.Id, "login", "create"))

	failing, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc", UserId: "mallory",
		Details: `{"note": "fail"}`, Wait: true})
	if err != nil || !strings.Contains(failing.Failed[tr.Id], "asked to fail") || len(failing.Triggered) != 0 {
		t.Fatalf("failing event: %v %v, want it failed with the function's error", failing, err)
	}
	ok, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "create", Provider: "oidc", UserId: "alice", Wait: true})
	if err != nil || !slices.Equal(ok.Triggered, []string{tr.Id}) {
		t.Fatalf("the next event: %v %v, want it run: the trigger goes on after parking", ok, err)
	}
	dls := deadLetters(t, e, tr.Id)
	if len(dls) != 1 || dls[0].Sequence != failing.Sequence || dls[0].Source != "authentication" ||
		dls[0].Attempts != int32(sinkConfig().MaxAttempts) || !strings.Contains(dls[0].Error, "asked to fail") ||
		!strings.Contains(dls[0].Event, `"mallory"`) {
		t.Fatalf("dead letters %v, want the failing event after %d attempts", dls, sinkConfig().MaxAttempts)
	}
	if st := getTrigger(t, e, tr.Id).GetStatus(); st.DeadLetters != 1 || st.State != "running" {
		t.Fatalf("status %v, want running with 1 dead letter", st)
	}

	// Retrying with the function unchanged fails again and keeps it.
	res, err := e.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: tr.Id})
	if err != nil || len(res.Succeeded) != 0 || !strings.Contains(res.Failed[failing.Sequence], "asked to fail") {
		t.Fatalf("retry with the failing function: %v %v", res, err)
	}
	if dls := deadLetters(t, e, tr.Id); len(dls) != 1 || dls[0].Attempts != int32(sinkConfig().MaxAttempts)+1 {
		t.Fatalf("after a failed retry: %v, want the dead letter kept with one more attempt", dls)
	}
	res, err = e.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: tr.Id, Sequences: []uint64{failing.Sequence + 1000}})
	if err != nil || len(res.Succeeded) != 0 || res.Failed[failing.Sequence+1000] == "" {
		t.Fatalf("retry of an unknown sequence: %v %v", res, err)
	}

	// Fixed function: the retry succeeds, the dead letter is gone.
	if _, err := e.fc.UpdateFunction(ctx, &pb.UpdateFunctionRequest{Function: &pb.Function{Id: fn.Id, Name: fn.Name, Wasm: guests["auditenricher"]}}); err != nil {
		t.Fatal(err)
	}
	res, err = e.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: tr.Id, Sequences: []uint64{failing.Sequence}})
	if err != nil || !slices.Equal(res.Succeeded, []uint64{failing.Sequence}) || len(res.Failed) != 0 {
		t.Fatalf("retry with the fixed function: %v %v", res, err)
	}
	if dls := deadLetters(t, e, tr.Id); len(dls) != 0 {
		t.Fatalf("dead letters after a successful retry: %v", dls)
	}
	if st := getTrigger(t, e, tr.Id).GetStatus(); st.DeadLetters != 0 {
		t.Fatalf("status %v, want no dead letters", st)
	}
	if got := e.docs("audit.enriched"); len(got) != 1 || got[0]["op"] != "login" {
		t.Fatalf("audit.enriched %v, want the retried login", got)
	}

	// A disabled trigger cannot be retried; an unknown one is not found.
	if _, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id}); err != nil {
		t.Fatal(err)
	}
	_, err = e.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: tr.Id})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "enable it") {
		t.Fatalf("retry on a disabled trigger: %v", err)
	}
	_, err = e.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound, "id")
	_, err = e.tc.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{})
	if err == nil {
		stream, _ := e.tc.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{})
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "id")
}

// With wait, the answer names the triggers that had not handled the event
// before the caller's deadline; the event stays queued for them.
func TestAuthTrigger_WaitReportsPending(t *testing.T) {
	// The function loops until its call deadline, twice (two attempts):
	// the trigger cannot handle the event before 12 s however fast the
	// machine, and the server stops waiting at 9 s (a tenth, at most 1 s,
	// before the caller's 10 s deadline). The 1 s left for the answer is
	// the most the server leaves; 100 ms (a 1 s deadline) failed half the
	// runs at GOMAXPROCS=1 beside two busy loops.
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{Timeout: 6 * time.Second}})
	fn := e.createFunction("slow", abiWasm)
	tr := e.createTrigger(authTrigger("logins", fn.Id, "login"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc", UserId: "u",
		Details: `{"x": "loop"}`, Wait: true})
	if err != nil || !slices.Equal(res.Pending, []string{tr.Id}) || len(res.Triggered)+len(res.Failed) != 0 {
		t.Fatalf("report: %v %v, want the trigger pending", res, err)
	}
	// It is parked after its attempts, never lost.
	e.waitAcked(tr, res.Sequence)
	if dls := deadLetters(t, e, tr.Id); len(dls) != 1 || dls[0].Sequence != res.Sequence || !strings.Contains(dls[0].Error, "deadline") {
		t.Fatalf("dead letters %v, want the looping event with a deadline error", dls)
	}
}

// A scheduled run that keeps failing is parked in the trigger's dead
// letters like an event, and the schedule goes on.
func TestScheduledTrigger_FailedRunsAreDeadLettered(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	clock := newFakeClock(start)
	e := startEnv(t, t.TempDir(), envOptions{clock: clock})
	fn := e.createFunction("strict", abiWasm)
	// The run's event carries the trigger's name: "fail" makes the test
	// module fail.
	tr := e.createTrigger(&pb.Trigger{Name: "fail-hourly", TriggerType: pb.TriggerType_TRIGGER_TYPE_SCHEDULED, FunctionId: fn.Id, Enabled: true,
		Config: &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "0 * * * *"}}})
	q := e.mgr.Queue()
	for run := range 2 {
		clock.awaitWaiter(t)
		clock.advance(time.Hour)
		if err := q.Wait(ctxT(t), uint64(run)); err != nil { // the run is queued
			t.Fatal(err)
		}
		e.waitAcked(tr, uint64(run+1))
	}
	dls := deadLetters(t, e, tr.Id)
	if len(dls) != 2 || dls[0].Source != "scheduled" || !strings.Contains(dls[0].Event, `"scheduledTime"`) ||
		!strings.Contains(dls[1].Event, tr.Id) || !strings.Contains(dls[1].Error, "asked to fail") {
		t.Fatalf("dead letters %v, want both failed runs", dls)
	}
	if st := getTrigger(t, e, tr.Id).GetStatus(); st.DeadLetters != 2 || st.State != "running" ||
		!st.LastFired.AsTime().Equal(time.Date(2026, 1, 1, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("status %v, want running, 2 dead letters, last run 02:00", st)
	}
}

// Nothing is queued for an event no running trigger wants.
func TestAuthTrigger_NothingQueuedWithoutMatchingTrigger(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	fn := e.createFunction("audit", guests["auditenricher"])
	e.createTrigger(authTrigger("logins", fn.Id, "login"))
	res, err := e.tc.ReportAuthEvent(ctxT(t), &pb.ReportAuthEventRequest{OperationType: "delete", Provider: "oidc", UserId: "u"})
	if err != nil || res.Sequence != 0 || len(res.Queued) != 0 {
		t.Fatalf("report: %v %v, want nothing queued", res, err)
	}
	if last := e.mgr.Queue().LastSeq(); last != 0 {
		t.Fatalf("the queue holds %d records", last)
	}
}

func getTrigger(t *testing.T, e *env, id string) *pb.Trigger {
	t.Helper()
	tr, err := e.tc.GetTrigger(ctxT(t), &pb.GetTriggerRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// Concurrent reports share transactions; each answer's sequence holds
// exactly the event it reported (read back from the dead letters of a
// trigger whose function fails every event).
func TestAuthTrigger_ConcurrentReportsGetTheirOwnSequence(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	fn := e.createFunction("strict", abiWasm)
	tr := e.createTrigger(authTrigger("logins", fn.Id, "login"))
	ctx := ctxT(t)
	const callers, each = 8, 25
	want := map[uint64]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				user := fmt.Sprintf("c%d-%d", c, i)
				res, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc",
					UserId: user, Details: `{"then": "fail"}`})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if _, dup := want[res.Sequence]; dup {
					t.Errorf("sequence %d answered twice", res.Sequence)
				}
				want[res.Sequence] = user
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(want) != callers*each {
		t.Fatalf("%d distinct sequences, want %d", len(want), callers*each)
	}
	e.waitAcked(tr, slices.Max(slices.Collect(maps.Keys(want))))
	dls := deadLetters(t, e, tr.Id)
	if len(dls) != len(want) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(want))
	}
	for _, dl := range dls {
		if user := want[dl.Sequence]; user == "" || !strings.Contains(dl.Event, `"`+user+`"`) {
			t.Fatalf("sequence %d holds %s, want user %q", dl.Sequence, dl.Event, user)
		}
	}
}

// A full queue makes reports fail with ResourceExhausted at the caller's
// deadline; nothing already queued is lost, and reports succeed again once
// the trigger catches up.
func TestAuthTrigger_FullQueueAnswersResourceExhausted(t *testing.T) {
	// The first event makes the test module loop until its call deadline
	// (8 s, twice): the trigger is held at the queue's head while the
	// reports after it fill the queue, however slow the machine.
	e := startEnv(t, t.TempDir(), envOptions{queueMaxBytes: 600, wasm: wasm.Config{Timeout: 8 * time.Second}})
	fn := e.createFunction("slow", abiWasm)
	tr := e.createTrigger(authTrigger("logins", fn.Id, "login"))
	var queued []uint64
	var full error
	for i := 0; full == nil && i < 50; i++ {
		details := `{"x": "fine"}`
		if i == 0 {
			details = `{"x": "loop"}`
		}
		// The server gives up a tenth of the caller's deadline early (at
		// most 1 s) so that its answer arrives in time: 8 s leaves 800 ms
		// for the answer (200 ms was too little on a 2-core machine under
		// -race at load 13).
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		res, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc",
			UserId: fmt.Sprint("u", i), Details: details})
		cancel()
		if err != nil {
			full = err
			break
		}
		queued = append(queued, res.Sequence)
	}
	if status.Code(full) != codes.ResourceExhausted || !strings.Contains(full.Error(), "queue is full") || len(queued) < 2 {
		t.Fatalf("after %d queued events: %v, want ResourceExhausted about the full queue", len(queued), full)
	}
	// The trigger works through what was queued (parking the looping event
	// after its attempts); then there is room again.
	e.waitAcked(tr, queued[len(queued)-1])
	if dls := deadLetters(t, e, tr.Id); len(dls) != 1 || dls[0].Sequence != queued[0] {
		t.Fatalf("dead letters %v, want only the looping event %d", dls, queued[0])
	}
	res, err := e.tc.ReportAuthEvent(ctxT(t), &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc", UserId: "later"})
	if err != nil || res.Sequence <= queued[len(queued)-1] {
		t.Fatalf("report after the queue drained: %v %v", res, err)
	}
}
