package wasm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/guest/guestbuild"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

var (
	abiWasm  []byte // testdata/abi.wat, assembled by hand (committed)
	noopWasm []byte // guest/examples/noop, built in TestMain
	cacheDir string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if abiWasm, err = os.ReadFile("testdata/abi.wasm"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir, err := os.MkdirTemp("", "godwit-wasm-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// Shared with every test process on the machine (keyed by module
		// hash and wazero version): the Go guest compiles once, not once
		// per run, which under -race on a busy machine takes a minute.
		cacheDir = filepath.Join(os.TempDir(), "godwit-test-wazero-cache")
		mods, err := guestbuild.Build(context.Background(), dir, guestbuild.Examples+"noop")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		noopWasm = mods["noop"]
		return m.Run()
	}())
}

func newRuntime(t testing.TB, cfg wasm.Config) *wasm.Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cacheDir
	}
	r, err := wasm.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return r
}

func compile(t testing.TB, r *wasm.Runtime, b []byte) *wasm.Module {
	t.Helper()
	m, err := r.Compile(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func doc(t testing.TB, d bson.D) []byte {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder is a Host that keeps logs and writes and answers writes with err.
type recorder struct {
	mu     sync.Mutex
	logs   []string
	writes []wasm.Write
	err    error
}

func (h *recorder) Log(level wasm.Level, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, level.String()+": "+msg)
}

func (h *recorder) Write(_ context.Context, w wasm.Write) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes = append(h.writes, w)
	return h.err
}

func TestRuntime_Compile(t *testing.T) {
	r := newRuntime(t, wasm.Config{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		wasm []byte
		want error
		msg  string
	}{
		{"NotWasm", []byte("hello"), wasm.ErrInvalidModule, ""},
		{"EmptyModule", []byte("\x00asm\x01\x00\x00\x00"), wasm.ErrABI, `export its memory as "memory"`},
		{"ForeignImport", wat2(t, "env"), wasm.ErrABI, `imports env.f`},
		{"UnknownHostFunction", wat2(t, "godwit"), wasm.ErrABI, "unknown host function godwit.f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Compile(ctx, tc.wasm)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Compile: %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	t.Run("HandWrittenModule", func(t *testing.T) { compile(t, r, abiWasm) })
	t.Run("GoGuest", func(t *testing.T) { compile(t, r, noopWasm) })
	t.Run("MemoryAboveLimit", func(t *testing.T) {
		small := newRuntime(t, wasm.Config{MemoryLimit: 1 << 16})
		_, err := small.Compile(ctx, abiWasm) // needs 2 pages at start
		if !errors.Is(err, wasm.ErrInvalidModule) || !strings.Contains(err.Error(), "over limit") {
			t.Fatalf("Compile: %v, want ErrInvalidModule about the memory limit", err)
		}
	})
}

// wat2 returns a module (assembled by hand, in binary) importing function
// "f" of module mod.
func wat2(t *testing.T, mod string) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, 1, 4, 1, 0x60, 0, 0) // type section: () -> ()
	imp := []byte{1, byte(len(mod))}
	imp = append(imp, mod...)
	imp = append(imp, 1, 'f', 0, 0) // func f of type 0
	b = append(b, 2, byte(len(imp)))
	return append(b, imp...)
}

func TestModule_Call(t *testing.T) {
	// Only the looping call gets a short deadline (it can never finish);
	// everything else, Compile's first instantiation included, has one it
	// meets however loaded the machine.
	r := newRuntime(t, wasm.Config{MemoryLimit: 16 << 20, Timeout: testwait.Long, PoolSize: 2})
	m := compile(t, r, abiWasm)
	ctx := context.Background()
	call := func(t *testing.T, mode string, h *recorder) error {
		t.Helper()
		_, err := m.Call(ctx, doc(t, bson.D{{Key: "mode", Value: mode}}), h)
		return err
	}
	healthy := func(t *testing.T) {
		t.Helper()
		h := &recorder{}
		if err := call(t, "normal", h); err != nil {
			t.Fatalf("a normal call after the failure: %v", err)
		}
		if len(h.logs) != 1 || h.logs[0] != "info: ok" {
			t.Fatalf("logs %q, want [info: ok]", h.logs)
		}
	}
	t.Run("Logs", func(t *testing.T) { healthy(t) })
	t.Run("FunctionError", func(t *testing.T) {
		err := call(t, "fail", &recorder{})
		if !errors.Is(err, wasm.ErrFunction) || !strings.Contains(err.Error(), "asked to fail") {
			t.Fatalf("got %v, want ErrFunction with the guest's message", err)
		}
		healthy(t)
	})
	for _, tc := range []struct {
		mode    string
		want    error
		timeout time.Duration // 0: the runtime's
	}{
		{"trap", wasm.ErrTrap, 0},
		{"loop", wasm.ErrDeadline, 200 * time.Millisecond},
		{"hogm", wasm.ErrMemoryLimit, 0},
	} {
		t.Run("Contains_"+tc.mode, func(t *testing.T) {
			_, err := m.CallTimeout(ctx, doc(t, bson.D{{Key: "mode", Value: tc.mode}}), &recorder{}, tc.timeout)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			healthy(t)
		})
	}
	t.Run("Write", func(t *testing.T) {
		h := &recorder{}
		ev := doc(t, bson.D{{Key: "mode", Value: "writ"}})
		if _, err := m.Call(ctx, ev, h); err != nil {
			t.Fatal(err)
		}
		if len(h.writes) != 1 || h.writes[0].Kind != "insert" || h.writes[0].Namespace != "test.out" || string(h.writes[0].Document) != string(ev) {
			t.Fatalf("writes %+v, want one insert of the event into test.out", h.writes)
		}
	})
	t.Run("WriteDenied", func(t *testing.T) {
		h := &recorder{err: fmt.Errorf("%w: test.out", wasm.ErrWriteDenied)}
		err := call(t, "writ", h)
		// The hand-written guest returns the host's code as its own.
		if !errors.Is(err, wasm.ErrFunction) || !strings.Contains(err.Error(), "code 1") {
			t.Fatalf("got %v, want ErrFunction with code 1 (CodeDenied)", err)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := m.Call(cctx, doc(t, bson.D{{Key: "mode", Value: "loop"}}), &recorder{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("Parallel", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := m.Call(ctx, doc(t, bson.D{{Key: "mode", Value: "normal"}}), &recorder{})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestModule_CallGoGuest(t *testing.T) {
	r := newRuntime(t, wasm.Config{})
	m := compile(t, r, noopWasm)
	for i := range 3 {
		if _, err := m.Call(context.Background(), doc(t, bson.D{{Key: "i", Value: i}}), &recorder{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// FuzzModule_Call feeds arbitrary bytes as the event to the hand-written
// guest: the host must never panic, and every failure must be one of the
// package's errors.
func FuzzModule_Call(f *testing.F) {
	// Compile's first instantiation gets a deadline it meets on a loaded
	// machine; each call a short one, as an event may make the guest loop.
	r := newRuntime(f, wasm.Config{MemoryLimit: 16 << 20, Timeout: testwait.Long, PoolSize: 1})
	m := compile(f, r, abiWasm)
	for _, s := range []string{"", "ok", "fail", "writ", "trap", "x\x00writ\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, ev []byte) {
		_, err := m.CallTimeout(context.Background(), ev, &recorder{err: wasm.ErrWriteInvalid}, 50*time.Millisecond)
		if err != nil && !errors.Is(err, wasm.ErrFunction) && !errors.Is(err, wasm.ErrTrap) &&
			!errors.Is(err, wasm.ErrDeadline) && !errors.Is(err, wasm.ErrMemoryLimit) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
