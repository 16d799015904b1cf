package replicate_test

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/replicate"
)

// TestVerify_CollatedStringIDs: a collection with a case-insensitive
// default collation sorts its string _ids "a" < "B" < "c" on the server,
// while the target (no collation) and the comparison use binary order
// "B" < "a" < "c". Verify must not report the same documents as missing
// and extra.
func TestVerify_CollatedStringIDs(t *testing.T) {
	docs := map[string]bson.Raw{}
	for _, id := range []string{"a", "B", "c"} {
		docs[id] = raw(t, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: int32(1)}})
	}
	w := newWireServer(t, func(name string, cmd bson.Raw) bson.D {
		switch name {
		case "listDatabases":
			return bson.D{{Key: "databases", Value: bson.A{bson.D{{Key: "name", Value: "shop"}}}}, {Key: "ok", Value: 1.0}}
		case "listCollections":
			return cursorReply("shop.$cmd.listCollections", 0, []bson.Raw{raw(t, bson.D{{Key: "name", Value: "ids"}, {Key: "type", Value: "collection"},
				{Key: "options", Value: bson.D{{Key: "collation", Value: bson.D{{Key: "locale", Value: "en"}, {Key: "strength", Value: int32(2)}}}}}})}, nil)
		case "aggregate": // CountDocuments
			return cursorReply("shop.ids", 0, []bson.Raw{raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "n", Value: int32(3)}})}, nil)
		case "find":
			// The server sorts by the collection's collation unless the
			// query names another.
			order := []string{"a", "B", "c"}
			if loc, _ := cmd.Lookup("collation", "locale").StringValueOK(); loc == "simple" {
				order = []string{"B", "a", "c"}
			}
			var batch []bson.Raw
			for _, id := range order {
				batch = append(batch, docs[id])
			}
			return cursorReply("shop.ids", 0, batch, nil)
		}
		return nil
	}, nil)
	src := w.connect(t)
	dst := memory(t)
	for _, id := range []string{"a", "B", "c"} {
		if _, err := dst.Client.Database("shop").Collection("ids").InsertOne(testCtx(t), docs[id]); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustEqual(t, src.Client, dst.Client, replicate.VerifyOptions{})
	if len(rep.Namespaces) != 1 || rep.Namespaces[0].SourceCount != 3 {
		t.Fatalf("report %+v, want shop.ids with 3 documents", rep)
	}
}
