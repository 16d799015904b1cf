package trigger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/auth"
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
	quitCtx    context.Context // ends at Close: stops the writer and Run
	quit       context.CancelFunc
	writerDone chan struct{}

	// ops serialises mutations and reconciles (see reconcile.go); runCtx
	// is guarded by it.
	ops    sync.Mutex
	runCtx context.Context // nil outside Run

	// mu guards active and closed, only ever over in-memory reads and
	// writes: Status and metrics take it.
	mu     sync.Mutex
	active map[string]*active
	closed bool

	// started is closed once Run has started the enabled triggers.
	started     chan struct{}
	startedOnce sync.Once

	// modMu guards modules and retired (see modules.go).
	modMu   sync.Mutex
	modules map[string]*loadedModule // by function id
	retired map[*loadedModule]struct{}

	statsMu sync.Mutex
	stats   map[string]*stats

	// compileHook, set by tests only, runs before a trigger's function
	// is compiled.
	compileHook func(context.Context)
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
		active: map[string]*active{}, started: make(chan struct{}), modules: map[string]*loadedModule{},
		retired: map[*loadedModule]struct{}{}, stats: map[string]*stats{}}
	m.log.Info().Int64("max_memory_bytes", rt.Config().MemoryBudget).Int64("memory_limit", rt.Config().MemoryLimit).
		Msg("functions' memory budget (triggers.max_memory_bytes) and per-instance cap")
	for id := range deps.DataSources {
		m.sources = append(m.sources, id)
	}
	sort.Strings(m.sources)
	m.queueCh, m.writerDone = make(chan *queueRequest, 4*maxQueueBatch), make(chan struct{})
	m.quitCtx, m.quit = context.WithCancel(context.Background())
	go m.writeQueue()
	return m, nil
}

// Run starts every enabled trigger and keeps them running until ctx ends
// or Close is called; then it stops them and returns nil. Mutations made
// while Run is active take effect at once.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.lockOps(); err != nil {
		return err
	}
	if m.runCtx != nil {
		m.ops.Unlock()
		return errors.New("trigger manager is already running")
	}
	all, err := m.store.findTriggers(ctx, bson.M{})
	if err != nil {
		m.ops.Unlock()
		return err
	}
	m.runCtx = ctx
	for i := range all {
		m.reconcile(ctx, &all[i], all[i].ID, false)
	}
	m.mu.Lock()
	running := len(m.active)
	m.mu.Unlock()
	m.log.Info().Int("triggers", len(all)).Int("running", running).Msg("triggers running")
	m.startedOnce.Do(func() { close(m.started) })
	m.ops.Unlock()

	select {
	case <-ctx.Done():
	case <-m.quitCtx.Done():
	}
	m.ops.Lock()
	m.stopAll()
	m.runCtx = nil
	m.ops.Unlock()
	return nil
}

// Started is closed once Run has started every enabled trigger (those that
// could start) for the first time.
func (m *Manager) Started() <-chan struct{} { return m.started }

// Close stops every trigger and the queue writer and waits for them: a
// guest call in flight ends first (its context is cancelled). Then it
// closes the function modules (waiting for Execute calls until ctx ends),
// the runtime and the queue, and returns their errors joined. When Close
// returns, no goroutine of the Manager runs.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.quit()
	// A mutation in progress finishes first; the next ones see closed.
	m.ops.Lock()
	m.stopAll()
	m.ops.Unlock()
	<-m.writerDone
	return errors.Join(m.closeModules(ctx), m.rt.Close(ctx), m.queue.Close(ctx))
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
