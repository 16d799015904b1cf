package replicate_test

import (
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
)

// wireTarget opens a one-way pipeline into a scripted wire server.
func wireTarget(t *testing.T, w *wireServer, cfg replicate.Config, opts ...replicate.Option) *replicate.Sink {
	t.Helper()
	no := false
	cfg.ID, cfg.Source, cfg.Target, cfg.InitialSync = "wire", "r", w.uri(), &no
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	return openSink(t, cfg, w.connect(t), opts...)
}

func deliverRecorded(t *testing.T, s *replicate.Sink, names ...string) {
	t.Helper()
	var recs []outbox.Record
	for i, n := range names {
		recs = append(recs, outbox.Record{Seq: uint64(i + 1), Source: "r", Raw: changetest.Event(n)})
	}
	if err := s.Deliver(testCtx(t), recs); err != nil {
		t.Fatal(err)
	}
}

// TestSink_DDLOnRealServer runs DDL through the official driver against a
// scripted server and checks the commands it sends.
func TestSink_DDLOnRealServer(t *testing.T) {
	t.Run("EveryDDLCommandCarriesMajorityWriteConcern", func(t *testing.T) {
		// RunCommand does not apply the database's write concern: without
		// it in the command, a DDL acknowledged by the primary alone can
		// be rolled back after a failover while the applied position
		// (written with majority) survives.
		w := newWireServer(t, nil, nil)
		s := wireTarget(t, w, replicate.Config{})
		deliverRecorded(t, s, "rename", "createIndexes", "create", "modify")
		for _, name := range []string{"renameCollection", "create", "createIndexes", "collMod"} {
			cmds := w.commands(name)
			if len(cmds) == 0 {
				t.Fatalf("no %s command was sent", name)
			}
			for _, c := range cmds {
				wc, ok := c.Lookup("writeConcern").DocumentOK()
				if mode, _ := wc.Lookup("w").StringValueOK(); !ok || mode != "majority" {
					t.Errorf("%s sent without writeConcern {w: majority}: %s", name, c)
				}
			}
		}
	})
	t.Run("CreateIndexesCreatesTheCollectionFirstInsideTheMarker", func(t *testing.T) {
		// createIndexes on a missing collection creates it implicitly and
		// the server emits a create event; the collection is created
		// explicitly, inside the DDL marker, so the echo filter covers it.
		w := newWireServer(t, nil, nil)
		s := wireTarget(t, w, replicate.Config{})
		w.reset()
		deliverRecorded(t, s, "createIndexes")
		w.mu.Lock()
		var seq []string
		for _, c := range w.cmds {
			switch n := cmdName(c); n {
			case "create", "createIndexes":
				coll, _ := c.Lookup(n).StringValueOK()
				seq = append(seq, n+" "+coll)
			case "insert", "delete":
				if coll, _ := c.Lookup(n).StringValueOK(); coll == replicate.MarkersCollection {
					seq = append(seq, n+" marker")
				}
			}
		}
		w.mu.Unlock()
		want := []string{"insert marker", "create orders", "createIndexes orders", "delete marker"}
		if !slices.Equal(seq, want) {
			t.Fatalf("commands %q, want %q", seq, want)
		}
	})
}

func TestEchoFilter_CreateIndexesMarker(t *testing.T) {
	// The create event that precedes a createIndexes on a new collection
	// belongs to the same marked DDL.
	f := replicate.NewEchoFilter(meta)
	did := primitive.NewObjectID()
	steps := []struct {
		ev   string
		drop bool
	}{{"marker", true}, {"create", true}, {"createIndexes", true}, {"close", true}, {"create", false}}
	for i, st := range steps {
		var e = ev(t, st.ev, "shop", "orders", nil, uint32(30+i))
		switch st.ev {
		case "marker":
			e = ev(t, "insert", meta, replicate.MarkersCollection, did, 30, full(bson.D{{Key: "_id", Value: did}, {Key: "kind", Value: "ddl"},
				{Key: "op", Value: "createIndexes"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}}}))
		case "close":
			e = ev(t, "delete", meta, replicate.MarkersCollection, did, uint32(30+i))
		}
		if got := f.Observe(e); got != st.drop {
			t.Fatalf("step %d (%s): dropped %v, want %v", i, st.ev, got, st.drop)
		}
	}
}
