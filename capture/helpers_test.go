package capture_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

func TestMain(m *testing.M) {
	// A small embedded oplog makes "history lost" reachable with a few
	// hundred writes.
	mongodb.EmbeddedOplogSize = 300
	mongodb.EmbeddedMinOplogAge = time.Nanosecond
	os.Exit(m.Run())
}

// realURI is set to run the contract tests against a real replica set.
var realURI = os.Getenv("GODWIT_TEST_MONGODB_URI")

var dbCounter atomic.Int64

// deployment opens the deployment under test: a fresh embedded engine, or
// the real replica set named by GODWIT_TEST_MONGODB_URI with a database name
// unique to this test.
func deployment(t *testing.T) (*mongodb.Conn, string) {
	t.Helper()
	ctx := context.Background()
	uri := "lungo:memory"
	if realURI != "" {
		uri = realURI
	}
	conn, err := mongodb.Open(ctx, uri, "")
	if err != nil {
		t.Fatal(err)
	}
	db := fmt.Sprintf("gwtest_%d_%d", os.Getpid(), dbCounter.Add(1))
	t.Cleanup(func() {
		if realURI != "" {
			_ = conn.Client.Database(db).Drop(ctx)
		}
		_ = conn.Close(ctx)
	})
	return conn, db
}

func embeddedOnly(t *testing.T, why string) {
	t.Helper()
	if realURI != "" {
		t.Skipf("embedded engine only: %s", why)
	}
}

func openOutbox(t *testing.T, opts outbox.Options) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ob.Check(); err != nil {
			t.Errorf("outbox consistency: %v", err)
		}
		ob.Close(context.Background())
	})
	return ob
}

// running is a source running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, src *capture.Source) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the source and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(testwait.Long):
		t.Fatal("source did not stop within 30s of cancel")
		return nil
	}
}

func startReady(t *testing.T, src *capture.Source) *running {
	t.Helper()
	r := start(t, src)
	select {
	case <-src.Ready():
	case err := <-r.done:
		t.Fatalf("source stopped before its stream opened: %v", err)
	case <-time.After(testwait.Long):
		t.Fatalf("stream did not open: %+v", src.Status())
	}
	return r
}

// waitEvents waits until the outbox holds at least n events and returns
// them all.
func waitEvents(t *testing.T, ob *outbox.Outbox, n int) []outbox.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	for {
		recs := readAll(t, ob)
		if len(recs) >= n {
			return recs
		}
		// Wait for an event after the last one this read saw (retention is
		// off in these tests, so that is what the outbox holds).
		after := uint64(0)
		if len(recs) > 0 {
			after = recs[len(recs)-1].Seq
		}
		if err := ob.Wait(ctx, after); err != nil {
			t.Fatalf("outbox holds %d events, want %d: %v", len(recs), n, err)
		}
	}
}

func readAll(t *testing.T, ob *outbox.Outbox) []outbox.Record {
	t.Helper()
	recs, err := ob.Read(0, 1<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// summary describes a record as "op ns _id" (a rename as "rename ns -> to").
func summary(t *testing.T, r outbox.Record) string {
	t.Helper()
	ev, err := change.Parse(r.Raw)
	if err != nil {
		t.Fatalf("record %d: %v", r.Seq, err)
	}
	id, _ := ev.DocumentID()
	idStr := ""
	if n, ok := id.AsInt64OK(); ok {
		idStr = fmt.Sprint(" ", n)
	} else if id.Type != 0 {
		idStr = " " + id.String()
	}
	if ev.OperationType == change.OpRename {
		idStr = " -> " + ev.To.String()
	}
	return ev.OperationType + " " + ev.NS.String() + idStr
}

func summaries(t *testing.T, recs []outbox.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = summary(t, r)
	}
	return out
}

func newSource(cfg capture.Config, conn *mongodb.Conn, ob *outbox.Outbox) *capture.Source {
	if cfg.ID == "" {
		cfg.ID = "src"
	}
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	return capture.New(cfg, conn, ob, nil, zerolog.Nop())
}

func insert(t *testing.T, conn *mongodb.Conn, db, coll string, id any) {
	t.Helper()
	if _, err := conn.Client.Database(db).Collection(coll).InsertOne(context.Background(), bson.M{"_id": id, "v": 1}); err != nil {
		t.Fatal(err)
	}
}

// overflowOplog writes to db.coll until the embedded oplog no longer holds
// entries as old as the first one there now (the engine keeps entries of the
// current second, so this takes up to about a second of writes).
func overflowOplog(t *testing.T, conn *mongodb.Conn, db, coll string) {
	t.Helper()
	oplog := func() []bsonkit.Doc { return conn.Engine.Catalog().Namespaces[lungo.Oplog].Documents.List() }
	first := bsonkit.Get(oplog()[0], "_id")
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatal("the embedded oplog never dropped its first entry")
		}
		insert(t, conn, db, coll, fmt.Sprintf("filler-%d", i))
		if bsonkit.Compare(bsonkit.Get(oplog()[0], "_id"), first) > 0 {
			return
		}
	}
}

func isHalted(err error) bool { return errors.Is(err, capture.ErrHalted) }
