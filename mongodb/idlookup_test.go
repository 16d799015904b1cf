package mongodb_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// The embedded engine (godwit's patched lungo) finds the documents of a
// query with a plain top-level _id in the _id index instead of scanning the
// collection. Every read and write must still match exactly what the scan
// matches: the same query wrapped in $and (which keeps the scan) is the
// reference, on two engines fed the same random workload.
func TestEmbedded_IDLookupMatchesScan(t *testing.T) {
	ctx := context.Background()
	open := func() lungo.IClient {
		client, engine, err := lungo.Open(ctx, lungo.Options{Store: lungo.NewMemoryStore()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(engine.Close)
		return client
	}
	fast := open().Database("db").Collection("c")
	scan := open().Database("db").Collection("c")
	oid := primitive.NewObjectID()
	// _ids of several types, numbers that compare equal across types, and
	// values the fast path must leave to the scan.
	ids := []any{int32(1), int64(2), 3.0, 3.5, "a", "b", oid, true, primitive.DateTime(5), bson.D{{Key: "k", Value: 1}}, nil}
	queries := []any{int32(2), int64(1), 3, int32(3), 3.5, "a", "c", oid, true, false, primitive.DateTime(5),
		bson.D{{Key: "k", Value: 1}}, nil, bson.D{{Key: "$gt", Value: 1}}, bson.D{{Key: "$in", Value: bson.A{"a", 1}}}}
	for _, id := range ids {
		doc := bson.D{{Key: "_id", Value: id}, {Key: "v", Value: 0}}
		for _, c := range []lungo.ICollection{fast, scan} {
			if _, err := c.InsertOne(ctx, doc); err != nil {
				t.Fatal(err)
			}
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for n := range 400 {
		q := queries[rnd.IntN(len(queries))]
		plain := bson.D{{Key: "_id", Value: q}}
		if rnd.IntN(3) == 0 {
			plain = append(plain, bson.E{Key: "v", Value: bson.D{{Key: "$lt", Value: rnd.IntN(5)}}})
		}
		wrapped := bson.D{{Key: "$and", Value: bson.A{plain}}}
		step := fmt.Sprintf("step %d, query %v", n, plain)
		var a, b any
		var errA, errB error
		switch rnd.IntN(5) {
		case 0:
			var ra, rb []bson.M
			if cur, err := fast.Find(ctx, plain); err == nil {
				errA = cur.All(ctx, &ra)
			}
			if cur, err := scan.Find(ctx, wrapped); err == nil {
				errB = cur.All(ctx, &rb)
			}
			a, b = ra, rb
		case 1:
			upd := bson.D{{Key: "$inc", Value: bson.D{{Key: "v", Value: 1}}}}
			a, errA = fast.UpdateOne(ctx, plain, upd)
			b, errB = scan.UpdateOne(ctx, wrapped, upd)
		case 2:
			r := bson.D{{Key: "v", Value: n}}
			a, errA = fast.ReplaceOne(ctx, plain, r)
			b, errB = scan.ReplaceOne(ctx, wrapped, r)
		case 3:
			a, errA = fast.DeleteMany(ctx, plain)
			b, errB = scan.DeleteMany(ctx, wrapped)
		case 4:
			id := ids[rnd.IntN(len(ids))]
			doc := bson.D{{Key: "_id", Value: id}, {Key: "v", Value: n}}
			_, errA = fast.InsertOne(ctx, doc)
			_, errB = scan.InsertOne(ctx, doc)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) || (errA == nil) != (errB == nil) {
			t.Fatalf("%s: by _id %v (%v), by scan %v (%v)", step, a, errA, b, errB)
		}
	}
	var all [2][]bson.M
	for i, c := range []lungo.ICollection{fast, scan} {
		cur, err := c.Find(ctx, bson.D{}, options.Find())
		if err != nil {
			t.Fatal(err)
		}
		if err := cur.All(ctx, &all[i]); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(all[0]) != fmt.Sprint(all[1]) || len(all[0]) == 0 {
		t.Fatalf("collections differ:\nby _id %v\nby scan %v", all[0], all[1])
	}
}
