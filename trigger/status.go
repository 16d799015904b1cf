package trigger

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Status is a trigger's runtime state.
type Status struct {
	// State is running, disabled, halted, waiting (its function is
	// disabled, or it is stopping to start again, for example with a new
	// module) or error (it could not start; LastError says why).
	State     State
	LastError string
	// Acked is the highest sequence handled: of the outbox for database
	// triggers, of the trigger queue for the others.
	Acked uint64
	// Invocations counts successful calls since this process started.
	Invocations uint64
	// DeadLetters counts the events (or runs) in the trigger's dead letters
	// now; Parked counts every one ever parked (retried ones included).
	DeadLetters uint64
	Parked      uint64
	// Backlog counts the records after the trigger's cursor: captured
	// events (database triggers) or queued ones, for it or not.
	Backlog uint64
	// LastFired is the last scheduled time run (scheduled triggers) or the
	// time of the last successful call.
	LastFired time.Time
	// LogDroppedLines and LogDroppedBytes count what the trigger's function
	// logged past its log budget (triggers.log_lines_per_second,
	// triggers.log_bytes_per_second) since its module was loaded: shared
	// by every trigger calling the function.
	LogDroppedLines, LogDroppedBytes uint64
}

// Trigger states.
const (
	StateRunning  State = "running"
	StateDisabled State = "disabled"
	StateHalted   State = "halted"
	StateWaiting  State = "waiting"
	StateError    State = "error"
)

type stats struct {
	invocations uint64
	lastErr     string
	lastFired   time.Time
	// queued is the scheduled time of the newest scheduled run queued in
	// this process. Status shows it as soon as the run can be invoked: the
	// stored last_fired is written only after the queue append, so it can
	// lag an invocation that is already counted.
	queued   time.Time
	startErr string
	changed  chan struct{}
}

// stats

func (m *Manager) statsFor(id string) *stats {
	s := m.stats[id]
	if s == nil {
		s = &stats{changed: make(chan struct{})}
		m.stats[id] = s
	}
	return s
}

func (m *Manager) update(id string, fn func(*stats)) {
	m.statsMu.Lock()
	s := m.statsFor(id)
	fn(s)
	close(s.changed)
	s.changed = make(chan struct{})
	m.statsMu.Unlock()
}

func (m *Manager) recordOK(id string, at time.Time) {
	m.update(id, func(s *stats) { s.invocations++; s.lastFired = at })
}

// recordErr keeps a trigger's last error for Status, which the API shows:
// driver errors may quote URIs, so passwords are removed here.
func (m *Manager) recordErr(id, msg string) {
	msg = logging.RedactText(msg)
	m.update(id, func(s *stats) { s.lastErr = msg })
}

func (m *Manager) setStartErr(id, msg string) {
	msg = logging.RedactText(msg)
	m.update(id, func(s *stats) { s.startErr = msg })
}

// WaitInvocations blocks until trigger id has run its function successfully
// n times since this process started, or ctx ends.
func (m *Manager) WaitInvocations(ctx context.Context, id string, n uint64) error {
	for {
		m.statsMu.Lock()
		s := m.statsFor(id)
		got, ch, last := s.invocations, s.changed, s.lastErr
		m.statsMu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("trigger %s ran %d of %d times (last error: %q): %w", id, got, n, last, ctx.Err())
		}
	}
}

// Status returns the runtime state of trigger t. It never waits for a
// mutation, a compile or a stopping trigger (reconcile.go).
func (m *Manager) Status(t Trigger) Status {
	m.statsMu.Lock()
	s := *m.statsFor(t.ID)
	m.statsMu.Unlock()
	// m.mu only: Status never waits for a reconcile (reconcile.go).
	a := m.running(t.ID)
	st := Status{Invocations: s.invocations, LastError: s.lastErr, LastFired: s.lastFired}
	if t.Type == TypeScheduled {
		st.LastFired = t.LastFired
		if s.queued.After(st.LastFired) {
			st.LastFired = s.queued
		}
	}
	switch {
	case !t.Enabled:
		st.State = StateDisabled
	case t.Halted != "":
		st.State, st.LastError = StateHalted, t.Halted
	case a != nil && a.runner != nil && a.runner.Status().Halted:
		st.State = StateHalted
	case a != nil:
		st.State = StateRunning
	case s.startErr != "":
		st.State, st.LastError = StateError, s.startErr
	default:
		st.State = StateWaiting
	}
	// Status is shown one trigger per table row: a multi-line wasm stack
	// trace must not break the table.
	st.LastError = oneLine(st.LastError)
	if a != nil && a.mod != nil {
		ls := a.mod.mod.LogStats()
		st.LogDroppedLines, st.LogDroppedBytes = ls.DroppedLines, ls.DroppedBytes
	}
	ob := m.outboxOf(t.Type)
	_ = ob.View(func(v outbox.View) error {
		ss, _, err := v.Sink(sinkID(t.ID))
		if err == nil {
			st.Acked, st.Parked, st.DeadLetters = ss.Acked, ss.Parked, ss.Parked-min(ss.Retried, ss.Parked)
			st.Backlog = v.Last() - min(ss.Acked, v.Last())
		}
		return err
	})
	return st
}

// MemoryStats returns the accounted memory of all function instances
// against triggers.max_memory_bytes.
func (m *Manager) MemoryStats() wasm.MemoryStats { return m.rt.MemoryStats() }

// maxStatusError bounds an error shown in status.
const maxStatusError = 1024

// oneLine makes s one line of printable text of at most maxStatusError
// bytes: line breaks (with the indentation after them) become " | ",
// other control characters spaces.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) && len(s) <= maxStatusError {
		return s
	}
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i, l := range lines {
		lines[i] = strings.TrimSpace(strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, l))
	}
	out := strings.Join(slices.DeleteFunc(lines, func(l string) bool { return l == "" }), " | ")
	if len(out) > maxStatusError {
		cut := maxStatusError
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}

// waitStarted waits until Run has started the triggers, or ctx ends (an
// error then). Once they started it returns nil whatever ctx is.
func (m *Manager) waitStarted(ctx context.Context) error {
	select {
	case <-m.started:
		return nil
	default:
	}
	select {
	case <-m.started:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("triggers are still starting: %w", ctx.Err())
	}
}

// WaitDelivered waits until Run has started the triggers (Started), then
// until every running database trigger has handled outbox sequence seq
// (delivered or parked), or halted, or ctx ended. It returns one error per
// trigger that did not get there, naming it. Triggers that could not start
// or start later are not waited for.
func (m *Manager) WaitDelivered(ctx context.Context, seq uint64) []error {
	if err := m.waitStarted(ctx); err != nil {
		return []error{err}
	}
	m.mu.Lock()
	var running []*active
	for _, a := range m.active {
		if a.t.Type == TypeDatabase && a.runner != nil {
			running = append(running, a)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(running, func(x, y *active) int { return strings.Compare(x.t.Name, y.t.Name) })
	var errs []error
	for _, a := range running {
		if err := a.runner.WaitAcked(ctx, seq); err != nil {
			errs = append(errs, fmt.Errorf("trigger %s: %w", a.t.Name, err))
		}
	}
	return errs
}

// WaitAcked blocks until trigger id has handled every record up to seq of
// its outbox (database triggers) or of the queue (the others), delivered
// or parked in its dead letters, or ctx ends. It waits for Run to start the
// triggers first; then the trigger must be running.
func (m *Manager) WaitAcked(ctx context.Context, id string, seq uint64) error {
	if err := m.waitStarted(ctx); err != nil {
		return fmt.Errorf("trigger %s: %w", id, err)
	}
	a := m.running(id)
	if a == nil || a.runner == nil {
		return fmt.Errorf("trigger %s: %w (not running)", id, ErrNotFound)
	}
	return a.runner.WaitAcked(ctx, seq)
}
