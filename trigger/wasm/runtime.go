package wasm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// ABIVersion is the guest ABI version this host implements; a guest's
// godwit_abi_version export must return it.
const ABIVersion = 1

// Names of the ABI (docs/abi.md).
const (
	HostModule    = "godwit"
	ExportVersion = "godwit_abi_version"
	ExportAlloc   = "godwit_alloc"
	ExportHandle  = "godwit_handle"
	ExportMemory  = "memory"
	wasiModule    = wasi_snapshot_preview1.ModuleName
)

// Config tunes a Runtime. Zero fields take the documented defaults.
type Config struct {
	// CacheDir holds wazero's compilation cache, so a restarted godwit does
	// not compile modules again. Empty: compile in memory only.
	CacheDir string
	// MemoryLimit caps each instance's linear memory in bytes (rounded
	// down to 64 KiB pages). Default 128 MiB.
	MemoryLimit int64
	// MemoryBudget bounds the linear memory of all instances of all
	// modules together, in bytes: an instance reserves its memory before it
	// gets it, idle pooled instances are closed to make room, a new
	// instance waits for room until its call's deadline, and memory.grow
	// past the budget is refused (the call then fails with
	// ErrMemoryBudget). Default DefaultMemoryBudget().
	MemoryBudget int64
	// Timeout is the deadline of one call, and of the first instantiation
	// Compile does to validate a module. Default 5s.
	Timeout time.Duration
	// InitTimeout bounds later instantiations of a module Compile accepted
	// (a Go guest's runtime and package initialisation, when the pool
	// grows). Default 30s.
	InitTimeout time.Duration
	// PoolSize is how many instances of one module may exist, and so how
	// many calls run at once. Default GOMAXPROCS.
	PoolSize int
	// MaxLogBytes bounds the log and stderr text one call keeps. Default
	// 64 KiB.
	MaxLogBytes int
	// LogBytesPerSecond and LogLinesPerSecond are each module's log
	// budget, shared by its instances: a token bucket holding one second's
	// worth. A line past it is dropped (or cut to the bytes left) and
	// counted in Module.LogStats. Defaults DefaultLogBytesPerSecond and
	// DefaultLogLinesPerSecond.
	LogBytesPerSecond int
	LogLinesPerSecond int
	// MaxResultBytes bounds the document a guest passes to set_result; a
	// larger one fails the call with ErrABI. Default 16 MiB, MongoDB's
	// document limit.
	MaxResultBytes int
}

// DefaultMemoryLimit is the default per-instance memory cap.
const DefaultMemoryLimit = 128 << 20

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MemoryLimit < 0:
		return errors.New("memory_limit: must not be negative")
	case c.MemoryLimit > 0 && c.MemoryLimit < 1<<16:
		return errors.New("memory_limit: must be at least one 64 KiB page")
	case c.MemoryLimit > 4<<30:
		return errors.New("memory_limit: wasm32 memory is at most 4 GiB")
	case c.MemoryBudget < 0:
		return errors.New("max_memory_bytes: must not be negative")
	case c.MemoryBudget > 0 && c.MemoryBudget < 1<<16:
		return errors.New("max_memory_bytes: must be at least one 64 KiB page")
	case c.Timeout < 0:
		return errors.New("timeout: must not be negative")
	case c.InitTimeout < 0:
		return errors.New("init_timeout: must not be negative")
	case c.PoolSize < 0:
		return errors.New("pool_size: must not be negative")
	case c.MaxLogBytes < 0:
		return errors.New("max_log_bytes: must not be negative")
	case c.LogBytesPerSecond < 0:
		return errors.New("log_bytes_per_second: must not be negative")
	case c.LogLinesPerSecond < 0:
		return errors.New("log_lines_per_second: must not be negative")
	case c.MaxResultBytes < 0:
		return errors.New("max_result_bytes: must not be negative")
	}
	return nil
}

func (c *Config) defaults() {
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = DefaultMemoryBudget()
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = 30 * time.Second
	}
	if c.PoolSize == 0 {
		c.PoolSize = runtime.GOMAXPROCS(0)
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = 64 << 10
	}
	if c.LogBytesPerSecond == 0 {
		c.LogBytesPerSecond = DefaultLogBytesPerSecond
	}
	if c.LogLinesPerSecond == 0 {
		c.LogLinesPerSecond = DefaultLogLinesPerSecond
	}
	if c.MaxResultBytes == 0 {
		c.MaxResultBytes = 16 << 20
	}
}

// Runtime compiles and runs modules. It is safe for concurrent use.
type Runtime struct {
	cfg   Config
	rt    wazero.Runtime
	cache wazero.CompilationCache
	pages uint32

	// instances maps a guest instance to its pool entry, so host functions
	// (which get the calling api.Module) find the call they belong to
	// without a context value per call.
	instances sync.Map // api.Module → *instance

	budget  *budget
	modMu   sync.Mutex
	modules map[*Module]struct{} // open modules, whose idle instances may be evicted
	onWait  func()               // tests: called when a reservation starts waiting
}

// New creates a runtime. It compiles nothing until Compile.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	r := &Runtime{cfg: cfg, pages: uint32(cfg.MemoryLimit >> 16),
		budget: newBudget(uint64(cfg.MemoryBudget)), modules: map[*Module]struct{}{}}
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(r.pages)
	if cfg.CacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm compilation cache %s: %w", cfg.CacheDir, err)
		}
		r.cache = cache
		rc = rc.WithCompilationCache(cache)
	}
	r.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r.rt); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	if err := r.instantiateHost(ctx); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("instantiate host module: %w", err)
	}
	return r, nil
}

// Config returns the runtime's configuration with defaults applied.
func (r *Runtime) Config() Config { return r.cfg }

// Close closes the runtime and every module compiled with it.
func (r *Runtime) Close(ctx context.Context) error {
	var errs []error
	if r.rt != nil {
		errs = append(errs, r.rt.Close(ctx))
	}
	if r.cache != nil {
		errs = append(errs, r.cache.Close(ctx))
	}
	return errors.Join(errs...)
}

// Compile compiles wasm and checks it against the ABI, including one
// instantiation bounded by Config.Timeout (so a module whose initialisation
// fails, loops or runs too long is rejected here with ErrABI, not at its
// first event). The instance is kept in the pool.
func (r *Runtime) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	compiled, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidModule, err)
	}
	m := &Module{r: r, compiled: compiled, logs: newLogBucket(r.cfg.LogLinesPerSecond, r.cfg.LogBytesPerSecond),
		idle: make(chan *instance, r.cfg.PoolSize), slots: make(chan struct{}, r.cfg.PoolSize)}
	if err := m.check(); err != nil {
		_ = compiled.Close(ctx)
		return nil, err
	}
	r.modMu.Lock()
	r.modules[m] = struct{}{}
	r.modMu.Unlock()
	if err := m.warm(ctx, r.cfg.Timeout); err != nil {
		_ = m.Close(ctx)
		return nil, err
	}
	return m, nil
}

func (m *Module) check() error {
	for _, def := range m.compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		switch mod {
		case wasiModule:
		case HostModule:
			if _, ok := hostFuncs[name]; !ok {
				return fmt.Errorf("%w: imports unknown host function %s.%s (ABI version %d has %v)", ErrABI, mod, name, ABIVersion, hostFuncNames())
			}
		default:
			return fmt.Errorf("%w: imports %s.%s; only %q and %q may be imported", ErrABI, mod, name, HostModule, wasiModule)
		}
	}
	if len(m.compiled.ImportedMemories()) > 0 {
		return fmt.Errorf("%w: imports a memory; the guest must define and export %q", ErrABI, ExportMemory)
	}
	mem, ok := m.compiled.ExportedMemories()[ExportMemory]
	if !ok {
		return fmt.Errorf("%w: does not export its memory as %q", ErrABI, ExportMemory)
	}
	if mem.Min() > m.r.pages {
		return fmt.Errorf("%w: needs %d MiB of memory at start, more than the limit of %d MiB", ErrABI, mem.Min()>>4, m.r.pages>>4)
	}
	m.minMem = uint64(mem.Min()) << 16
	i32 := api.ValueTypeI32
	want := map[string][2][]api.ValueType{
		ExportVersion: {nil, {i32}},
		ExportAlloc:   {{i32}, {i32}},
		ExportHandle:  {{i32, i32}, {i32}},
	}
	exports := m.compiled.ExportedFunctions()
	for name, sig := range want {
		def, ok := exports[name]
		if !ok {
			return fmt.Errorf("%w: does not export %s", ErrABI, name)
		}
		if !sameTypes(def.ParamTypes(), sig[0]) || !sameTypes(def.ResultTypes(), sig[1]) {
			return fmt.Errorf("%w: %s has type %v -> %v, want %v -> %v", ErrABI, name,
				typeNames(def.ParamTypes()), typeNames(def.ResultTypes()), typeNames(sig[0]), typeNames(sig[1]))
		}
	}
	if _, ok := exports["_initialize"]; ok {
		m.start = []string{"_initialize"}
	} else if _, ok := exports["_start"]; ok {
		return fmt.Errorf("%w: is a command module (exports _start); build a reactor (Go: -buildmode=c-shared)", ErrABI)
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typeNames(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}
