package trigger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Config tunes a Manager. Zero fields take the documented defaults.
type Config struct {
	// MetadataDatabase is the database (in Deps.Metadata) holding the
	// triggers, functions and function_chunks collections. Default "godwit".
	MetadataDatabase string
	// Wasm configures the runtime: compilation cache directory, memory cap
	// per instance (default 128 MiB), per-call deadline (default 5s) and
	// instances per function (default GOMAXPROCS).
	Wasm wasm.Config
	// MaxModuleBytes bounds a function's module. Default 32 MiB.
	MaxModuleBytes int
	// MaxFunctionsPerUser, MaxTriggersPerUser and MaxModuleBytesPerUser
	// are each user's quotas: functions, triggers and the summed size of
	// their modules. Going past one answers a *LimitError (ErrExhausted).
	// Defaults DefaultMaxFunctionsPerUser, DefaultMaxTriggersPerUser and
	// DefaultMaxModuleBytesPerUser; -1: no quota.
	MaxFunctionsPerUser   int
	MaxTriggersPerUser    int
	MaxModuleBytesPerUser int64
	// Delivery tunes every database trigger's runner: batch size, attempts
	// per event before it is parked in the trigger's dead letters (default
	// 5) and backoff between attempts (default 100ms doubling to 30s). The
	// policy is always park. Scheduled triggers use MaxAttempts and the
	// backoff too.
	Delivery sink.RunnerConfig
	// Clock drives scheduled triggers. Default: the system clock.
	Clock Clock
	// QueuePath is the trigger queue: a second outbox file holding the
	// authentication events reported and the scheduled runs due, each
	// dispatched from a per-trigger cursor like captured events. Default:
	// trigger-queue.db next to Deps.Outbox.
	QueuePath string
	// QueueMaxBytes bounds the queued records; ReportAuthEvent waits (and
	// fails when its context ends) while the queue is full. Default 64 MiB.
	QueueMaxBytes int64
}

// DefaultQueueMaxBytes is the default bound of the trigger queue.
const DefaultQueueMaxBytes = 64 << 20

// Record sources in the trigger queue.
const (
	queueAuth     = "authentication"
	queueSchedule = "scheduled"
)

// DefaultMaxModuleBytes is the default bound of a function's module.
const DefaultMaxModuleBytes = 32 << 20

// Validate names the first bad field.
func (c Config) Validate() error {
	if err := c.Wasm.Validate(); err != nil {
		return fmt.Errorf("wasm.%w", err)
	}
	if c.MaxModuleBytes < 0 {
		return errors.New("max_module_bytes: must not be negative")
	}
	if c.MaxFunctionsPerUser < -1 || c.MaxTriggersPerUser < -1 || c.MaxModuleBytesPerUser < -1 {
		return errors.New("max_functions_per_user, max_triggers_per_user, max_module_bytes_per_user: want a positive number, 0 for the default or -1 for no quota")
	}
	if c.Delivery.Policy == sink.PolicyHalt {
		return errors.New("delivery.policy: triggers always park failed events in their dead letters")
	}
	if err := c.Delivery.Validate(); err != nil {
		return fmt.Errorf("delivery.%w", err)
	}
	return nil
}

// Deps is what a Manager works with. The Manager does not close them.
type Deps struct {
	// Outbox holds the captured events; each enabled database trigger has
	// a cursor "trigger:<id>" in it.
	Outbox *outbox.Outbox
	// Metadata is the deployment holding the metadata database.
	Metadata lungo.IClient
	// DataSources maps capture source ids to their deployments: the valid
	// data_source values, and where functions' writes go.
	DataSources map[string]lungo.IClient
	// Log receives the manager's and the functions' logs.
	Log zerolog.Logger
	// Audit, when set, records events that need an audit trail: every
	// change to a trigger or function, and a trigger skipping or halting
	// because its cursor fell behind retention. It is called after the
	// change is stored.
	Audit func(context.Context, AuditEvent) error
	// Allow, when set, returns the allow-list of a user's triggers: which
	// data sources and namespaces they may watch and write. CreateTrigger
	// and UpdateTrigger refuse a trigger outside its owner's allow-list
	// (ErrNotAllowed); a running trigger skips events and is denied writes
	// outside it, so a list narrowed later still binds older triggers.
	// Nil allows everything.
	Allow func(user string) auth.Allow
}

// AuditEvent is something that must be audited.
type AuditEvent struct {
	// Kind is one of the Audit constants.
	Kind string
	// Action is what changed for AuditTriggerChanged and
	// AuditFunctionChanged: create, update, enable, disable or delete.
	Action       string
	TriggerID    string
	TriggerName  string
	FunctionID   string
	FunctionName string
	// UserID is the owner of the trigger or function.
	UserID string
	// Actor is the authenticated user who made the change (an admin may
	// change another user's trigger); empty for what godwit did itself or
	// without tokens.
	Actor string
	// Detail says what happened, for people.
	Detail string
	At     time.Time
}

// Audit kinds.
const (
	AuditResumeSkipped   = "trigger.resume_skipped"
	AuditResumeHalted    = "trigger.resume_halted"
	AuditTriggerChanged  = "trigger.changed"
	AuditFunctionChanged = "function.changed"
	// AuditOwnerRevoked: a trigger did not start because its owner has no
	// token (auth.NoAccess): no rights at all until an admin gives the
	// owner a token again or moves the trigger to another owner.
	AuditOwnerRevoked = "trigger.owner_revoked"
)

// Clock is the time source of scheduled triggers.
type Clock interface {
	Now() time.Time
	// After sends the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Status is a trigger's runtime state.
type Status struct {
	// State is running, disabled, halted, waiting (its function is
	// disabled) or error (it could not start; LastError says why).
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
	StateRunning  = "running"
	StateDisabled = "disabled"
	StateHalted   = "halted"
	StateWaiting  = "waiting"
	StateError    = "error"
)

// Manager owns triggers and functions: their storage, the wasm runtime,
// one dispatcher per enabled trigger, and the scheduler.
type Manager struct {
	cfg     Config
	deps    Deps
	log     zerolog.Logger
	store   *store
	rt      *wasm.Runtime
	sources []string
	// queue holds authentication events and scheduled runs (see
	// Config.QueuePath); database triggers read Deps.Outbox. Reported
	// events reach it through the writer (queue.go).
	queue      *outbox.Outbox
	queueCh    chan *queueRequest
	quitCtx    context.Context // ends at Close
	stopWriter context.CancelFunc
	writerDone chan struct{}

	// mu serialises mutations and guards the fields below.
	mu     sync.Mutex
	runCtx context.Context // nil outside Run
	active map[string]*active
	closed bool
	// started is closed once Run has started the enabled triggers.
	started chan struct{}

	modMu   sync.Mutex
	modules map[string]*loadedModule // by function id

	statsMu sync.Mutex
	stats   map[string]*stats
}

// active is a started trigger.
type active struct {
	t      Trigger
	fn     Function
	mod    *loadedModule
	host   *triggerHost
	cancel context.CancelFunc
	done   chan struct{}
	runner *sink.Runner
	sink   *triggerSink
}

type stats struct {
	invocations uint64
	lastErr     string
	lastFired   time.Time
	startErr    string
	changed     chan struct{}
}

// Open opens the metadata store and the wasm runtime. Triggers start
// running with Run.
func Open(ctx context.Context, cfg Config, deps Deps) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Outbox == nil || deps.Metadata == nil {
		return nil, errors.New("open triggers: Outbox and Metadata are required")
	}
	if cfg.MetadataDatabase == "" {
		cfg.MetadataDatabase = "godwit"
	}
	if cfg.MaxModuleBytes == 0 {
		cfg.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if cfg.QueuePath == "" {
		cfg.QueuePath = filepath.Join(filepath.Dir(deps.Outbox.Path()), "trigger-queue.db")
	}
	if cfg.QueueMaxBytes == 0 {
		cfg.QueueMaxBytes = DefaultQueueMaxBytes
	}
	cfg.quotaDefaults()
	cfg.Delivery.Policy = sink.PolicyPark
	queue, err := outbox.Open(cfg.QueuePath, outbox.Options{MaxBytes: cfg.QueueMaxBytes})
	if err != nil {
		return nil, fmt.Errorf("open the trigger queue: %w", err)
	}
	rt, err := wasm.New(ctx, cfg.Wasm)
	if err != nil {
		_ = queue.Close(ctx)
		return nil, fmt.Errorf("open triggers: %w", err)
	}
	m := &Manager{cfg: cfg, deps: deps, log: deps.Log.With().Str("component", "trigger").Logger(),
		store: newStore(deps.Metadata, cfg.MetadataDatabase), rt: rt, queue: queue,
		active: map[string]*active{}, started: make(chan struct{}), modules: map[string]*loadedModule{}, stats: map[string]*stats{}}
	m.log.Info().Int64("max_memory_bytes", rt.Config().MemoryBudget).Int64("memory_limit", rt.Config().MemoryLimit).
		Msg("functions' memory budget (triggers.max_memory_bytes) and per-instance cap")
	for id := range deps.DataSources {
		m.sources = append(m.sources, id)
	}
	sort.Strings(m.sources)
	m.queueCh, m.writerDone = make(chan *queueRequest, 4*maxQueueBatch), make(chan struct{})
	m.quitCtx, m.stopWriter = context.WithCancel(context.Background())
	go m.writeQueue()
	return m, nil
}

// Run starts every enabled trigger and keeps them running until ctx ends;
// then it stops them and returns nil. Mutations made while Run is active
// take effect at once.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.runCtx != nil {
		m.mu.Unlock()
		return errors.New("trigger manager is already running")
	}
	m.runCtx = ctx
	all, err := m.store.findTriggers(ctx, bson.M{})
	if err != nil {
		m.runCtx = nil
		m.mu.Unlock()
		return err
	}
	for i := range all {
		m.reconcileLocked(ctx, &all[i], all[i].ID, false)
	}
	m.log.Info().Int("triggers", len(all)).Int("running", len(m.active)).Msg("triggers running")
	select {
	case <-m.started:
	default:
		close(m.started)
	}
	m.mu.Unlock()

	<-ctx.Done()
	m.mu.Lock()
	for id := range m.active {
		m.stopLocked(id)
	}
	m.runCtx = nil
	m.mu.Unlock()
	return nil
}

// Started is closed once Run has started every enabled trigger (those that
// could start) for the first time.
func (m *Manager) Started() <-chan struct{} { return m.started }

// Close stops every trigger, closes the function modules and the runtime.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for id := range m.active {
		m.stopLocked(id)
	}
	m.mu.Unlock()
	m.stopWriter()
	<-m.writerDone
	m.modMu.Lock()
	var errs []error
	for id, lm := range m.modules {
		errs = append(errs, lm.mod.Close(ctx))
		delete(m.modules, id)
	}
	m.modMu.Unlock()
	errs = append(errs, m.rt.Close(ctx), m.queue.Close(ctx))
	return errors.Join(errs...)
}

func sinkID(triggerID string) outbox.CursorID { return outbox.TriggerCursor(triggerID) }

// SinkID returns the outbox sink id of a trigger's cursor (and dead
// letters): in the outbox for database triggers, in the trigger queue for
// the others.
func SinkID(triggerID string) outbox.CursorID { return sinkID(triggerID) }

// outboxOf returns where triggers of type typ read their events.
func (m *Manager) outboxOf(typ Type) *outbox.Outbox {
	if typ == TypeDatabase {
		return m.deps.Outbox
	}
	return m.queue
}

// Queue returns the trigger queue (authentication events and scheduled
// runs).
func (m *Manager) Queue() *outbox.Outbox { return m.queue }

// reconcileLocked makes the running state of trigger id match t (nil: the
// trigger is gone). restart forces a running trigger to restart (its
// configuration or function changed).
func (m *Manager) reconcileLocked(ctx context.Context, t *Trigger, id string, restart bool) {
	a := m.active[id]
	want := t != nil && t.Enabled && t.Halted == "" && m.runCtx != nil
	var fn Function
	if want {
		var err error
		fn, err = m.store.getFunction(ctx, t.FunctionID, false)
		if err != nil {
			m.setStartErr(id, err.Error())
			want = false
		} else if !fn.Enabled {
			want = false
		}
	}
	if a != nil && (!want || restart || a.fn.SHA256 != fn.SHA256) {
		m.stopLocked(id)
		a = nil
	}
	if !want {
		m.unregister(id)
		return
	}
	if a != nil {
		a.t = *t // same config: keep running (for example a rename)
		return
	}
	if err := m.startLocked(ctx, *t, fn); err != nil {
		m.setStartErr(id, err.Error())
		m.log.Error().Err(err).Str("trigger", t.Name).Str("trigger_id", id).Msg("trigger did not start")
		return
	}
	m.setStartErr(id, "")
}

// unregister stops a trigger's cursor from holding retention (of the
// outbox or the queue: a trigger has a cursor in one of them); the cursor
// stays, so enabling the trigger resumes from it.
func (m *Manager) unregister(id string) {
	for _, ob := range []*outbox.Outbox{m.deps.Outbox, m.queue} {
		if err := ob.UnregisterSink(sinkID(id)); err != nil {
			m.log.Warn().Err(err).Str("trigger_id", id).Msg("unregister trigger cursor")
		}
	}
}

func (m *Manager) startLocked(ctx context.Context, t Trigger, fn Function) error {
	if m.allowOf(t.UserID).None() {
		m.audit(ctx, AuditOwnerRevoked, t, fmt.Sprintf("not started: its owner %s has no token (revoked) and so no rights; "+
			"an admin gives %s a token again (api.tokens) or moves the trigger to another owner (update with user_id)", t.UserID, t.UserID))
		return fmt.Errorf("%w: its owner %s has no token (revoked); an admin gives %s a token again or moves the trigger to another owner",
			ErrNotAllowed, t.UserID, t.UserID)
	}
	lm, err := m.acquire(ctx, fn)
	if err != nil {
		return err
	}
	host, err := m.newHost(t, fn)
	if err != nil {
		lm.release()
		return err
	}
	actx, cancel := context.WithCancel(m.runCtx)
	a := &active{t: t, fn: fn, mod: lm, host: host, cancel: cancel, done: make(chan struct{})}
	log := m.log.With().Str("trigger", t.Name).Str("trigger_id", t.ID).Logger()
	ts, err := m.newTriggerSink(ctx, a)
	if err != nil || ts == nil { // nil: halted, behind retention
		cancel()
		lm.release()
		return err
	}
	a.sink = ts
	a.runner = sink.NewRunner(sinkID(t.ID), m.outboxOf(t.Type), ts, m.cfg.Delivery, log)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.runner.Run(actx); err != nil {
			m.recordErr(t.ID, err.Error())
			log.Error().Err(err).Msg("trigger stopped")
		}
	}()
	if t.Type == TypeScheduled {
		// The schedule queues runs; the runner above calls the function.
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.runScheduled(actx, a, log)
		}()
	}
	go func() { wg.Wait(); close(a.done) }()
	m.active[t.ID] = a
	log.Info().Str("type", string(t.Type)).Str("function", fn.Name).Msg("trigger started")
	return nil
}

func (m *Manager) stopLocked(id string) {
	a := m.active[id]
	if a == nil {
		return
	}
	a.cancel()
	<-a.done
	a.mod.release()
	delete(m.active, id)
}

func (m *Manager) audit(ctx context.Context, kind string, t Trigger, detail string) {
	m.log.Warn().Str("trigger", t.Name).Str("trigger_id", t.ID).Str("audit", kind).Msg(detail)
	m.record(ctx, AuditEvent{Kind: kind, TriggerID: t.ID, TriggerName: t.Name, UserID: t.UserID, Detail: detail})
}

func (m *Manager) record(ctx context.Context, ev AuditEvent) {
	if m.deps.Audit == nil {
		return
	}
	ev.At = time.Now().UTC()
	if err := m.deps.Audit(ctx, ev); err != nil {
		m.log.Error().Err(err).Str("audit", ev.Kind).Str("trigger_id", ev.TriggerID).Str("function_id", ev.FunctionID).
			Msg("could not audit")
	}
}

// actor is the authenticated user acting in ctx ("" without tokens).
func actor(ctx context.Context) string {
	id, _ := auth.FromContext(ctx)
	return id.User
}

// changed logs and audits a stored change to trigger t.
func (m *Manager) changed(ctx context.Context, action string, t Trigger) {
	who := actor(ctx)
	m.log.Info().Str("trigger", t.Name).Str("trigger_id", t.ID).Str("owner", t.UserID).Str("actor", who).
		Str("action", action).Msg("trigger changed")
	m.record(ctx, AuditEvent{Kind: AuditTriggerChanged, Action: action, TriggerID: t.ID, TriggerName: t.Name,
		FunctionID: t.FunctionID, UserID: t.UserID, Actor: who, Detail: describe(action, t.UserID, who)})
}

// functionChanged logs and audits a stored change to function f.
func (m *Manager) functionChanged(ctx context.Context, action string, f Function) {
	who := actor(ctx)
	m.log.Info().Str("function", f.Name).Str("function_id", f.ID).Str("owner", f.UserID).Str("actor", who).
		Str("action", action).Msg("function changed")
	m.record(ctx, AuditEvent{Kind: AuditFunctionChanged, Action: action, FunctionID: f.ID, FunctionName: f.Name,
		UserID: f.UserID, Actor: who, Detail: describe(action, f.UserID, who) + ", module sha256 " + f.SHA256})
}

func describe(action, owner, actor string) string {
	switch {
	case actor == "":
		return action + "d (owner " + owner + ")"
	case actor == owner:
		return action + "d by " + actor
	}
	return action + "d by " + actor + " (owner " + owner + ")"
}

// allowOf returns the allow-list of user's triggers.
func (m *Manager) allowOf(user string) auth.Allow {
	if m.deps.Allow == nil {
		return auth.Allow{}
	}
	return m.deps.Allow(user)
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

// Status returns the runtime state of trigger t.
func (m *Manager) Status(t Trigger) Status {
	m.statsMu.Lock()
	s := *m.statsFor(t.ID)
	m.statsMu.Unlock()
	m.mu.Lock()
	a := m.active[t.ID]
	m.mu.Unlock()
	st := Status{Invocations: s.invocations, LastError: s.lastErr, LastFired: s.lastFired}
	if t.Type == TypeScheduled {
		st.LastFired = t.LastFired
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

// RetryDeadLetters calls running trigger id's function once more on its
// dead letters with the given sequences (every one when seqs is empty),
// oldest first. Those that succeed are removed from the dead letters;
// those that fail again stay with the new error, which failed reports.
// Unknown sequences are reported as failed too.
func (m *Manager) RetryDeadLetters(ctx context.Context, id string, seqs []uint64) (succeeded []uint64, failed map[uint64]string, err error) {
	if err := m.lock(); err != nil {
		return nil, nil, err
	}
	a := m.active[id]
	if a != nil {
		m.modMu.Lock()
		a.mod.refs++ // kept open even if the trigger stops meanwhile
		m.modMu.Unlock()
	}
	m.mu.Unlock()
	if a == nil {
		return nil, nil, fmt.Errorf("%w: trigger %s is not running: enable it (and its function) first", ErrNotRunning, id)
	}
	defer a.mod.release()
	ob, sid := m.outboxOf(a.t.Type), sinkID(id)
	all, err := ob.DeadLetters(sid)
	if err != nil {
		return nil, nil, err
	}
	failed = map[uint64]string{}
	want := map[uint64]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	for _, dl := range all {
		seq := dl.Record.Seq
		if len(want) > 0 && !want[seq] {
			continue
		}
		delete(want, seq)
		ev, ok, err := a.sink.filter.apply(dl.Record)
		if err == nil && !ok {
			err = errors.New("the trigger no longer fires for this event (its configuration changed since)")
		}
		if err == nil {
			err = a.sink.invoke(ctx, ev)
		}
		if ctx.Err() != nil {
			return succeeded, failed, ctx.Err()
		}
		msg := ""
		if err != nil {
			msg = logging.RedactText(err.Error())
			failed[seq] = msg
		}
		if _, err := ob.RetriedDeadLetter(sid, seq, msg); err != nil {
			return succeeded, failed, err
		}
		if msg == "" {
			succeeded = append(succeeded, seq)
		}
	}
	for seq := range want {
		failed[seq] = "no such dead letter"
	}
	return succeeded, failed, nil
}

// DeadLetters returns the events (database triggers), authentication
// events or scheduled runs a trigger gave up on, oldest first.
func (m *Manager) DeadLetters(ctx context.Context, id string) ([]outbox.DeadLetter, error) {
	t, err := m.store.getTrigger(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.outboxOf(t.Type).DeadLetters(sinkID(id))
}

// modules

// loadedModule is a compiled function shared by the triggers calling it;
// it is closed when it was replaced and its last user released it.
type loadedModule struct {
	m       *Manager
	mod     *wasm.Module
	sha     string
	refs    int
	retired bool
}

func (lm *loadedModule) release() {
	lm.m.modMu.Lock()
	lm.refs--
	closeIt := lm.retired && lm.refs == 0
	lm.m.modMu.Unlock()
	if closeIt {
		_ = lm.mod.Close(context.Background())
	}
}

// acquire returns the compiled module of fn, compiling it on first use.
func (m *Manager) acquire(ctx context.Context, fn Function) (*loadedModule, error) {
	m.modMu.Lock()
	defer m.modMu.Unlock()
	if lm := m.modules[fn.ID]; lm != nil && lm.sha == fn.SHA256 {
		lm.refs++
		return lm, nil
	}
	full, err := m.store.getFunction(ctx, fn.ID, true)
	if err != nil {
		return nil, err
	}
	mod, err := m.rt.Compile(ctx, full.Wasm)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	lm := &loadedModule{m: m, mod: mod, sha: full.SHA256, refs: 1}
	m.retireLocked(fn.ID)
	m.modules[fn.ID] = lm
	return lm, nil
}

// adopt keeps a module compiled while validating a create or update, so
// the first trigger does not compile it again.
func (m *Manager) adopt(fnID, sha string, mod *wasm.Module) {
	m.modMu.Lock()
	defer m.modMu.Unlock()
	m.retireLocked(fnID)
	m.modules[fnID] = &loadedModule{m: m, mod: mod, sha: sha}
}

func (m *Manager) retireLocked(fnID string) {
	old := m.modules[fnID]
	if old == nil {
		return
	}
	delete(m.modules, fnID)
	old.retired = true
	if old.refs == 0 {
		go func() { _ = old.mod.Close(context.Background()) }()
	}
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// compile validates a module for create and update.
func (m *Manager) compile(ctx context.Context, b []byte) (*wasm.Module, error) {
	if len(b) == 0 {
		return nil, invalid("wasm", "required: the module's bytes")
	}
	if len(b) > m.cfg.MaxModuleBytes {
		return nil, invalid("wasm", "%d bytes is more than the limit of %d", len(b), m.cfg.MaxModuleBytes)
	}
	mod, err := m.rt.Compile(ctx, b)
	if errors.Is(err, wasm.ErrInvalidModule) || errors.Is(err, wasm.ErrABI) {
		return nil, invalid("wasm", "%v", err)
	}
	return mod, budgetError(err)
}

func (m *Manager) check() error {
	if m.closed {
		return ErrClosed
	}
	return nil
}

// WaitAcked blocks until trigger id has handled every record up to seq of
// its outbox (database triggers) or of the queue (the others), delivered
// or parked in its dead letters, or ctx ends. The trigger must be running.
func (m *Manager) WaitAcked(ctx context.Context, id string, seq uint64) error {
	m.mu.Lock()
	a := m.active[id]
	m.mu.Unlock()
	if a == nil || a.runner == nil {
		return fmt.Errorf("trigger %s: %w (not running)", id, ErrNotFound)
	}
	return a.runner.WaitAcked(ctx, seq)
}
