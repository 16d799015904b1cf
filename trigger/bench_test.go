package trigger_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/guest/guestbuild"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// noopWasm is built once per benchmark binary.
var noopWasm []byte

func noop(b *testing.B) []byte {
	if noopWasm == nil {
		mods, err := guestbuild.Build(context.Background(), b.TempDir(), guestbuild.Examples+"noop")
		if err != nil {
			b.Fatal(err)
		}
		noopWasm = mods["noop"]
	}
	return noopWasm
}

// events1K returns n insert events of about 1 KiB each.
func events1K(n int) [][]byte {
	pad := strings.Repeat("x", 860)
	out := make([][]byte, n)
	for i := range out {
		raw, err := bson.Marshal(bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%032X", i)}}},
			{Key: "operationType", Value: "insert"},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int64(i)}}},
			{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int64(i)}, {Key: "pad", Value: pad}}},
		})
		if err != nil {
			panic(err)
		}
		out[i] = raw
	}
	return out
}

// BenchmarkDispatch measures invocations per second of the noop Go guest
// on 1 KiB events through the real dispatcher: outbox cursor, sink runner
// (reads, acks with fsync, retention), event filter and the wasm pool.
// Run it with a fixed count, for example:
//
//	go test -run XXX -bench Dispatch -benchtime 200000x ./trigger/
func BenchmarkDispatch(b *testing.B) {
	for _, unordered := range []bool{false, true} {
		name := "ordered"
		if unordered {
			name = "unordered"
		}
		b.Run(name, func(b *testing.B) { benchDispatch(b, unordered) })
	}
}

func benchDispatch(b *testing.B, unordered bool) {
	ctx := context.Background()
	m, ob := runManager(b)

	fn, err := m.CreateFunction(ctx, trigger.Function{UserID: "bench", Name: "noop", Wasm: noop(b)})
	if err != nil {
		b.Fatal(err)
	}
	tr, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "bench", Name: "bench", Type: trigger.TypeDatabase, FunctionID: fn.ID,
		Enabled: false, Database: &trigger.DatabaseConfig{DataSource: "src", Database: "shop", Unordered: unordered}})
	if err != nil {
		b.Fatal(err)
	}
	// Append everything first (not measured), then enable the trigger.
	evs := events1K(b.N)
	var last uint64
	for i := 0; i < len(evs); i += 1000 {
		if last, err = ob.Append(ctx, "src", evs[i:min(i+1000, len(evs))], outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(evs[0])))
	b.ResetTimer()
	start := time.Now()
	if _, err := m.EnableTrigger(ctx, tr.ID, false); err != nil {
		b.Fatal(err)
	}
	if err := m.WaitAcked(ctx, tr.ID, last); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if st := m.Status(mustGet(b, m, tr.ID)); st.Invocations != uint64(b.N) {
		b.Fatalf("%d invocations, want %d", st.Invocations, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "invocations/s")
}

// runManager runs a trigger manager on an unbounded outbox and queue, an
// in-memory metadata deployment and one data source "src", until the
// benchmark ends.
func runManager(b *testing.B) (*trigger.Manager, *outbox.Outbox) {
	ctx := context.Background()
	ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ob.Close(context.Background()) })
	meta, err := mongodb.Open(ctx, "lungo:memory", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { meta.Close(ctx) })
	m, err := trigger.Open(ctx, trigger.Config{Wasm: wasm.Config{CacheDir: filepath.Join(os.TempDir(), "godwit-bench-wazero")}, QueueMaxBytes: -1},
		trigger.Deps{Outbox: ob, Metadata: meta.Client, DataSources: map[string]lungo.IClient{"src": meta.Client}, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	b.Cleanup(func() { stop(); <-done; m.Close(ctx) })
	<-m.Started()
	return m, ob
}

func mustGet(b *testing.B, m *trigger.Manager, id string) trigger.Trigger {
	t, err := m.GetTrigger(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

type nopHost struct{}

func (nopHost) Log(wasm.Level, string)                  {}
func (nopHost) Write(context.Context, wasm.Write) error { return nil }

// BenchmarkCall reports the latency distribution of single calls of the
// noop guest on a 1 KiB event (one goroutine), and the one-time costs:
// compiling without a cache, loading from the cache, instantiating.
func BenchmarkCall(b *testing.B) {
	ctx := context.Background()
	module := noop(b)
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: b.TempDir(), PoolSize: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close(ctx)
	start := time.Now()
	mod, err := rt.Compile(ctx, module) // compile + first instance
	if err != nil {
		b.Fatal(err)
	}
	compile := time.Since(start)
	defer mod.Close(ctx)
	rt2, err := wasm.New(ctx, wasm.Config{CacheDir: rt.Config().CacheDir, PoolSize: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer rt2.Close(ctx)
	start = time.Now()
	mod2, err := rt2.Compile(ctx, module)
	if err != nil {
		b.Fatal(err)
	}
	cached := time.Since(start)
	// A call that runs out of time discards its instance, so the next Warm
	// instantiates a fresh one.
	_, _ = mod2.CallTimeout(ctx, events1K(1)[0], nopHost{}, time.Nanosecond)
	start = time.Now()
	if err := mod2.Warm(ctx); err != nil {
		b.Fatal(err)
	}
	instantiate := time.Since(start)
	_ = mod2.Close(ctx)

	ev := events1K(1)[0]
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if _, err := mod.Call(ctx, ev, nopHost{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(compile.Milliseconds()), "compile+instantiate-ms")
	b.ReportMetric(float64(cached.Milliseconds()), "cached-compile+instantiate-ms")
	b.ReportMetric(float64(instantiate.Milliseconds()), "instantiate-ms")
	b.Logf("GOMAXPROCS %d, module %d bytes", runtime.GOMAXPROCS(0), len(module))
}

// BenchmarkReportAuthEvent measures authentication events reported by 16
// concurrent callers and durably queued (no wait), then the time until
// the noop guest has run them all through an authentication trigger:
//
//	go test -run XXX -bench ReportAuthEvent -benchtime 20000x ./trigger/
func BenchmarkReportAuthEvent(b *testing.B) {
	ctx := context.Background()
	m, _ := runManager(b)
	fn, err := m.CreateFunction(ctx, trigger.Function{UserID: "bench", Name: "noop", Wasm: noop(b)})
	if err != nil {
		b.Fatal(err)
	}
	tr, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "bench", Name: "logins", Type: trigger.TypeAuthentication, FunctionID: fn.ID,
		Enabled: true, Authentication: &trigger.AuthConfig{OperationTypes: []string{"login"}}})
	if err != nil {
		b.Fatal(err)
	}
	const callers = 16
	var next atomic.Int64
	var last atomic.Uint64
	errs := make(chan error, callers)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					errs <- nil
					return
				}
				res, err := m.ReportAuthEvent(ctx, trigger.AuthEvent{Operation: "login", Provider: "oidc", UserID: fmt.Sprint("u", i)})
				if err != nil {
					errs <- err
					return
				}
				for {
					l := last.Load()
					if res.Sequence <= l || last.CompareAndSwap(l, res.Sequence) {
						break
					}
				}
			}
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	queued := time.Since(start)
	if err := m.WaitAcked(ctx, tr.ID, last.Load()); err != nil {
		b.Fatal(err)
	}
	ran := time.Since(start)
	b.StopTimer()
	if st := m.Status(mustGet(b, m, tr.ID)); st.Invocations != uint64(b.N) {
		b.Fatalf("%d invocations, want %d", st.Invocations, b.N)
	}
	b.ReportMetric(float64(b.N)/queued.Seconds(), "queued/s")
	b.ReportMetric(float64(b.N)/ran.Seconds(), "run/s")
}
