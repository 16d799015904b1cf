package trigger_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/guest/guestbuild"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/sinktest"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

var (
	cacheUpdaterOnce sync.Once
	cacheUpdaterWasm []byte
	cacheUpdaterErr  error
)

// cacheUpdater builds the cacheupdater example guest once per test binary.
func cacheUpdater(t *testing.T) []byte {
	cacheUpdaterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "godwit-conformance-guest")
		if err != nil {
			cacheUpdaterErr = err
			return
		}
		defer os.RemoveAll(dir)
		mods, err := guestbuild.Build(testwait.Context(t), dir, guestbuild.Examples+"cacheupdater")
		cacheUpdaterWasm, cacheUpdaterErr = mods["cacheupdater"], err
	})
	if cacheUpdaterErr != nil {
		t.Fatal(cacheUpdaterErr)
	}
	return cacheUpdaterWasm
}

// deployments are the MongoDB deployments of the suite's runs by dir: the
// metadata store and data source outlive a godwit restart, as a real
// deployment does, so a reopened sink finds them as they were. They are
// embedded in memory: lungo's file store rewrites its whole file on every
// commit, which would make the suite measure that.
var deployments sync.Map // dir → *mongodb.Conn

func deployment(t *testing.T, dir string) *mongodb.Conn {
	if c, ok := deployments.Load(dir); ok {
		return c.(*mongodb.Conn)
	}
	ctx := testwait.Context(t)
	conn, err := mongodb.Open(ctx, "lungo:memory", "")
	if err != nil {
		t.Fatal(err)
	}
	deployments.Store(dir, conn)
	t.Cleanup(func() {
		deployments.Delete(dir)
		conn.Close(context.Background())
	})
	return conn
}

// triggerUnderTest is a database trigger's delivery sink together with the
// manager, metadata and outbox it needs; Close closes them all, as a
// godwit restart would.
type triggerUnderTest struct {
	sink.Sink
	close func(context.Context) error
}

func (s *triggerUnderTest) Close(ctx context.Context) error { return s.close(ctx) }

// openTriggerSink opens (or, with the same dir, reopens) a manager whose
// metadata and data source are one embedded deployment kept for dir, with a
// database trigger on the suite's source "conf" running the cacheupdater
// guest: the durable effect of each event is its document in
// cache.conf.items of that data source.
func openTriggerSink(t *testing.T, dir string) sink.Sink {
	ctx := testwait.Context(t)
	ob, err := outbox.Open(filepath.Join(dir, "trigger-outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn := deployment(t, dir)
	m, err := trigger.Open(ctx, trigger.Config{Wasm: wasm.Config{CacheDir: filepath.Join(os.TempDir(), "godwit-conformance-wazero")}},
		trigger.Deps{Outbox: ob, Metadata: conn.Client, DataSources: map[string]lungo.IClient{"conf": conn.Client}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	var once sync.Once
	closeAll := func(ctx context.Context) error {
		var err error
		once.Do(func() {
			stop()
			if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) {
				err = rerr
			}
			err = errors.Join(err, m.Close(ctx), ob.Close(ctx))
		})
		return err
	}
	t.Cleanup(func() { _ = closeAll(context.Background()) })
	<-m.Started()

	trs, err := m.QueryTriggers(ctx, trigger.TriggerQuery{UserID: "conf"})
	if err != nil {
		t.Fatal(err)
	}
	var id string
	if len(trs) > 0 {
		id = trs[0].ID
	} else {
		fn, err := m.CreateFunction(ctx, trigger.Function{UserID: "conf", Name: "cacheupdater", Wasm: cacheUpdater(t)})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: "conf", Name: "cache", Type: trigger.TypeDatabase, FunctionID: fn.ID, Enabled: true,
			Database: &trigger.DatabaseConfig{DataSource: "conf", Database: "conf", FullDocument: true},
			Writes:   trigger.Writes{Namespaces: []string{"cache.*"}}})
		if err != nil {
			t.Fatal(err)
		}
		id = tr.ID
	}
	s := m.DeliverySink(id)
	if s == nil {
		t.Fatalf("trigger %s is not running", id)
	}
	return &triggerUnderTest{Sink: s, close: closeAll}
}

// checkCache asserts that cache.conf.items holds exactly one document per
// delivered insert, with the inserted document.
func checkCache(t *testing.T, dir string, want []outbox.Record) {
	ctx := testwait.Context(t)
	cur, err := deployment(t, dir).Client.Database("cache").Collection("conf.items").Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		ID  int64 `bson:"_id"`
		Op  string
		Doc struct {
			ID int64 `bson:"_id"`
			N  int64
		}
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(want) {
		t.Fatalf("cache holds %d documents, want one per event: %d", len(docs), len(want))
	}
	seen := map[int64]bool{}
	for _, d := range docs {
		if seen[d.ID] || d.ID < 1 || d.ID > int64(len(want)) || d.Op != "insert" || d.Doc.ID != d.ID || d.Doc.N != d.ID*10 {
			t.Fatalf("cache document %+v: want _id 1..%d once, each with its inserted document", d, len(want))
		}
		seen[d.ID] = true
	}
}

// TestTriggerSink_Conformance runs the sink conformance suite against a
// database trigger's delivery sink: the real manager, wasm runtime and
// cacheupdater guest writing into an embedded engine. The cache keeps one
// document per source document, so it shows that every event ran and that
// replays are harmless, not the order of runs (ordered triggers keep it;
// the runner's ordering is the suite's DeliversInOrder through the runner).
func TestTriggerSink_Conformance(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{Open: openTriggerSink, Check: checkCache})
}
