package capture_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// TestContract_DevDB runs the contract suite through godwit's mongodb://
// path — the official driver's change stream, getMore and
// postBatchResumeToken handling, resume — against a devdb serving an
// embedded engine, so that path runs wherever the tests run.
func TestContract_DevDB(t *testing.T) {
	if realURI != "" {
		t.Skip("the contract suite already runs against GODWIT_TEST_MONGODB_URI")
	}
	ctx := context.Background()
	engine, err := mongodb.Open(ctx, "lungo:memory", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Close(ctx) })
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	srv, err := devdb.Open(engine.Engine, devdb.Config{Addr: "127.0.0.1:0", Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(ctx) })

	realURI = srv.URI()
	t.Cleanup(func() { realURI = "" })
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"CapturesEveryWriteInOrder", TestSource_CapturesEveryWriteInOrder},
		{"RestartResumesWithoutGap", TestSource_RestartResumesWithoutGap},
		{"Filters", TestSource_Filters},
	} {
		t.Run(tc.name, tc.run)
	}

	// What the suite leaves to the embedded engine, through the driver.
	t.Run("FirstStartPointIsTheOpeningToken", func(t *testing.T) {
		conn, db := deployment(t)
		ob := openOutbox(t, outbox.Options{})
		cfg := capture.Config{Database: db}
		r := startReady(t, newSource(cfg, conn, ob))
		r.stop(t)
		for i := range 3 { // written while capture is down
			insert(t, conn, db, "c", i)
		}
		startReady(t, newSource(cfg, conn, ob))
		recs := waitEvents(t, ob, 3)
		if got := summaries(t, recs); len(got) != 3 || got[0] != fmt.Sprintf("insert %s.c 0", db) {
			t.Fatalf("writes after the first start were lost: %v", got)
		}
	})
	t.Run("HistoryLostHalts", func(t *testing.T) {
		conn, db := deployment(t)
		ob := openOutbox(t, outbox.Options{})
		cfg := capture.Config{ID: "lossy", Database: db}
		r := startReady(t, newSource(cfg, conn, ob))
		insert(t, conn, db, "c", 0)
		waitEvents(t, ob, 1)
		r.stop(t)
		// Write in process to the same engine until its oplog no longer
		// holds the stored position.
		st, _, _ := ob.Source("lossy")
		at, ok := change.TokenTime(st.Token)
		if !ok {
			t.Fatalf("stored token %x has no cluster time", st.Token)
		}
		for i := 0; ; i++ {
			if i > 100000 {
				t.Fatal("the oplog never dropped the stored position")
			}
			insert(t, engine, db, "c", fmt.Sprintf("filler-%d", i))
			oplog := engine.Engine.Catalog().Namespaces[lungo.Oplog].Documents.List()
			if first, _ := bsonkit.Get(oplog[0], "clusterTime").(primitive.Timestamp); at.Before(first) {
				break
			}
		}
		lost := start(t, newSource(cfg, conn, ob))
		err := <-lost.done
		lost.done <- err
		if !isHalted(err) || !strings.Contains(err.Error(), "ChangeStreamHistoryLost") {
			t.Fatalf("Run = %v, want ErrHalted from ChangeStreamHistoryLost", err)
		}
	})
}
