package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

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
		defer lm.release()
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
	// reporting an event must not run other users' functions.
	Owner string
}

// AuthResult says which triggers ran for an authentication event.
type AuthResult struct {
	Triggered []string          // trigger ids whose function succeeded
	Failed    map[string]string // trigger id → error
}

// ReportAuthEvent runs every enabled authentication trigger matching ev,
// once each, in parallel, and waits for them. It needs Run to be active.
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
	if len(ev.Details) > 0 {
		fields = append(fields, bson.E{Key: "details", Value: bson.Raw(ev.Details)})
	}
	doc, err := bson.Marshal(fields)
	if err != nil {
		return AuthResult{}, invalid("details", "%v", err)
	}

	if err := m.lock(); err != nil {
		return AuthResult{}, err
	}
	var targets []*active
	for _, a := range m.active {
		c := a.t.Authentication
		if a.t.Type != TypeAuthentication || !slices.Contains(c.OperationTypes, ev.Operation) {
			continue
		}
		if ev.Owner != "" && a.t.UserID != ev.Owner {
			continue
		}
		if len(c.Providers) > 0 && !slices.Contains(c.Providers, ev.Provider) {
			continue
		}
		m.modMu.Lock()
		a.mod.refs++
		m.modMu.Unlock()
		targets = append(targets, a)
	}
	m.mu.Unlock()

	res := AuthResult{Failed: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.mod.release()
			_, err := a.mod.mod.Call(ctx, doc, a.host)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				m.recordErr(a.t.ID, err.Error())
				res.Failed[a.t.ID] = err.Error()
				return
			}
			m.recordOK(a.t.ID, time.Now().UTC())
			res.Triggered = append(res.Triggered, a.t.ID)
		}()
	}
	wg.Wait()
	slices.Sort(res.Triggered)
	return res, nil
}
