package devdb_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// renameEvent is the part of a change event a rename test looks at.
type renameEvent struct {
	OperationType string `bson:"operationType"`
	NS            struct {
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
	} `bson:"ns"`
	To *struct {
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
	} `bson:"to"`
}

func (e renameEvent) String() string {
	s := e.OperationType
	if e.NS.DB != "" {
		s += " " + e.NS.DB + "." + e.NS.Coll
	}
	if e.To != nil {
		s += " -> " + e.To.DB + "." + e.To.Coll
	}
	return s
}

// renameCollection renames through the admin database, as drivers and
// mongosh do.
func renameCollection(ctx context.Context, client lungo.IClient, db string, from, to string, dropTarget bool) error {
	return client.Database(db).RunCommand(ctx, bson.D{{Key: "renameCollection", Value: from}, {Key: "to", Value: to},
		{Key: "dropTarget", Value: dropTarget}}).Err()
}

// TestRenameCollection renames collections on the embedded engine, once
// in process (what `lungo:` sources and targets use) and once through devdb
// with the official driver: documents and indexes move, the change stream
// shows one rename event ({ns, to}) that ends the streams on either
// collection, and refusals carry a server's codes.
func TestRenameCollection(t *testing.T) {
	for _, via := range []string{"in process", "devdb"} {
		t.Run(via, func(t *testing.T) {
			ctx := longCtx(t)
			engine, _, driver := start(t)
			client := lungo.NewClient(engine)
			if via == "devdb" {
				client = &lungo.MongoClient{Client: driver}
			}
			shop := client.Database("shop")
			for i := range 3 {
				if _, err := shop.Collection("orders").InsertOne(ctx, bson.M{"_id": i, "n": i}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := shop.Collection("orders").Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "n", Value: 1}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := shop.Collection("archive").InsertOne(ctx, bson.M{"_id": "old"}); err != nil {
				t.Fatal(err)
			}

			all, err := client.Watch(ctx, mongo.Pipeline{})
			if err != nil {
				t.Fatal(err)
			}
			defer all.Close(ctx)
			source, err := shop.Collection("orders").Watch(ctx, mongo.Pipeline{})
			if err != nil {
				t.Fatal(err)
			}
			defer source.Close(ctx)
			target, err := shop.Collection("archive").Watch(ctx, mongo.Pipeline{})
			if err != nil {
				t.Fatal(err)
			}
			defer target.Close(ctx)

			for _, c := range []struct {
				db, from, to string
				dropTarget   bool
				code         int32
			}{
				{"shop", "shop.orders", "shop.x", false, 13},        // not on admin
				{"admin", "shop.nothing", "shop.x", false, 26},      // no such source
				{"admin", "shop.orders", "shop.archive", false, 48}, // target exists
				{"admin", "shop.orders", "shop.orders", true, 20},   // onto itself
				{"admin", "shop.orders", "local.oplog", true, 20},   // into local
				{"admin", "shop.orders", "nodot", false, 73},        // not db.coll
				{"admin", "shop.orders", "shop.archive", false, 48}, // still refused
			} {
				err := renameCollection(ctx, client, c.db, c.from, c.to, c.dropTarget)
				var ce mongo.CommandError
				if !errors.As(err, &ce) || ce.Code != c.code {
					t.Errorf("rename %s to %s on %s: got %v, want code %d", c.from, c.to, c.db, err, c.code)
				}
			}

			if err := renameCollection(ctx, client, "admin", "shop.orders", "shop.archive", true); err != nil {
				t.Fatalf("rename with dropTarget: %v", err)
			}
			if _, err := shop.Collection("archive").InsertOne(ctx, bson.M{"_id": 3, "n": 3}); err != nil {
				t.Fatal(err)
			}
			if err := renameCollection(ctx, client, "admin", "shop.archive", "inventory.orders", false); err != nil {
				t.Fatalf("rename to another database: %v", err)
			}

			names, err := shop.ListCollectionNames(ctx, bson.M{})
			if err != nil || len(names) != 0 {
				t.Fatalf("shop still lists %v (%v)", names, err)
			}
			moved := client.Database("inventory").Collection("orders")
			var docs []bson.M
			cur, err := moved.Find(ctx, bson.M{})
			if err == nil {
				err = cur.All(ctx, &docs)
			}
			if err != nil || len(docs) != 4 {
				t.Fatalf("inventory.orders holds %v (%v), want the 3 orders and the one inserted after the first rename", docs, err)
			}
			idx, err := moved.Indexes().List(ctx)
			var specs []bson.M
			if err == nil {
				err = idx.All(ctx, &specs)
			}
			if err != nil || !slices.ContainsFunc(specs, func(s bson.M) bool { return s["name"] == "n_1" }) {
				t.Fatalf("indexes after the renames: %v (%v), want n_1 kept", specs, err)
			}

			read := func(name string, cs lungo.IChangeStream, n int) []string {
				t.Helper()
				var got []string
				for range n {
					if !cs.Next(ctx) {
						t.Fatalf("%s stream ended after %v: %v", name, got, cs.Err())
					}
					var e renameEvent
					if err := cs.Decode(&e); err != nil {
						t.Fatal(err)
					}
					got = append(got, e.String())
				}
				return got
			}
			want := []string{"rename shop.orders -> shop.archive", "insert shop.archive", "rename shop.archive -> inventory.orders"}
			if got := read("client", all, 3); !slices.Equal(got, want) {
				t.Errorf("client stream: %q, want %q", got, want)
			}
			want = []string{"rename shop.orders -> shop.archive", "invalidate"}
			if got := read("source collection", source, 2); !slices.Equal(got, want) {
				t.Errorf("stream on the source collection: %q, want %q", got, want)
			}
			if got := read("target collection", target, 2); !slices.Equal(got, want) {
				t.Errorf("stream on the replaced collection: %q, want %q", got, want)
			}
			if source.Next(ctx) || target.Next(ctx) {
				t.Error("a stream went on after its invalidate")
			}
		})
	}
}
