package wasm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// distinct returns b with a custom section naming i appended: the same
// guest, but a different module to wazero (as ten users' uploads are).
func distinct(b []byte, i int) []byte {
	name := fmt.Sprintf("copy%d", i)
	payload := append(append([]byte{byte(len(name))}, name...), "godwit test copy"...)
	out := append([]byte(nil), b...)
	out = append(out, 0, byte(len(payload)))
	return append(out, payload...)
}

// rss returns the process's resident memory in bytes (0 where unknown).
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// TestRuntime_MemoryBudget has ten functions fill their memory (each up
// to its 16 MiB cap, 160 MiB in all) under a 40 MiB budget: the accounted
// memory of all instances never passes the budget, and every function
// keeps working.
func TestRuntime_MemoryBudget(t *testing.T) {
	const limit, budget = 16 << 20, 40 << 20
	r := newRuntime(t, wasm.Config{MemoryLimit: limit, MemoryBudget: budget, Timeout: time.Minute, PoolSize: 1})
	mods := make([]*wasm.Module, 10)
	for i := range mods {
		mods[i] = compile(t, r, distinct(abiWasm, i))
	}
	ctx := testwait.Context(t)
	all := func(t *testing.T, mode string, check func(i int, err error)) {
		t.Helper()
		var wg sync.WaitGroup
		for i, m := range mods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := m.Call(ctx, doc(t, bson.D{{Key: "mode", Value: mode}}), &recorder{})
				check(i, err)
			}()
		}
		wg.Wait()
		if st := r.MemoryStats(); st.Peak > budget || st.InUse > budget {
			t.Fatalf("after %s on ten functions: %+v, more than the budget of %d", mode, st, budget)
		}
	}
	t.Run("FillAndKeep", func(t *testing.T) {
		before := rss(t)
		// Each guest grows until refused and then succeeds: its instance
		// stays in the pool holding what it got, until another one needs
		// the room.
		all(t, "fill", func(i int, err error) {
			if err != nil {
				t.Errorf("function %d: %v", i, err)
			}
		})
		st := r.MemoryStats()
		grown := rss(t) - before
		t.Logf("ten filled functions: accounted %d MiB (peak %d MiB) of a %d MiB budget; process RSS grew %d MiB (160 MiB without the budget)",
			st.InUse>>20, st.Peak>>20, st.Budget>>20, grown>>20)
		// The pages the guests wrote are resident: without the budget RSS
		// would grow by about 160 MiB. Slack for the test's own heap.
		if before > 0 && grown > 2*budget {
			t.Fatalf("RSS grew by %d MiB, more than twice the %d MiB budget", grown>>20, budget>>20)
		}
	})
	t.Run("HogConcurrently", func(t *testing.T) {
		all(t, "hogm", func(i int, err error) {
			if !errors.Is(err, wasm.ErrMemoryLimit) && !errors.Is(err, wasm.ErrMemoryBudget) {
				t.Errorf("function %d: %v, want ErrMemoryLimit or ErrMemoryBudget", i, err)
			}
			if errors.Is(err, wasm.ErrMemoryBudget) && !strings.Contains(err.Error(), "the functions' memory budget (40 MiB) is exhausted") {
				t.Errorf("function %d: %v does not name the budget", i, err)
			}
		})
	})
	t.Run("StillServing", func(t *testing.T) {
		all(t, "normal", func(i int, err error) {
			if err != nil {
				t.Errorf("function %d after the others filled memory: %v", i, err)
			}
		})
	})
}

// blocker is a Host whose Write blocks until release is closed, keeping
// the calling instance (and its memory) in use.
type blocker struct {
	entered chan struct{}
	release chan struct{}
}

func (blocker) Log(wasm.Level, string) {}

func (b blocker) Write(context.Context, wasm.Write) error {
	close(b.entered)
	<-b.release
	return nil
}

// TestRuntime_MemoryBudgetWait runs two functions under a budget with room
// for one instance: while the first runs, a call of the second waits for
// the memory (and gets it when the first is done) or, when the first does
// not finish before the deadline, fails naming the budget.
func TestRuntime_MemoryBudgetWait(t *testing.T) {
	const pages = 3 << 16 // abi.wasm starts with 2 pages
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{
		{"GetsMemoryWhenFreed", time.Hour},
		// The second call's deadline, which also bounds each Compile's
		// first instantiation (a hand-written module: well under 1 s on
		// a loaded machine).
		{"FailsAtTheDeadline", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir, MemoryBudget: pages, Timeout: tc.timeout, PoolSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close(context.Background()) })
			waiting := make(chan struct{}, 1)
			wasm.SetWaitHook(r, func() {
				select {
				case waiting <- struct{}{}:
				default:
				}
			})
			a := compile(t, r, distinct(abiWasm, 1))
			b := compile(t, r, distinct(abiWasm, 2))
			ctx := testwait.Context(t)
			h := blocker{entered: make(chan struct{}), release: make(chan struct{})}
			var once sync.Once
			release := func() { once.Do(func() { close(h.release) }) }
			defer release() // also when the test fails: Close waits for the call
			aDone := make(chan error, 1)
			go func() {
				// The first call's own deadline is long: only the test's
				// release ends it.
				_, err := a.CallTimeout(ctx, doc(t, bson.D{{Key: "mode", Value: "writ"}}), h, testwait.Long)
				aDone <- err
			}()
			select {
			case <-h.entered:
			case <-ctx.Done():
				t.Fatal("the first call never wrote")
			}
			bDone := make(chan error, 1)
			go func() {
				_, err := b.Call(ctx, doc(t, bson.D{{Key: "mode", Value: "normal"}}), &recorder{})
				bDone <- err
			}()
			if tc.timeout == time.Hour {
				select {
				case <-waiting:
				case err := <-bDone:
					t.Fatalf("the second call did not wait for memory while the first held it: %v", err)
				case <-ctx.Done():
					t.Fatal("the second call did not wait for memory")
				}
				release()
				if err := <-bDone; err != nil {
					t.Fatalf("the second call, after the first finished: %v", err)
				}
			} else {
				err := <-bDone
				release()
				if !errors.Is(err, wasm.ErrMemoryBudget) || !strings.Contains(err.Error(), "the functions' memory budget (192 KiB) is exhausted") ||
					!strings.Contains(err.Error(), "triggers.max_memory_bytes") {
					t.Fatalf("the second call: %v, want ErrMemoryBudget naming the budget and how to raise it", err)
				}
			}
			if err := <-aDone; err != nil {
				t.Fatalf("the first call: %v", err)
			}
			if st := r.MemoryStats(); st.Peak > pages {
				t.Fatalf("%+v: more than the budget", st)
			}
		})
	}
}

// TestRuntime_CompileInitLoop uploads modules that loop while they are
// initialised: Compile refuses each with ErrABI at the call deadline, not
// at the much longer InitTimeout of later instantiations.
func TestRuntime_CompileInitLoop(t *testing.T) {
	r := newRuntime(t, wasm.Config{Timeout: 200 * time.Millisecond, InitTimeout: 24 * time.Hour})
	for _, name := range []string{"start", "initialize", "version"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile("testdata/initloop_" + name + ".wasm")
			if err != nil {
				t.Fatal(err)
			}
			ctx := testwait.Context(t)
			done := make(chan error, 1)
			go func() {
				m, err := r.Compile(ctx, b)
				if err == nil {
					_ = m.Close(ctx)
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, wasm.ErrABI) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not finish within 200ms") {
					t.Fatalf("Compile: %v, want ErrABI saying initialisation did not finish within 200ms", err)
				}
			case <-ctx.Done():
				t.Fatal("Compile did not return at the call deadline")
			}
			if st := r.MemoryStats(); st.InUse != 0 {
				t.Fatalf("a refused module left %d bytes reserved", st.InUse)
			}
		})
	}
}

// TestModule_LogBudget floods the log: a function logging on every one of
// a thousand calls keeps at most its budget of lines per second (plus the
// one second's worth the bucket starts with), and the rest are dropped,
// counted and announced once.
func TestModule_LogBudget(t *testing.T) {
	const perSec, calls = 5, 1000
	r := newRuntime(t, wasm.Config{LogLinesPerSecond: perSec, PoolSize: 1})
	m := compile(t, r, abiWasm)
	h := &recorder{}
	start := time.Now()
	for i := range calls {
		if _, err := m.Call(context.Background(), doc(t, bson.D{{Key: "mode", Value: "normal"}}), h); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	kept, notices := 0, 0
	for _, l := range h.logs {
		switch {
		case l == "info: ok":
			kept++
		case strings.Contains(l, "dropping the excess"):
			notices++
		}
	}
	bound := perSec + int(elapsed.Seconds()*perSec) + 1
	st := m.LogStats()
	t.Logf("%d calls in %s: %d lines kept, %+v, %d notices", calls, elapsed, kept, st, notices)
	if kept > bound {
		t.Fatalf("%d lines logged in %s, more than the budget allows (%d)", kept, elapsed, bound)
	}
	if st.DroppedLines != uint64(calls-kept) || st.DroppedBytes != 2*uint64(calls-kept) {
		t.Fatalf("%+v, want %d lines (of 2 bytes) dropped", st, calls-kept)
	}
	if calls > bound && notices == 0 {
		t.Fatal("lines were dropped without a notice")
	}
}
