package devdb_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/godwit-dev/godwit/devdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func TestServer_CRUD(t *testing.T) {
	_, _, client := start(t)
	ctx := longCtx(t)
	coll := client.Database("shop").Collection("orders")

	t.Run("insert and find", func(t *testing.T) {
		docs := []any{bson.D{{Key: "item", Value: "a"}, {Key: "qty", Value: 5}, {Key: "_id", Value: 1}},
			bson.D{{Key: "_id", Value: 2}, {Key: "item", Value: "b"}, {Key: "qty", Value: 1}},
			bson.D{{Key: "_id", Value: 3}, {Key: "item", Value: "c"}, {Key: "qty", Value: 9}}}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		cur, err := coll.Find(ctx, bson.M{"qty": bson.M{"$gt": 2}}, options.Find().SetSort(bson.D{{Key: "qty", Value: -1}}).SetProjection(bson.M{"item": 1}))
		if err != nil {
			t.Fatal(err)
		}
		var got []bson.M
		if err := cur.All(ctx, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0]["item"] != "c" || got[1]["item"] != "a" || got[0]["qty"] != nil {
			t.Fatalf("find = %v, want c then a, projected to item", got)
		}
		// Stored with _id first, as a real server stores documents.
		raw, err := coll.FindOne(ctx, bson.M{"_id": 1}).Raw()
		if err != nil {
			t.Fatal(err)
		}
		if first, _ := raw.IndexErr(0); first.Key() != "_id" {
			t.Fatalf("stored document %v does not start with _id", raw)
		}
	})

	t.Run("cursor over many batches", func(t *testing.T) {
		many := client.Database("shop").Collection("many")
		var docs []any
		for i := range 350 {
			docs = append(docs, bson.M{"_id": i})
		}
		if _, err := many.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		cur, err := many.Find(ctx, bson.M{}, options.Find().SetBatchSize(100))
		if err != nil {
			t.Fatal(err)
		}
		var got []bson.M
		if err := cur.All(ctx, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 350 {
			t.Fatalf("read %d documents through getMore, want 350", len(got))
		}
		n, err := many.CountDocuments(ctx, bson.M{"_id": bson.M{"$lt": 10}})
		if err != nil || n != 10 {
			t.Fatalf("CountDocuments = %d, %v; want 10", n, err)
		}
		est, err := many.EstimatedDocumentCount(ctx)
		if err != nil || est != 350 {
			t.Fatalf("EstimatedDocumentCount = %d, %v; want 350", est, err)
		}
	})

	t.Run("update replace delete", func(t *testing.T) {
		res, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"qty": 1}})
		if err != nil || res.MatchedCount != 1 || res.ModifiedCount != 1 {
			t.Fatalf("UpdateOne = %+v, %v", res, err)
		}
		res, err = coll.UpdateOne(ctx, bson.M{"_id": 7}, bson.M{"$set": bson.M{"item": "g"}}, options.Update().SetUpsert(true))
		if err != nil || res.UpsertedID != int32(7) {
			t.Fatalf("upsert = %+v, %v", res, err)
		}
		if _, err := coll.ReplaceOne(ctx, bson.M{"_id": 2}, bson.M{"item": "B"}); err != nil {
			t.Fatal(err)
		}
		var two bson.M
		if err := coll.FindOne(ctx, bson.M{"_id": 2}).Decode(&two); err != nil || two["item"] != "B" || two["qty"] != nil {
			t.Fatalf("replaced document = %v, %v", two, err)
		}
		dres, err := coll.DeleteMany(ctx, bson.M{"_id": bson.M{"$in": bson.A{2, 3}}})
		if err != nil || dres.DeletedCount != 2 {
			t.Fatalf("DeleteMany = %+v, %v", dres, err)
		}
		var after bson.M
		err = coll.FindOneAndUpdate(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"done": true}}, options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
		if err != nil || after["done"] != true || after["qty"] != int32(6) {
			t.Fatalf("FindOneAndUpdate = %v, %v", after, err)
		}
		vals, err := coll.Distinct(ctx, "item", bson.M{})
		if err != nil || !slices.Equal(vals, []any{"a", "g"}) {
			t.Fatalf("Distinct = %v, %v", vals, err)
		}
	})

	t.Run("duplicate key", func(t *testing.T) {
		if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "item", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
			t.Fatal(err)
		}
		_, err := coll.InsertOne(ctx, bson.M{"_id": 100, "item": "a"})
		var we mongo.WriteException
		if !errors.As(err, &we) || len(we.WriteErrors) != 1 || we.WriteErrors[0].Code != 11000 {
			t.Fatalf("insert of a duplicate item = %v, want write error 11000", err)
		}
		raw := we.WriteErrors[0].Raw
		if v := raw.Lookup("keyValue", "item").StringValue(); v != "a" {
			t.Fatalf("keyValue.item = %q, want a (raw %v)", v, raw)
		}
		if v := raw.Lookup("keyPattern", "item").AsInt64(); v != 1 {
			t.Fatalf("keyPattern = %v", raw.Lookup("keyPattern"))
		}
		if !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("the driver does not see a duplicate key error in %v", err)
		}
	})

	t.Run("catalog", func(t *testing.T) {
		names, err := client.Database("shop").ListCollectionNames(ctx, bson.M{})
		slices.Sort(names)
		if err != nil || !slices.Equal(names, []string{"many", "orders"}) {
			t.Fatalf("collections = %v, %v", names, err)
		}
		dbs, err := client.ListDatabaseNames(ctx, bson.M{"name": "shop"})
		if err != nil || !slices.Equal(dbs, []string{"shop"}) {
			t.Fatalf("databases = %v, %v", dbs, err)
		}
		specs, err := coll.Indexes().ListSpecifications(ctx)
		if err != nil || len(specs) != 2 || specs[1].Name != "item_1" {
			t.Fatalf("indexes = %v, %v", specs, err)
		}
		if _, err := coll.Indexes().DropOne(ctx, "item_1"); err != nil {
			t.Fatal(err)
		}
		if err := client.Database("shop").Collection("many").Drop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := client.Database("shop").CreateCollection(ctx, "fresh"); err != nil {
			t.Fatal(err)
		}
		names, _ = client.Database("shop").ListCollectionNames(ctx, bson.M{})
		slices.Sort(names)
		if !slices.Equal(names, []string{"fresh", "orders"}) {
			t.Fatalf("collections after drop and create = %v", names)
		}
		if err := client.Database("shop").Drop(ctx); err != nil {
			t.Fatal(err)
		}
		if dbs, _ := client.ListDatabaseNames(ctx, bson.M{"name": "shop"}); len(dbs) != 0 {
			t.Fatalf("databases after dropDatabase = %v", dbs)
		}
	})
}

// Index options as a real server takes them: a TTL index with
// expireAfterSeconds: 0 expires each document at the date in its field; a
// negative value is refused with 67, and a second index on the same key
// with 85.
func TestServer_IndexOptions(t *testing.T) {
	_, engine, err := lungo.Open(context.Background(), lungo.Options{Store: lungo.NewMemoryStore(), ExpireInterval: 20 * time.Millisecond, ExpireErrors: func(err error) { t.Error(err) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	client := connect(t, serve(t, engine, devdb.Config{}).URI())
	ctx := longCtx(t)
	coll := client.Database("app").Collection("sessions")
	if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "expiresAt", Value: 1}}, Options: options.Index().SetExpireAfterSeconds(0)}); err != nil {
		t.Fatal(err)
	}
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil || len(specs) != 2 || specs[1].ExpireAfterSeconds == nil || *specs[1].ExpireAfterSeconds != 0 {
		t.Fatalf("indexes = %+v, %v; want expiresAt_1 with expireAfterSeconds 0", specs, err)
	}
	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "other", Value: 1}}, Options: options.Index().SetExpireAfterSeconds(-1)})
	var cmdErr mongo.CommandError
	if !errors.As(err, &cmdErr) || cmdErr.Code != 67 || cmdErr.Name != "CannotCreateIndex" {
		t.Fatalf("negative expireAfterSeconds: %v, want 67 CannotCreateIndex", err)
	}
	// The same key under another name.
	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "expiresAt", Value: 1}}, Options: options.Index().SetName("again")})
	if !errors.As(err, &cmdErr) || cmdErr.Code != 85 || cmdErr.Name != "IndexOptionsConflict" || !strings.Contains(cmdErr.Message, "expiresAt_1") {
		t.Fatalf("same key, other name: %v, want 85 IndexOptionsConflict naming expiresAt_1", err)
	}

	// The engine expires documents in the background: watch for the delete.
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	now := time.Now()
	if _, err := coll.InsertMany(ctx, []any{
		bson.M{"_id": "past", "expiresAt": now.Add(-time.Hour)},
		bson.M{"_id": "future", "expiresAt": now.Add(time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	for cs.Next(ctx) {
		var ev struct {
			OperationType string `bson:"operationType"`
			DocumentKey   bson.M `bson:"documentKey"`
		}
		if err := cs.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.OperationType == "delete" {
			if ev.DocumentKey["_id"] != "past" {
				t.Fatalf("expired %v, want past", ev.DocumentKey)
			}
			break
		}
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	var left []bson.M
	cur, err := coll.Find(ctx, bson.M{})
	if err != nil || cur.All(ctx, &left) != nil || len(left) != 1 || left[0]["_id"] != "future" {
		t.Fatalf("after expiry: %v, %v; want only future", left, err)
	}
}
