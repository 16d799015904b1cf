package replicate

import (
	"context"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// A marker insert that the driver retried after its first attempt landed
// (the connection broke before the reply; a target restart does that) finds
// its own document: that is success, not a reason to halt the pipeline. It
// halted the initial sync of TestDevDB_Kill9WhileReplicating under the
// stress script ("write origin marker for createIndexes ...: E11000").
func TestInsertMarker_RetryOfALandedInsertSucceeds(t *testing.T) {
	ctx := context.Background()
	client, engine, err := lungo.Open(ctx, lungo.Options{Store: lungo.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	markers := client.Database("godwit").Collection(MarkersCollection)
	doc := bson.D{{Key: "_id", Value: primitive.NewObjectID()}, {Key: "kind", Value: markerDDL}}
	for attempt := range 2 {
		if err := insertMarker(ctx, markers, doc); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	if n, err := markers.CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
		t.Fatalf("markers = %d, %v; want the one", n, err)
	}
	// The same insert without insertMarker is the error that halted.
	if _, err := markers.InsertOne(ctx, doc); !isDuplicateKey(err) {
		t.Fatalf("plain retry: %v, want a duplicate key error", err)
	}
}
