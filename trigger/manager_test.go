package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.uber.org/goleak"

	demoguests "github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// The tests of this file run the real manager on embedded deployments with
// two guests: the hand-written ABI module (wasm/testdata/abi.wat: an event
// holding "writ" is inserted into test.out through the host) and the
// cacheupdater example as the demo embeds it, compiled once into the
// compilation cache the whole suite shares.

func abiWasm(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("wasm/testdata/abi.wasm")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func demoCacheUpdater(t testing.TB) []byte {
	t.Helper()
	b, err := demoguests.Wasm("cacheupdater")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gate holds the first call through a gated collection after arm until
// the test opens it: how a test keeps a metadata read or a function's
// write in flight at a point it chooses.
type gate struct {
	armed    atomic.Bool
	entered  chan struct{} // closed when the held call arrived
	ctxEnded chan struct{} // closed when the held call's context ended
	release  chan struct{}
	once     sync.Once
	// testEnded ends when the test does: a failed test must not leave a
	// call held (cleanups may wait for it).
	testEnded context.Context
}

func newGate(t testing.TB) *gate {
	return &gate{entered: make(chan struct{}), ctxEnded: make(chan struct{}), release: make(chan struct{}), testEnded: t.Context()}
}

func (g *gate) arm()  { g.armed.Store(true) }
func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) pass(ctx context.Context) {
	if !g.armed.CompareAndSwap(true, false) {
		return
	}
	close(g.entered)
	select {
	case <-g.release:
		return
	case <-g.testEnded.Done():
		return
	case <-ctx.Done():
		close(g.ctxEnded)
	}
	// Like a slow server that notices a cancellation late: the call
	// returns only when the test says so.
	select {
	case <-g.release:
	case <-g.testEnded.Done():
	}
}

// gatedClient is a real embedded deployment whose Find and InsertOne on
// one collection pass a gate first. It wraps, not mocks, the client:
// every call still runs against the engine. lungo has no hook to stop an
// operation half-way, and the tests need one held for as long as they
// choose.
type gatedClient struct {
	lungo.IClient
	db, coll string
	g        *gate
}

func (c gatedClient) Database(name string, opts ...*options.DatabaseOptions) lungo.IDatabase {
	d := c.IClient.Database(name, opts...)
	if name != c.db {
		return d
	}
	return gatedDatabase{IDatabase: d, c: c}
}

type gatedDatabase struct {
	lungo.IDatabase
	c gatedClient
}

func (d gatedDatabase) Collection(name string, opts ...*options.CollectionOptions) lungo.ICollection {
	coll := d.IDatabase.Collection(name, opts...)
	if name != d.c.coll {
		return coll
	}
	return gatedCollection{ICollection: coll, g: d.c.g}
}

type gatedCollection struct {
	lungo.ICollection
	g *gate
}

func (c gatedCollection) Find(ctx context.Context, filter any, opts ...*options.FindOptions) (lungo.ICursor, error) {
	c.g.pass(ctx)
	return c.ICollection.Find(ctx, filter, opts...)
}

func (c gatedCollection) InsertOne(ctx context.Context, doc any, opts ...*options.InsertOneOptions) (*mongo.InsertOneResult, error) {
	c.g.pass(ctx)
	return c.ICollection.InsertOne(ctx, doc, opts...)
}

// rig is what managers of one test share: the outbox, the metadata
// deployment (its function_chunks reads gated by metaGate) and the data
// source "src" (its inserts into test.out gated by dataGate). A second
// manager on it is a restart.
type rig struct {
	ob                 *outbox.Outbox
	meta, data         lungo.IClient
	rawData            lungo.IClient
	metaGate, dataGate *gate
}

func newRig(t testing.TB) *rig { return newRigOn(t, "lungo:memory") }

// newRigOn is newRig with the metadata deployment at metaURI.
func newRigOn(t testing.TB, metaURI string) *rig {
	ctx := testwait.Context(t)
	d := &rig{metaGate: newGate(t), dataGate: newGate(t)}
	var err error
	if d.ob, err = outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.ob.Close(context.Background()) })
	for c, uri := range map[*lungo.IClient]string{&d.meta: metaURI, &d.rawData: "lungo:memory"} {
		conn, err := mongodb.Open(ctx, uri, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		*c = conn.Client
	}
	d.meta = gatedClient{IClient: d.meta, db: "godwit", coll: "function_chunks", g: d.metaGate}
	d.data = gatedClient{IClient: d.rawData, db: "test", coll: "out", g: d.dataGate}
	return d
}

// open opens a manager on d; it is closed at cleanup unless the test
// closed it.
func (d *rig) open(t testing.TB, cfg trigger.Config) *trigger.Manager {
	t.Helper()
	cfg.Wasm.CacheDir = runtimetest.SharedCompilationCache
	// Two instances: a test calls a module while a trigger's call on it
	// is held.
	cfg.Wasm.PoolSize = 2
	m, err := trigger.Open(testwait.Context(t), cfg, trigger.Deps{Outbox: d.ob, Metadata: d.meta,
		DataSources: map[string]lungo.IClient{"src": d.data}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// run runs m until the test ends or stop is called; stop returns Run's
// error.
func run(t testing.TB, m *trigger.Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// runStarted is run, returning once Run started the stored triggers.
func runStarted(t testing.TB, ctx context.Context, m *trigger.Manager) (stop func() error) {
	t.Helper()
	stop = run(t, m)
	select {
	case <-m.Started():
	case <-ctx.Done():
		t.Fatalf("Run did not start: %v", ctx.Err())
	}
	return stop
}

// await fails the test when ch is not closed before the test's deadline.
func await(t *testing.T, ctx context.Context, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// statusNow returns m.Status(tr), failing the test when Status does not
// answer before the test's deadline: used while the test holds a compile,
// a metadata read or a guest call that Status must not wait for (which
// the test releases only after Status answered).
func statusNow(t *testing.T, ctx context.Context, m *trigger.Manager, tr trigger.Trigger) trigger.Status {
	t.Helper()
	ch := make(chan trigger.Status, 1)
	go func() { ch <- m.Status(tr) }()
	select {
	case st := <-ch:
		return st
	case <-ctx.Done():
		t.Fatalf("Status of trigger %s did not answer while a reconcile was in progress: %v", tr.Name, ctx.Err())
	}
	return trigger.Status{}
}

// insertEvent is a captured insert of {_id: id, marker: marker} into
// test.items.
func insertEvent(t *testing.T, id int64, marker string) []byte {
	raw, err := bson.Marshal(bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%032X", id)}}},
		{Key: "operationType", Value: "insert"},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "test"}, {Key: "coll", Value: "items"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: id}, {Key: "marker", Value: marker}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (d *rig) capture(t *testing.T, ctx context.Context, ev []byte) uint64 {
	t.Helper()
	seq, err := d.ob.Append(ctx, "src", [][]byte{ev}, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// createItems stores the ABI module as function "abi" and an enabled
// database trigger calling it on src test.items, which may write test.out
// and cache.*.
func createItems(t testing.TB, ctx context.Context, m *trigger.Manager) (trigger.Function, trigger.Trigger) {
	t.Helper()
	fn, err := m.CreateFunction(ctx, trigger.Function{UserID: "ann", Name: "abi", Wasm: abiWasm(t)})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "items", Type: trigger.TypeDatabase, FunctionID: fn.ID, Enabled: true,
		Database: &trigger.DatabaseConfig{DataSource: "src", Database: "test", Collection: "items", FullDocument: true},
		Writes:   trigger.Writes{Namespaces: []string{"test.out", "cache.*"}}})
	if err != nil {
		t.Fatal(err)
	}
	return fn, tr
}

// plainEvent makes the ABI guest log "ok" and return.
var plainEvent, _ = bson.Marshal(bson.D{{Key: "operationType", Value: "insert"}})

// restartWithFunction stores an enabled trigger calling the ABI module with
// one manager, and opens a second one on the same deployment: its Run
// compiles the function, the first did not run it.
func restartWithFunction(t *testing.T, ctx context.Context, d *rig) (trigger.Trigger, *trigger.Manager) {
	first := d.open(t, trigger.Config{})
	_, tr := createItems(t, ctx, first)
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return tr, d.open(t, trigger.Config{})
}

func TestManager_Status(t *testing.T) {
	// While Run starts the triggers, Status answers from what runs now:
	// the trigger is not running yet, and is once Run started it.
	startedLater := func(t *testing.T, ctx context.Context, m *trigger.Manager, tr trigger.Trigger, release func()) {
		if st := statusNow(t, ctx, m, tr); st.State != trigger.StateWaiting {
			t.Fatalf("state %q while the trigger's function loads, want %q", st.State, trigger.StateWaiting)
		}
		// Waiting for delivery waits for the start (the demo and
		// WaitDelivered rely on it): with its context ended, it says so.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := m.WaitAcked(cancelled, tr.ID, 1); err == nil || !strings.Contains(err.Error(), "still starting") {
			t.Fatalf("WaitAcked of a trigger not started yet: %v, want it waiting for the start", err)
		}
		select {
		case <-m.Started():
			t.Fatal("Started is closed while a trigger is still starting")
		default:
		}
		release()
		await(t, ctx, m.Started(), "Run did not start the trigger")
		if st := statusNow(t, ctx, m, tr); st.State != trigger.StateRunning {
			t.Fatalf("state %q after Run started the trigger (last error %q), want %q", st.State, st.LastError, trigger.StateRunning)
		}
		if err := m.WaitAcked(ctx, tr.ID, 0); err != nil {
			t.Fatalf("WaitAcked once the trigger runs: %v", err)
		}
	}

	t.Run("AnswersDuringCompile", func(t *testing.T) {
		ctx := testwait.Context(t)
		d := newRig(t)
		tr, m := restartWithFunction(t, ctx, d)
		// The hook is the one way to hold a compile in progress: wazero
		// compiles in one call that cannot be paused.
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		trigger.SetCompileHook(m, func(cctx context.Context) {
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-cctx.Done():
			}
		})
		run(t, m)
		await(t, ctx, entered, "Run did not compile the trigger's function")
		startedLater(t, ctx, m, tr, func() { close(release) })
	})

	t.Run("AnswersDuringMetadataRead", func(t *testing.T) {
		ctx := testwait.Context(t)
		d := newRig(t)
		tr, m := restartWithFunction(t, ctx, d)
		d.metaGate.arm() // the next read of a function's module
		run(t, m)
		await(t, ctx, d.metaGate.entered, "Run did not read the trigger's function")
		startedLater(t, ctx, m, tr, d.metaGate.open)
	})
}

func TestManager_UpdateFunction(t *testing.T) {
	t.Run("SwapsModuleAfterCallInFlight", func(t *testing.T) {
		ctx := testwait.Context(t)
		d := newRig(t)
		// Only the update may end the held call: with the default call
		// deadline, a compile slowed by a loaded machine let the deadline
		// end it first, and the trigger was still running.
		cfg := trigger.Config{}
		cfg.Wasm.Timeout = testwait.Long
		m := d.open(t, cfg)
		runStarted(t, ctx, m)
		fn, tr := createItems(t, ctx, m)
		old := trigger.RunningModule(m, tr.ID)
		if old == nil {
			t.Fatal("the trigger is not running")
		}

		// The ABI guest's write of event 1 is held in flight.
		d.dataGate.arm()
		d.capture(t, ctx, insertEvent(t, 1, "writ"))
		await(t, ctx, d.dataGate.entered, "the function did not write event 1")
		updated := make(chan error, 1)
		go func() {
			_, err := m.UpdateFunction(ctx, trigger.Function{ID: fn.ID, Wasm: demoCacheUpdater(t)})
			updated <- err
		}()
		// The update stops the trigger: it cancelled the call and now
		// waits for it to return.
		await(t, ctx, d.dataGate.ctxEnded, "the update did not stop the trigger")
		if st := statusNow(t, ctx, m, tr); st.State != trigger.StateWaiting || st.Invocations != 0 {
			t.Fatalf("status while the trigger stops for the update: %+v, want state %q and no invocation", st, trigger.StateWaiting)
		}
		if _, err := old.Call(ctx, plainEvent, nopHost{}); err != nil {
			t.Fatalf("the replaced module was closed while a call on it was in flight: %v", err)
		}

		d.dataGate.open()
		if err := <-updated; err != nil {
			t.Fatal(err)
		}
		if _, err := old.Call(ctx, plainEvent, nopHost{}); !errors.Is(err, wasm.ErrClosed) {
			t.Fatalf("call of the replaced module after the update: %v, want wasm.ErrClosed", err)
		}
		if now := trigger.RunningModule(m, tr.ID); now == nil || now == old {
			t.Fatalf("the trigger runs module %p after the update, want a new one (old %p)", now, old)
		}

		// The new module (cacheupdater) handles the next event.
		seq := d.capture(t, ctx, insertEvent(t, 2, "new"))
		if err := m.WaitAcked(ctx, tr.ID, seq); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Op  string
			Doc struct{ Marker string }
		}
		if err := d.rawData.Database("cache").Collection("test.items").FindOne(ctx, bson.M{"_id": int64(2)}).Decode(&got); err != nil {
			t.Fatalf("cache.test.items holds no document 2 (the new function did not run): %v", err)
		}
		if got.Op != "insert" || got.Doc.Marker != "new" {
			t.Fatalf("cache document 2: %+v, want the inserted document", got)
		}
		if st := statusNow(t, ctx, m, tr); st.State != trigger.StateRunning || st.Invocations == 0 {
			t.Fatalf("status after the update: %+v, want running with invocations", st)
		}
	})
}

// stillClock is a clock whose time does not pass: a scheduled trigger
// waits for its next run until it stops.
type stillClock struct{ now time.Time }

func (c stillClock) Now() time.Time                       { return c.now }
func (c stillClock) After(time.Duration) <-chan time.Time { return nil }

func TestManager_Close(t *testing.T) {
	t.Run("WaitsForEveryGoroutine", func(t *testing.T) {
		// Registered first, so it runs last: after the deployment and
		// everything else closed. Anything the manager started and did
		// not wait for fails it.
		others := goleak.IgnoreCurrent()
		t.Cleanup(func() { goleak.VerifyNone(t, others) })
		ctx := testwait.Context(t)
		d := newRig(t)
		m := d.open(t, trigger.Config{Clock: stillClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}})
		stopRun := runStarted(t, ctx, m)
		fn, tr := createItems(t, ctx, m)
		auth, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "logins", Type: trigger.TypeAuthentication,
			FunctionID: fn.ID, Enabled: true, Authentication: &trigger.AuthConfig{OperationTypes: []string{trigger.AuthLogin}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "hourly", Type: trigger.TypeScheduled,
			FunctionID: fn.ID, Enabled: true, Scheduled: &trigger.ScheduledConfig{Schedule: "@hourly"}}); err != nil {
			t.Fatal(err)
		}
		res, err := m.ReportAuthEvent(ctx, trigger.AuthEvent{Operation: trigger.AuthLogin, Provider: "local", UserID: "u1", Owner: "ann", Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Triggered) != 1 || res.Triggered[0] != auth.ID {
			t.Fatalf("ReportAuthEvent: %+v, want triggered %s", res, auth.ID)
		}
		mod := trigger.RunningModule(m, tr.ID)

		d.dataGate.arm()
		d.capture(t, ctx, insertEvent(t, 1, "writ"))
		await(t, ctx, d.dataGate.entered, "the function did not write event 1")
		closed := make(chan error, 1)
		go func() { closed <- m.Close(ctx) }()
		await(t, ctx, d.dataGate.ctxEnded, "Close did not stop the trigger")
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a guest call was in flight", err)
		default:
		}
		d.dataGate.open()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if _, err := mod.Call(ctx, plainEvent, nopHost{}); !errors.Is(err, wasm.ErrClosed) {
			t.Fatalf("call of the function's module after Close: %v, want wasm.ErrClosed", err)
		}
		if err := stopRun(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.DisableTrigger(ctx, tr.ID); !errors.Is(err, trigger.ErrClosed) {
			t.Fatalf("DisableTrigger after Close: %v, want ErrClosed", err)
		}
		if _, err := m.ReportAuthEvent(ctx, trigger.AuthEvent{Operation: trigger.AuthLogin, Provider: "local", UserID: "u1"}); !errors.Is(err, trigger.ErrClosed) {
			t.Fatalf("ReportAuthEvent after Close: %v, want ErrClosed", err)
		}
	})
}

func TestManager_Run(t *testing.T) {
	t.Run("ReturnsAtClose", func(t *testing.T) {
		ctx := testwait.Context(t)
		d := newRig(t)
		m := d.open(t, trigger.Config{})
		done := make(chan error, 1)
		go func() { done <- m.Run(context.Background()) }()
		await(t, ctx, m.Started(), "Run did not start")
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after Close: %v, want nil", err)
			}
		case <-ctx.Done():
			t.Fatal("Run did not return after Close")
		}
	})
}

func TestManager_EnableTrigger(t *testing.T) {
	t.Run("ConcurrentWithDisable", func(t *testing.T) {
		// Mutations run one at a time while Status reads beside them: after
		// a storm of enables and disables and a last enable, exactly one
		// runner delivers the trigger's events.
		ctx := testwait.Context(t)
		d := newRig(t)
		m := d.open(t, trigger.Config{})
		runStarted(t, ctx, m)
		_, tr := createItems(t, ctx, m)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 4 {
					var err error
					if (i+j)%2 == 0 {
						_, err = m.DisableTrigger(ctx, tr.ID)
					} else {
						_, err = m.EnableTrigger(ctx, tr.ID, false)
					}
					if err != nil {
						t.Error(err)
						return
					}
					_ = m.Status(tr)
				}
			}()
		}
		wg.Wait()
		if _, err := m.EnableTrigger(ctx, tr.ID, false); err != nil {
			t.Fatal(err)
		}
		seq := d.capture(t, ctx, insertEvent(t, 1, "plain"))
		if err := m.WaitAcked(ctx, tr.ID, seq); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitInvocations(ctx, tr.ID, 1); err != nil {
			t.Fatal(err)
		}
		if st := m.Status(tr); st.State != trigger.StateRunning || st.Invocations != 1 {
			t.Fatalf("status after the last enable and one event: %+v, want running with one invocation", st)
		}
	})
}

func TestManager_ReportAuthEvent(t *testing.T) {
	t.Run("ClosedBeforeRun", func(t *testing.T) {
		// A report waits for Run to start the triggers; after Close that
		// never happens, so it answers ErrClosed instead of waiting.
		ctx := testwait.Context(t)
		m := newRig(t).open(t, trigger.Config{})
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := m.ReportAuthEvent(ctx, trigger.AuthEvent{Operation: trigger.AuthLogin, Provider: "local", UserID: "u1"}); !errors.Is(err, trigger.ErrClosed) {
			t.Fatalf("ReportAuthEvent after Close: %v, want ErrClosed", err)
		}
	})
}

// BenchmarkManager_Status measures Status of a running trigger alone, and
// while another goroutine disables and enables another trigger in a loop:
// each a reconcile that reads and writes the metadata store (the embedded
// engine's file store, as the demo runs, which syncs every write), waits
// for the trigger's runner to stop, or starts it. Before Status had a lock
// of its own it waited behind each of them. max-ns/op is the slowest
// Status of the run:
//
//	go test -run XXX -bench Manager_Status -benchtime 2000x ./trigger/
func BenchmarkManager_Status(b *testing.B) {
	for _, busy := range []bool{false, true} {
		name := "idle"
		if busy {
			name = "during-reconciles"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			m := newRigOn(b, "lungo:"+filepath.Join(b.TempDir(), "metadata.lungo")).open(b, trigger.Config{})
			runStarted(b, ctx, m)
			fn, tr := createItems(b, ctx, m)
			if busy {
				other, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "logins", Type: trigger.TypeAuthentication,
					FunctionID: fn.ID, Enabled: true, Authentication: &trigger.AuthConfig{OperationTypes: []string{trigger.AuthLogin}}})
				if err != nil {
					b.Fatal(err)
				}
				stop, done := make(chan struct{}), make(chan struct{})
				go func() {
					defer close(done)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						var err error
						if i%2 == 0 {
							_, err = m.DisableTrigger(ctx, other.ID)
						} else {
							_, err = m.EnableTrigger(ctx, other.ID, false)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
				defer func() { close(stop); <-done }()
			}
			b.ResetTimer()
			var slowest time.Duration
			for range b.N {
				start := time.Now()
				st := m.Status(tr)
				slowest = max(slowest, time.Since(start))
				if st.State != trigger.StateRunning {
					b.Fatalf("state %q", st.State)
				}
			}
			b.ReportMetric(float64(slowest.Nanoseconds()), "max-ns/op")
		})
	}
}
