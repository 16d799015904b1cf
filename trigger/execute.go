package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// ExecuteRequest runs a function once, for trying it out.
type ExecuteRequest struct {
	// FunctionID names a stored function; otherwise Wasm is compiled for
	// this call only.
	FunctionID string
	Wasm       []byte
	// Event is the BSON document the function receives.
	Event []byte
	// Timeout overrides the per-call deadline (0: the runtime's).
	Timeout time.Duration
}

// LogLine is one line a function logged.
type LogLine struct {
	Level   string
	Message string
}

// Execution is what one call did. Writes are recorded, never applied.
type Execution struct {
	Result   []byte
	Actions  []wasm.Write
	Logs     []LogLine
	Err      error
	Duration time.Duration
}

// recordingHost collects logs and writes without performing writes.
type recordingHost struct {
	mu      sync.Mutex
	logs    []LogLine
	actions []wasm.Write
}

func (h *recordingHost) Log(level wasm.Level, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, LogLine{Level: level.String(), Message: msg})
}

func (h *recordingHost) Write(_ context.Context, w wasm.Write) error {
	if _, err := splitNS(w.Namespace); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.actions = append(h.actions, w)
	return nil
}

// Execute runs a function on one event and returns its result, the writes
// it asked for and its logs. A failing function is not an error of Execute:
// it is reported in Execution.Err.
func (m *Manager) Execute(ctx context.Context, req ExecuteRequest) (Execution, error) {
	if (req.FunctionID == "") == (len(req.Wasm) == 0) {
		return Execution{}, invalid("function_id", "set exactly one of function_id and wasm")
	}
	if len(req.Event) == 0 {
		return Execution{}, invalid("event", "required: the event as an Extended JSON document")
	}
	var mod *wasm.Module
	if req.FunctionID != "" {
		fn, err := m.store.getFunction(ctx, req.FunctionID, false)
		if err != nil {
			return Execution{}, &FieldError{Field: "function_id", Reason: err.Error(), Err: ErrNotFound}
		}
		lm, err := m.acquire(ctx, fn)
		if err != nil {
			return Execution{}, err
		}
		defer m.release(lm)
		mod = lm.mod
	} else {
		compiled, err := m.compile(ctx, req.Wasm)
		if err != nil {
			return Execution{}, err
		}
		defer compiled.Close(context.WithoutCancel(ctx))
		mod = compiled
	}
	h := &recordingHost{}
	start := time.Now()
	res, err := mod.CallTimeout(ctx, req.Event, h, req.Timeout)
	ex := Execution{Result: res.Document, Err: err, Duration: time.Since(start)}
	h.mu.Lock()
	ex.Logs, ex.Actions = h.logs, h.actions
	h.mu.Unlock()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return ex, ctx.Err()
	}
	return ex, nil
}

// AuthEvent is an authentication event reported by an application or
// identity proxy: MongoDB change streams carry no logins.
type AuthEvent struct {
	// Operation is login, create or delete.
	Operation string
	Provider  string
	UserID    string
	// Time defaults to now.
	Time time.Time
	// Details is an optional BSON document passed through to functions.
	Details []byte
	// Owner, when set, limits the event to that user's triggers: a user
	// reporting an event must not run other users' functions. Functions
	// see it as reportedBy.
	Owner string
	// Wait makes ReportAuthEvent wait until every trigger the event was
	// queued for has handled it, and report how.
	Wait bool
}

// AuthResult says what became of a reported authentication event.
type AuthResult struct {
	// Sequence is the event's position in the trigger queue (0 when it
	// was queued for no trigger).
	Sequence uint64
	// Queued lists the running authentication triggers the event was
	// queued for, durably: each runs it (at least once) even if godwit
	// stops before it does.
	Queued []string
	// With Wait: the triggers whose function ran it successfully, those
	// that gave up on it after retrying (trigger id → last error; the
	// event is in the trigger's dead letters), and those that had not
	// handled it when the wait ended (the context ended, or the trigger
	// was disabled or changed meanwhile; they keep it queued).
	Triggered []string
	Failed    map[string]string
	Pending   []string
}

// ReportAuthEvent queues ev for every running authentication trigger
// matching it. The event is appended to the trigger queue before the call
// returns; each trigger's runner then calls the function like for any
// event, with retries and dead letters. Nothing is queued when no trigger
// matches. With ev.Wait the call also waits for the outcome.
func (m *Manager) ReportAuthEvent(ctx context.Context, ev AuthEvent) (AuthResult, error) {
	if !slices.Contains(authOps, ev.Operation) {
		return AuthResult{}, invalid("operation_type", "%q: use login, create or delete", ev.Operation)
	}
	if ev.Provider == "" {
		return AuthResult{}, invalid("provider", "required")
	}
	if ev.UserID == "" {
		return AuthResult{}, invalid("user_id", "required")
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	fields := bson.D{
		{Key: "_id", Value: fmt.Sprintf("auth:%s:%s:%s:%d", ev.Operation, ev.Provider, ev.UserID, ev.Time.UnixNano())},
		{Key: "operationType", Value: ev.Operation},
		{Key: "provider", Value: ev.Provider},
		{Key: "user", Value: bson.D{{Key: "id", Value: ev.UserID}}},
		{Key: "time", Value: primitive.NewDateTimeFromTime(ev.Time)},
	}
	if ev.Owner != "" {
		fields = append(fields, bson.E{Key: "reportedBy", Value: ev.Owner})
	}
	if len(ev.Details) > 0 {
		fields = append(fields, bson.E{Key: "details", Value: bson.Raw(ev.Details)})
	}
	doc, err := bson.Marshal(fields)
	if err != nil {
		return AuthResult{}, invalid("details", "%v", err)
	}
	rec := outbox.Record{Source: queueAuth, Raw: doc}

	// The event is queued for the triggers running now: right after a
	// start, wait until every enabled trigger had its chance to start, or
	// an event reported then would be queued for none of them.
	select {
	case <-m.started:
	case <-m.quitCtx.Done():
		return AuthResult{}, ErrClosed
	case <-ctx.Done():
		return AuthResult{}, fmt.Errorf("triggers are still starting: %w", ctx.Err())
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return AuthResult{}, ErrClosed
	}
	var targets []*active
	for _, a := range m.active {
		if a.t.Type != TypeAuthentication || a.runner == nil {
			continue
		}
		f := authFilter{ops: a.t.Authentication.OperationTypes, providers: a.t.Authentication.Providers, owner: a.t.UserID}
		if _, ok, _ := f.apply(rec); ok {
			targets = append(targets, a)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(targets, func(x, y *active) int { return strings.Compare(x.t.ID, y.t.ID) })
	res := AuthResult{}
	if len(targets) == 0 {
		return res, nil
	}
	// A trigger started after the lookup starts at the queue's end, before
	// or after this event: it may get it too, which is harmless.
	// Give up (on a full queue, or waiting) a little before the caller's
	// deadline, so that the answer still reaches it.
	early := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		early, cancel = context.WithDeadline(ctx, dl.Add(-min(time.Until(dl)/10, time.Second)))
		defer cancel()
	}
	seq, err := m.enqueue(early, doc)
	if err != nil {
		return res, err
	}
	res.Sequence = seq
	for _, a := range targets {
		res.Queued = append(res.Queued, a.t.ID)
	}
	if !ev.Wait {
		return res, nil
	}
	res.Failed = map[string]string{}
	for _, a := range targets {
		handled, msg, err := m.waitHandled(early, a, seq)
		switch {
		case err != nil:
			return res, err
		case !handled:
			res.Pending = append(res.Pending, a.t.ID)
		case msg != "":
			res.Failed[a.t.ID] = msg
		default:
			res.Triggered = append(res.Triggered, a.t.ID)
		}
	}
	return res, nil
}

// waitHandled waits until trigger a has handled queue record seq, and says
// whether it was parked in the dead letters (with the error). handled is
// false when ctx ended or a stopped first.
func (m *Manager) waitHandled(ctx context.Context, a *active, seq uint64) (handled bool, parked string, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.stopped, cancel)()
	if err := a.runner.WaitAcked(wctx, seq); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false, "", nil
		}
		return false, "", err
	}
	dl, ok, err := m.queue.DeadLetter(sinkID(a.t.ID), seq)
	if err != nil || !ok {
		return true, "", err
	}
	return true, dl.Error, nil
}
