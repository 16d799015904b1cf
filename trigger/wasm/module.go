package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Level is a log level a guest passes to log.
type Level int32

// Log levels of the ABI.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return "info"
}

// Write is a write a guest asked for. The byte slices are copies the host
// may keep.
type Write struct {
	// Kind is "insert", "update" or "delete".
	Kind string
	// Namespace is "db.collection" as the guest passed it.
	Namespace string
	// Document is the inserted document (insert) or the filter.
	Document []byte
	// Update is the update document (update only).
	Update []byte
	Upsert bool
	Many   bool
}

// Host receives what a guest does during one call.
type Host interface {
	// Log records a line the guest logged.
	Log(level Level, msg string)
	// Write performs (or records) a write; errors wrapping ErrWriteDenied,
	// ErrWriteInvalid or ErrDuplicateKey map to their codes, others to
	// CodeFailed.
	Write(ctx context.Context, w Write) error
}

// Result is what a successful call returned.
type Result struct {
	// Document is what the guest passed to set_result (BSON), or nil.
	Document []byte
}

// Module is a compiled module with its pool of instances.
type Module struct {
	r        *Runtime
	compiled wazero.CompiledModule
	start    []string
	minMem   uint64 // initial linear memory, reserved before instantiation
	logs     *logBucket

	idle  chan *instance
	slots chan struct{} // one token per existing instance

	mu     sync.Mutex
	closed bool
	calls  int           // running calls
	idled  chan struct{} // made by Close while calls run, closed by the last
}

type instance struct {
	m             *Module
	mod           api.Module
	mem           api.Memory
	alloc, handle api.Function
	bufPtr        uint32
	bufCap        uint32
	stack         [2]uint64
	bm            *budgetMemory

	// Per-call state, owned by the goroutine holding the instance.
	host   Host
	errMsg string
	result []byte
	logged int
	stderr capWriter
}

// Warm makes sure at least one instance exists, so the first event does not
// pay for instantiation.
func (m *Module) Warm(ctx context.Context) error {
	return m.warm(ctx, m.r.cfg.InitTimeout)
}

func (m *Module) warm(ctx context.Context, initTimeout time.Duration) error {
	in, err := m.get(ctx, initTimeout)
	if err != nil {
		return err
	}
	m.put(in, true)
	return nil
}

// Close closes idle instances, waits for running calls (until ctx ends) and
// closes the compiled module.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	// Counted rather than a WaitGroup: waiting for one until ctx ends
	// would need a goroutine that outlives Close.
	var idled chan struct{}
	if m.calls > 0 {
		idled = make(chan struct{})
		m.idled = idled
	}
	m.mu.Unlock()
	m.r.modMu.Lock()
	delete(m.r.modules, m)
	m.r.modMu.Unlock()
	if idled != nil {
		select {
		case <-idled:
		case <-ctx.Done():
		}
	}
	for {
		select {
		case in := <-m.idle:
			m.r.discard(ctx, in)
			continue
		default:
		}
		break
	}
	return m.compiled.Close(ctx)
}

// callDone ends a call counted by get.
func (m *Module) callDone() {
	m.mu.Lock()
	m.calls--
	if m.calls == 0 && m.idled != nil {
		close(m.idled)
		m.idled = nil
	}
	m.mu.Unlock()
}

// get takes an idle instance or instantiates one (bounded by
// initTimeout).
func (m *Module) get(ctx context.Context, initTimeout time.Duration) (*instance, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.calls++
	m.mu.Unlock()
	select {
	case in := <-m.idle:
		return in, nil
	default:
	}
	select {
	case in := <-m.idle:
		return in, nil
	case m.slots <- struct{}{}:
		in, err := m.instantiate(ctx, initTimeout)
		if err != nil {
			<-m.slots
			m.callDone()
			return nil, err
		}
		return in, nil
	case <-ctx.Done():
		m.callDone()
		return nil, ctx.Err()
	}
}

// put returns an instance to the pool, or closes it when it is not healthy
// (a trap or deadline may leave a guest's runtime in any state).
func (m *Module) put(in *instance, healthy bool) {
	in.host, in.result, in.errMsg = nil, nil, ""
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if healthy && !closed {
		m.idle <- in // never blocks: at most PoolSize instances exist
		m.r.budget.wake()
	} else {
		m.r.discard(context.Background(), in)
		<-m.slots
	}
	m.callDone()
}

func (r *Runtime) discard(ctx context.Context, in *instance) {
	r.instances.Delete(in.mod)
	_ = in.mod.Close(ctx)
}

func (m *Module) instantiate(ctx context.Context, initTimeout time.Duration) (*instance, error) {
	// Room for the initial memory is made before wazero asks for it (it
	// cannot be refused then), waiting at most a call's deadline.
	wctx, wcancel := context.WithTimeout(ctx, m.r.cfg.Timeout)
	err := m.r.reserve(wctx, m.minMem)
	wcancel()
	if err != nil {
		return nil, err
	}
	in := &instance{m: m}
	in.stderr.max = m.r.cfg.MaxLogBytes
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(m.start...).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStdout(&in.stderr).WithStderr(&in.stderr)
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), initTimeout)
	defer cancel()
	mod, err := m.r.rt.InstantiateModule(experimental.WithMemoryAllocator(ictx, m.r.allocator(m.minMem, &in.bm)), m.compiled, cfg)
	if err == nil {
		var v []uint64
		v, err = mod.ExportedFunction(ExportVersion).Call(ictx)
		if err == nil && (len(v) != 1 || uint32(v[0]) != ABIVersion) {
			err = fmt.Errorf("%w: guest speaks ABI version %d, this godwit version %d", ErrABI, uint32(v[0]), ABIVersion)
		}
		if err != nil {
			_ = mod.Close(ctx)
		}
	}
	if err != nil {
		// wazero frees the memory of a module it closed; not always of one
		// that failed before.
		if in.bm != nil {
			in.bm.Free()
		} else {
			m.r.budget.release(m.minMem)
		}
		return nil, m.initError(err, in, initTimeout)
	}
	in.mod = mod
	in.mem = mod.Memory()
	in.alloc = mod.ExportedFunction(ExportAlloc)
	in.handle = mod.ExportedFunction(ExportHandle)
	m.r.instances.Store(mod, in)
	return in, nil
}

// initError says why instantiation (start section, _initialize,
// godwit_abi_version) failed. Every failure is the module's fault, ErrABI,
// including running past the deadline: a module is refused, not retried.
func (m *Module) initError(err error, in *instance, initTimeout time.Duration) error {
	if errors.Is(err, ErrABI) || errors.Is(err, ErrMemoryBudget) {
		return err
	}
	if in.bm != nil && in.bm.refused.Load() {
		return fmt.Errorf("%w; while initialising: %v", m.r.budgetError(0), err)
	}
	msg := strings.TrimSpace(in.stderr.String())
	if msg != "" {
		msg = "; guest output: " + msg
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled) {
		return fmt.Errorf("%w: initialisation (start section, _initialize, %s) did not finish within %s%s", ErrABI, ExportVersion, initTimeout, msg)
	}
	return fmt.Errorf("%w: instantiation failed: %v%s", ErrABI, err, msg)
}

// Call runs the guest's handler on event (a BSON document, not modified
// and not retained). host receives its logs and writes. The call gets the
// runtime's per-call deadline (or ctx's, if earlier).
func (m *Module) Call(ctx context.Context, event []byte, host Host) (Result, error) {
	return m.CallTimeout(ctx, event, host, 0)
}

// CallTimeout is Call with a specific deadline (0: the runtime's).
func (m *Module) CallTimeout(ctx context.Context, event []byte, host Host, timeout time.Duration) (Result, error) {
	if timeout <= 0 {
		timeout = m.r.cfg.Timeout
	}
	in, err := m.get(ctx, m.r.cfg.InitTimeout)
	if err != nil {
		return Result{}, err
	}
	in.host, in.logged = host, 0
	in.bm.refused.Store(false)
	in.stderr.Reset()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := m.call(cctx, in, event)
	cancel()
	healthy := err == nil || errors.Is(err, ErrFunction)
	if err != nil && !healthy {
		err = m.classify(ctx, in, err, timeout)
	}
	if err == nil && in.result != nil {
		res.Document = in.result
	}
	m.put(in, healthy)
	return res, err
}

func (m *Module) call(ctx context.Context, in *instance, event []byte) (Result, error) {
	n := uint32(len(event))
	if n > in.bufCap || in.bufCap == 0 {
		// The buffer stays the host's until the next godwit_alloc (ABI), so
		// it is reused for every event that fits.
		in.stack[0] = uint64(n)
		if err := in.alloc.CallWithStack(ctx, in.stack[:]); err != nil {
			return Result{}, err
		}
		in.bufPtr, in.bufCap = uint32(in.stack[0]), max(n, 1)
		if in.bufPtr == 0 && n > 0 {
			return Result{}, fmt.Errorf("%w: godwit_alloc(%d) returned 0", ErrTrap, n)
		}
	}
	if !in.mem.Write(in.bufPtr, event) {
		return Result{}, fmt.Errorf("%w: godwit_alloc returned %d, outside memory of %d bytes", ErrABI, in.bufPtr, in.mem.Size())
	}
	in.stack[0], in.stack[1] = uint64(in.bufPtr), uint64(n)
	if err := in.handle.CallWithStack(ctx, in.stack[:]); err != nil {
		return Result{}, err
	}
	if code := uint32(in.stack[0]); code != 0 {
		msg := in.errMsg
		if msg == "" {
			msg = fmt.Sprintf("handler returned code %d", code)
		}
		return Result{}, fmt.Errorf("%w: %s", ErrFunction, msg)
	}
	return Result{}, nil
}

// classify turns a wazero error into one of the package's sentinels, with
// what the guest printed to stderr.
func (m *Module) classify(ctx context.Context, in *instance, err error, timeout time.Duration) error {
	if errors.Is(err, ErrABI) || errors.Is(err, ErrTrap) {
		return err
	}
	out := strings.TrimSpace(in.stderr.String())
	detail := err.Error()
	if out != "" {
		detail += "; guest output: " + out
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w (%s)", ErrDeadline, timeout)
		case sys.ExitCodeContextCanceled:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: call cancelled", ErrTrap)
		}
	}
	if in.bm.refused.Load() {
		return fmt.Errorf("%w; the guest failed after its memory.grow was refused: %s", m.r.budgetError(0), detail)
	}
	// wazero does not say that a memory.grow was refused, so a failure
	// close to the cap is taken as running out of memory (Go's runtime
	// grows its heap in 4 MiB arenas and says so on stderr).
	limit := uint64(m.r.pages) << 16
	if strings.Contains(out, "out of memory") || uint64(in.mem.Size())+max(limit/16, 1<<16) >= limit {
		return fmt.Errorf("%w (%d MiB): %s", ErrMemoryLimit, m.r.pages>>4, detail)
	}
	return fmt.Errorf("%w: %s", ErrTrap, detail)
}

// capWriter keeps the first max bytes written to it.
type capWriter struct {
	bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.Len(); room > 0 {
		w.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
