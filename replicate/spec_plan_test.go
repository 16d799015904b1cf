package replicate_test

import (
	"bytes"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
)

// TestSink_LiteralDottedField: a top-level field literally named "a.b"
// beside a nested a.b. An update event whose updatedFields or
// removedFields holds "a.b" (what a server before 6.1, or without
// disambiguatedPaths, reports) may mean either; $set/$unset of "a.b"
// always touch the nested one, so the update must be applied as its
// post-image.
func TestSink_LiteralDottedField(t *testing.T) {
	for _, tc := range []struct {
		name    string
		updated bson.D
		removed bson.A
		after   bson.D
	}{
		{"SetOfTheLiteral", bson.D{{Key: "a.b", Value: int32(2)}}, bson.A{},
			bson.D{{Key: "_id", Value: int32(1)}, {Key: "a.b", Value: int32(2)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}}}}},
		{"UnsetOfTheLiteral", bson.D{}, bson.A{"a.b"},
			bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := memory(t)
			no := false
			s := openSink(t, replicate.Config{ID: "dot", Source: "r", Target: "lungo:memory", InitialSync: &no, Workers: 1}, dst)
			coll := dst.Client.Database("shop").Collection("orders")
			before := bson.D{{Key: "_id", Value: int32(1)}, {Key: "a.b", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}}}}
			if _, err := coll.InsertOne(testCtx(t), before); err != nil {
				t.Fatal(err)
			}
			after := raw(t, tc.after)
			e := ev(t, "update", "shop", "orders", int32(1), 100,
				bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: tc.updated},
					{Key: "removedFields", Value: tc.removed}, {Key: "truncatedArrays", Value: bson.A{}}}},
				bson.E{Key: "fullDocument", Value: after})
			if err := s.Deliver(testCtx(t), []outbox.Record{{Seq: 1, Source: "r", Raw: e.Raw}}); err != nil {
				t.Fatal(err)
			}
			var got bson.Raw
			if err := coll.FindOne(testCtx(t), bson.D{{Key: "_id", Value: int32(1)}}).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, after) {
				t.Fatalf("target document %s, want the post-image %s", got, after)
			}
		})
	}
}
