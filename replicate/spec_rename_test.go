package replicate_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// catalog scripts a real source database "shop" whose collections can be
// renamed while a copy runs: each find is a new snapshot 100 s after the
// last, and before may change the catalog before a command is answered (a
// DDL that commits between the previous snapshot and the next).
type catalog struct {
	mu     sync.Mutex
	colls  map[string]*scriptedColl
	clock  uint32
	before func(c *catalog, cmd, coll string)
}

type scriptedColl struct {
	uuid byte
	docs []bson.Raw
}

// rename moves from onto to (dropping to), at a time between the last
// snapshot and the next, which it returns.
func (c *catalog) rename(from, to string) uint32 {
	c.colls[to] = c.colls[from]
	delete(c.colls, from)
	return c.clock + 50
}

func (c *catalog) serve(t *testing.T) *wireServer {
	return newWireServer(t, func(name string, cmd bson.Raw) bson.D {
		c.mu.Lock()
		defer c.mu.Unlock()
		coll, _ := cmd.Lookup(name).StringValueOK()
		if c.before != nil {
			c.before(c, name, coll)
		}
		switch name {
		case "listDatabases":
			return bson.D{{Key: "databases", Value: bson.A{bson.D{{Key: "name", Value: "shop"}}}}, {Key: "ok", Value: 1.0}}
		case "listCollections":
			only, _ := cmd.Lookup("filter", "name").StringValueOK()
			var names []string
			for n := range c.colls {
				if only == "" || only == n {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			var infos []bson.Raw
			for _, n := range names {
				uuid := primitive.Binary{Subtype: 4, Data: append(make([]byte, 15), c.colls[n].uuid)}
				infos = append(infos, raw(t, bson.D{{Key: "name", Value: n}, {Key: "type", Value: "collection"},
					{Key: "info", Value: bson.D{{Key: "readOnly", Value: false}, {Key: "uuid", Value: uuid}}}}))
			}
			return cursorReply("shop.$cmd.listCollections", 0, infos, nil)
		case "listIndexes":
			if c.colls[coll] == nil {
				return errorReply(26, "NamespaceNotFound", "ns does not exist: shop."+coll)
			}
		case "count":
			n := 0
			if x := c.colls[coll]; x != nil {
				n = len(x.docs)
			}
			return bson.D{{Key: "n", Value: int32(n)}, {Key: "ok", Value: 1.0}}
		case "find":
			c.clock += 100
			var docs []bson.Raw
			if x := c.colls[coll]; x != nil {
				docs = x.docs
			}
			return cursorReply("shop."+coll, 0, docs, &primitive.Timestamp{T: c.clock, I: 1})
		}
		return nil
	}, nil)
}

func doc(t *testing.T, id int32, v string) bson.Raw {
	return raw(t, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: v}})
}

func TestSink_RenameDuringInitialSync(t *testing.T) {
	rename := func(t *testing.T, from, to string, at uint32) bson.Raw {
		return ev(t, "rename", "shop", from, nil, at, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: to}}}).Raw
	}
	start := func(t *testing.T, c *catalog) (*replicate.Sink, *catalog, func(string) []bson.Raw) {
		w := c.serve(t)
		dst := memory(t)
		cfg := replicate.Config{ID: "ren", Source: "a", Target: "lungo:memory", Include: []string{"shop.*"}, Workers: 1}
		s := openSink(t, cfg, dst)
		if err := s.InitialSync(testCtx(t), w.connect(t)); err != nil {
			t.Fatal(err)
		}
		all := func(coll string) []bson.Raw {
			cur, err := dst.Client.Database("shop").Collection(coll).Find(testCtx(t), bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			var out []bson.Raw
			if err := cur.All(testCtx(t), &out); err != nil {
				t.Fatal(err)
			}
			return out
		}
		return s, c, all
	}
	t.Run("RenamedToANewName", func(t *testing.T) {
		// shop.orders is listed, then renamed to shop.orders_2024 before
		// its copy begins: the copy of shop.orders is empty (its indexes
		// cannot even be listed), and the rename event is covered by it.
		var renamedAt uint32
		c := &catalog{clock: 1000, colls: map[string]*scriptedColl{"orders": {uuid: 1, docs: []bson.Raw{doc(t, 1, "a"), doc(t, 2, "b")}}},
			before: func(c *catalog, cmd, coll string) {
				if cmd == "listIndexes" && coll == "orders" && renamedAt == 0 {
					renamedAt = c.rename("orders", "orders_2024")
				}
			}}
		s, c, all := start(t, c)
		upd := ev(t, "update", "shop", "orders_2024", int32(1), c.clock+10,
			bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "v", Value: "a2"}}}, {Key: "removedFields", Value: bson.A{}}}},
			full(bson.D{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "a2"}}))
		if err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "a", Raw: rename(t, "orders", "orders_2024", renamedAt)}, {Seq: 2, Source: "a", Raw: upd.Raw}}); err != nil {
			t.Fatal(err)
		}
		got := all("orders_2024")
		if len(got) != 2 || got[0].Lookup("v").StringValue() != "a2" || got[1].Lookup("v").StringValue() != "b" {
			t.Fatalf("target shop.orders_2024 holds %v, want documents 1 (updated to a2) and 2", got)
		}
		if n := len(all("orders")); n != 0 {
			t.Fatalf("target shop.orders holds %d documents, want none", n)
		}
	})
	t.Run("RenamedOntoACopiedCollection", func(t *testing.T) {
		// shop.b is copied, then shop.x is renamed onto it (dropTarget)
		// before shop.x's snapshot: shop.b's copy is stale.
		var renamedAt uint32
		c := &catalog{clock: 1000, colls: map[string]*scriptedColl{
			"b": {uuid: 2, docs: []bson.Raw{doc(t, 1, "old b")}},
			"x": {uuid: 3, docs: []bson.Raw{doc(t, 7, "x")}}},
			before: func(c *catalog, cmd, coll string) {
				if cmd == "find" && coll == "x" && renamedAt == 0 {
					renamedAt = c.rename("x", "b")
				}
			}}
		s, _, all := start(t, c)
		if err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "a", Raw: rename(t, "x", "b", renamedAt)}}); err != nil {
			t.Fatal(err)
		}
		got := all("b")
		if len(got) != 1 || got[0].Lookup("v").StringValue() != "x" {
			t.Fatalf("target shop.b holds %v, want only shop.x's document", got)
		}
		if n := len(all("x")); n != 0 {
			t.Fatalf("target shop.x holds %d documents, want none", n)
		}
	})
}

func TestSink_RenameTheCopyCannotRebuild(t *testing.T) {
	// A rename older than the old name's copy, into a name that was never
	// copied (a source without collection uuids, or a rename the listings
	// did not see): the target cannot rebuild the new name, so the
	// pipeline halts and says why.
	src, dst := memory(t), memory(t)
	insertMany(t, src.Client, "shop", "orders", 1, 3)
	s := openSink(t, replicate.Config{ID: "rh", Source: "a", Target: "lungo:memory", Include: []string{"shop.*"}, Workers: 1}, dst)
	if err := s.InitialSync(testCtx(t), src); err != nil {
		t.Fatal(err)
	}
	e := ev(t, "rename", "shop", "orders", nil, 1, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders_2024"}}})
	err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "a", Raw: e.Raw}})
	if !errors.Is(err, replicate.ErrHalted) || !strings.Contains(err.Error(), "renamed to shop.orders_2024 during the initial sync") {
		t.Fatalf("Deliver: %v, want a halt naming the rename", err)
	}
}

func TestSink_UpdateMatchingNothing(t *testing.T) {
	open := func(t *testing.T) (*replicate.Sink, func() int64) {
		dst := memory(t)
		no := false
		s := openSink(t, replicate.Config{ID: "um", Source: "r", Target: "lungo:memory", InitialSync: &no, Workers: 1}, dst)
		return s, func() int64 { return count(t, dst.Client, "shop", "orders") }
	}
	t.Run("AppliedAsItsPostImage", func(t *testing.T) {
		s, n := open(t)
		if err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "r", Raw: changetest.Event("update_with_lookup")}}); err != nil {
			t.Fatal(err)
		}
		if got := n(); got != 1 {
			t.Fatalf("target holds %d documents, want the update's post-image", got)
		}
	})
	t.Run("WithoutPostImageIsAnError", func(t *testing.T) {
		s, _ := open(t)
		e := ev(t, "update", "shop", "orders", int32(1), 100,
			bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "v", Value: "a2"}}}, {Key: "removedFields", Value: bson.A{}}}})
		err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "r", Raw: e.Raw}})
		if err == nil || !sink.IsPermanent(err) || !strings.Contains(err.Error(), "matched no document") {
			t.Fatalf("Deliver: %v, want a permanent error saying the update matched no document", err)
		}
		var pe *sink.PartialError
		if errors.As(err, &pe) {
			t.Fatalf("Deliver: partial error %v for a batch of one", err)
		}
	})
}
