package replicate_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/replicate"
)

// deployment opens a fresh, empty deployment for one side of a pipeline.
// The replicate suite's core tests take one, so they run both on the
// embedded engine (memory) and through godwit's mongodb:// path
// (devdbDeployment).
type deployment func(t testing.TB) *mongodb.Conn

// devdbDeployment serves a fresh embedded engine with devdb (the MongoDB
// wire protocol, a one-member replica set) and opens it through godwit's
// mongodb:// path, so the official driver's change stream, sessions,
// transactions and snapshot reads run for capture, apply and verify.
func devdbDeployment(t testing.TB) *mongodb.Conn {
	t.Helper()
	ctx := context.Background()
	engine, err := mongodb.Open(ctx, "lungo:memory", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close(ctx) })
	log := testLog(t).Level(zerolog.WarnLevel)
	srv, err := devdb.Open(engine.Engine, devdb.Config{Addr: "127.0.0.1:0", Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(ctx) })
	conn, err := mongodb.Open(testCtx(t), srv.URI(), "")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the driver disconnects before the
	// server closes.
	t.Cleanup(func() { _ = conn.Close(ctx) })
	return conn
}

// TestSink_DevDB runs the replicate suite's core through godwit's
// mongodb:// path: source and target are devdb servers reached with the
// official driver, so initial sync (snapshot reads), apply in both modes
// (one target transaction per source transaction, and transactions: off),
// DDL, two-way replication with origin markers, and verify run the code
// that real deployments run. The workloads are smaller than the embedded
// runs': every write crosses a socket under -race.
func TestSink_DevDB(t *testing.T) {
	t.Run("OneWayInTransactions", func(t *testing.T) {
		oneWayRandomWorkload(t, devdbDeployment, replicate.TransactionsRequired, 300)
	})
	t.Run("OneWayWithoutTransactions", func(t *testing.T) {
		oneWayRandomWorkload(t, devdbDeployment, replicate.TransactionsOff, 300)
	})
	t.Run("DDL", func(t *testing.T) {
		ddlPolicies(t, devdbDeployment)
	})
	t.Run("MappingRenamesAndIgnoreGlobs", func(t *testing.T) {
		mappingRenamesAndIgnoreGlobs(t, devdbDeployment)
	})
	t.Run("TwoWayConcurrentWritesConvergeWithoutEcho", func(t *testing.T) {
		twoWayConcurrentWrites(t, devdbDeployment, 500)
	})
	t.Run("VerifyReportsEveryKindOfDifference", func(t *testing.T) {
		verifyReportsEveryKindOfDifference(t, devdbDeployment)
	})
}

// TestSink_SurvivesSIGKILLIntoDevDB kills the replicator (a child process)
// with SIGKILL during the initial copy and at random points while it
// applies, in transactions, into a devdb reached through mongodb://: a
// transaction the kill cut off never commits, every restart replays
// idempotently, and the target ends equal to the source.
func TestSink_SurvivesSIGKILLIntoDevDB(t *testing.T) {
	survivesSIGKILL(t, devdbDeployment(t).Redacted)
}

// TestSink_InitialSyncWaitsForAnUnreachableDeployment: a source that is down
// when the initial sync starts, for longer than the driver waits for a
// server, is waited for: the sync logs that it retries, and copies
// everything once the source is back, instead of failing (which left the
// pipeline not streaming until godwit restarted).
func TestSink_InitialSyncWaitsForAnUnreachableDeployment(t *testing.T) {
	ctx := testCtx(t)
	engine, err := mongodb.Open(ctx, "lungo:memory", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close(context.Background()) })
	insertMany(t, engine.Client, "shop", "orders", 1, 50)
	srv, err := devdb.Open(engine.Engine, devdb.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	src, err := mongodb.Open(ctx, srv.URI()+"&serverSelectionTimeoutMS=300", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	if err := srv.Close(ctx); err != nil { // the source goes down
		t.Fatal(err)
	}

	dst := devdbDeployment(t)
	retrying := make(chan struct{})
	var once sync.Once
	log := zerolog.New(lineWriter(func(line string) {
		if strings.Contains(line, "initial sync") && strings.Contains(line, "unreachable") {
			once.Do(func() { close(retrying) })
		}
	}))
	cfg := replicate.Config{ID: "wait", Source: "a", Target: dst.Redacted, Include: []string{"shop.*"}}
	s, err := replicate.Open(ctx, cfg, dst, meta, log)
	if err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- s.InitialSync(ctx, src) }()
	select {
	case <-retrying:
	case err := <-synced:
		t.Fatalf("initial sync with the source down returned %v, want it to wait for the source", err)
	case <-ctx.Done():
		t.Fatal("the initial sync never said it waits for the source")
	}
	srv, err = devdb.Open(engine.Engine, devdb.Config{Addr: addr}) // back on its address
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	if err := <-synced; err != nil {
		t.Fatalf("initial sync after the source came back: %v", err)
	}
	mustEqual(t, engine.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
}
