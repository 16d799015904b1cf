package api_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit-dev/godwit/auth"
	demoguests "github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/api"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Modules used by the tests: the hand-written ABI module (committed, see
// trigger/wasm/testdata/abi.wat) and the Go examples as the demo embeds
// them (demo/guests fails when they are older than their sources; building
// the SDK from source is tested in trigger/wasm).
var (
	abiWasm  []byte
	guests   map[string][]byte
	cacheDir string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if abiWasm, err = os.ReadFile("../wasm/testdata/abi.wasm"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cacheDir = runtimetest.SharedCompilationCache
		guests = map[string][]byte{}
		for _, name := range demoguests.Names {
			if guests[name], err = demoguests.Wasm(name); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := warmCache(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// warmCache compiles every guest once, in parallel, into the compilation
// cache the tests share: compiling a Go guest takes about a second (many
// under -race), loading it from the cache milliseconds.
func warmCache() error {
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir, Timeout: testwait.Long}) // bounds each guest's first instantiation
	if err != nil {
		return err
	}
	defer rt.Close(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, len(guests))
	for name, b := range guests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := rt.Compile(ctx, b)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				return
			}
			_ = m.Close(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// env is a running trigger manager behind a gRPC server on loopback, with
// an outbox, a metadata engine and one data source ("src"), all under dir
// so that a second env on the same dir is a restart.
type env struct {
	t    testing.TB
	dir  string
	ob   *outbox.Outbox
	src  lungo.IClient
	mgr  *trigger.Manager
	srv  *rpc.Server
	tc   pb.TriggerServiceClient
	fc   pb.FunctionServiceClient
	conn *grpc.ClientConn

	audits  *auditLog
	cancel  context.CancelFunc
	stopped chan struct{}
	closers []func()
}

type envOptions struct {
	clock     trigger.Clock
	wasm      wasm.Config
	keepAcked bool
	// persist keeps metadata and the data source in files under dir, so a
	// second env on dir is a restart. Default: in memory, which is much
	// faster (an embedded file store rewrites the whole file, modules
	// included, on every write).
	persist bool
	// tokens turn authentication on: the API needs one of them, and the
	// users' allow-lists bind their triggers.
	tokens []auth.Token
	// maxModuleBytes bounds uploaded modules (default 32 MiB).
	maxModuleBytes int
	// queueMaxBytes bounds the trigger queue (default 64 MiB).
	queueMaxBytes int64
	// quotas sets the per-user quotas (MaxFunctionsPerUser,
	// MaxTriggersPerUser, MaxModuleBytesPerUser; default the package's).
	quotas trigger.Config
}

type auditLog struct {
	mu     sync.Mutex
	events []trigger.AuditEvent
}

func (a *auditLog) record(_ context.Context, e trigger.AuditEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return nil
}

func (a *auditLog) kinds() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.events {
		out = append(out, e.Kind+":"+e.TriggerName)
	}
	return out
}

func startEnv(t testing.TB, dir string, opts envOptions) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, dir: dir, audits: &auditLog{}, stopped: make(chan struct{})}
	var err error
	e.ob, err = outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{KeepAcked: opts.keepAcked})
	if err != nil {
		t.Fatal(err)
	}
	e.closers = append(e.closers, func() { e.ob.Close(context.Background()) })
	metaURI, srcURI := "lungo:memory", "lungo:memory"
	if opts.persist {
		metaURI, srcURI = "lungo:meta.lungo", "lungo:src.lungo"
	}
	meta, err := mongodb.Open(ctx, metaURI, dir)
	if err != nil {
		t.Fatal(err)
	}
	e.closers = append(e.closers, func() { meta.Close(ctx) })
	src, err := mongodb.Open(ctx, srcURI, dir)
	if err != nil {
		t.Fatal(err)
	}
	e.closers = append(e.closers, func() { src.Close(ctx) })
	e.src = src.Client
	if opts.wasm.CacheDir == "" {
		opts.wasm.CacheDir = cacheDir
	}
	if opts.wasm.Timeout == 0 {
		// A call's deadline only bounds work that finishes: a Go guest's
		// initialisation alone took up to 500 ms at GOMAXPROCS=1 beside two
		// busy loops. Tests that need a call to run out set their own.
		opts.wasm.Timeout = testwait.Long
	}
	authn, err := auth.New(opts.tokens)
	if err != nil {
		t.Fatal(err)
	}
	var allow func(string) auth.Allow
	if authn.Enabled() {
		allow = authn.AllowOf
	}
	e.mgr, err = trigger.Open(ctx, trigger.Config{
		Wasm:           opts.wasm,
		Delivery:       sinkConfig(),
		Clock:          opts.clock,
		MaxModuleBytes: opts.maxModuleBytes,
		QueueMaxBytes:  opts.queueMaxBytes,

		MaxFunctionsPerUser:   opts.quotas.MaxFunctionsPerUser,
		MaxTriggersPerUser:    opts.quotas.MaxTriggersPerUser,
		MaxModuleBytesPerUser: opts.quotas.MaxModuleBytesPerUser,
	}, trigger.Deps{
		Outbox: e.ob, Metadata: meta.Client,
		DataSources: map[string]lungo.IClient{"src": src.Client, "other": src.Client},
		Log:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Audit:       e.audits.record,
		Allow:       allow,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = rpc.New(rpc.Config{Addr: "127.0.0.1:0", Auth: authn}, zerolog.Nop(), api.New(e.mgr))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = e.mgr.Run(runCtx) }()
	go func() { defer wg.Done(); _ = e.srv.Serve(runCtx) }()
	go func() { wg.Wait(); close(e.stopped) }()
	select {
	case <-e.mgr.Started():
	case <-e.stopped:
		t.Fatal("the trigger manager stopped at once")
	}
	e.conn, err = grpc.NewClient(e.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	e.tc, e.fc = pb.NewTriggerServiceClient(e.conn), pb.NewFunctionServiceClient(e.conn)
	t.Cleanup(e.stop)
	return e
}

// client is one caller of the API.
type client struct {
	tc pb.TriggerServiceClient
	fc pb.FunctionServiceClient
}

// as returns a client sending token with every call.
func (e *env) as(token string) client {
	e.t.Helper()
	conn, err := rpc.Dial(rpc.ClientConfig{Addr: e.srv.Addr(), Token: token, MaxMessageBytes: 64 << 20})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return client{tc: pb.NewTriggerServiceClient(conn), fc: pb.NewFunctionServiceClient(conn)}
}

// stop shuts the env down like a daemon stopping; safe to call twice.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.stopped
	e.cancel = nil
	e.conn.Close()
	if err := e.mgr.Close(context.Background()); err != nil {
		e.t.Error(err)
	}
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) createFunction(name string, module []byte) *pb.Function {
	e.t.Helper()
	f, err := e.fc.CreateFunction(ctxT(e.t), &pb.CreateFunctionRequest{Function: &pb.Function{
		UserId: "u1", Name: name, FunctionType: pb.FunctionType_FUNCTION_TYPE_WASM, Wasm: module}})
	if err != nil {
		e.t.Fatalf("create function %s: %v", name, err)
	}
	return f
}

func (e *env) createTrigger(tr *pb.Trigger) *pb.Trigger {
	e.t.Helper()
	if tr.UserId == "" {
		tr.UserId = "u1"
	}
	got, err := e.tc.CreateTrigger(ctxT(e.t), &pb.CreateTriggerRequest{Trigger: tr})
	if err != nil {
		e.t.Fatalf("create trigger %s: %v", tr.Name, err)
	}
	return got
}

func dbTrigger(name, fnID string, cfg *pb.DatabaseConfig, writes ...string) *pb.Trigger {
	if cfg.DataSource == "" {
		cfg.DataSource = "src"
	}
	return &pb.Trigger{UserId: "u1", Name: name, TriggerType: pb.TriggerType_TRIGGER_TYPE_DATABASE, FunctionId: fnID, Enabled: true,
		Config: &pb.Trigger_Database{Database: cfg}, Writes: &pb.WriteConfig{Namespaces: writes}}
}

var tokens atomic.Int64

// event returns a change event in the server's format.
func event(op, db, coll string, id any, full bson.D) []byte {
	n := tokens.Add(1)
	d := bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%016X", n)}}},
		{Key: "operationType", Value: op},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: uint32(n)}},
		{Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Unix(1700000000, 0))},
		{Key: "ns", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: coll}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
	}
	if full != nil {
		d = append(d, bson.E{Key: "fullDocument", Value: full})
	}
	b, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// add appends events of source to the outbox and returns the last sequence.
func (e *env) add(source string, events ...[]byte) uint64 {
	e.t.Helper()
	seq, err := e.ob.Append(context.Background(), source, events, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}})
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

func (e *env) waitAcked(tr *pb.Trigger, seq uint64) {
	e.t.Helper()
	if err := e.mgr.WaitAcked(ctxT(e.t), tr.Id, seq); err != nil {
		e.t.Fatal(err)
	}
}

// docs returns the documents of a data-source collection, sorted by _id.
func (e *env) docs(ns string) []bson.M {
	e.t.Helper()
	db, coll := splitNS(ns)
	cur, err := e.src.Database(db).Collection(coll).Find(context.Background(), bson.M{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []bson.M
	if err := cur.All(context.Background(), &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func splitNS(ns string) (string, string) {
	for i := range ns {
		if ns[i] == '.' {
			return ns[:i], ns[i+1:]
		}
	}
	return ns, ""
}

// fakeClock is a Clock that moves only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, added: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	c.added <- struct{}{}
	return ch
}

// awaitWaiter blocks until someone waits on the clock.
func (c *fakeClock) awaitWaiter(t testing.TB) {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(testwait.Long):
		t.Fatal("nothing waits on the clock")
	}
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func sinkConfig() sink.RunnerConfig {
	return sink.RunnerConfig{BatchSize: 100, MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}
