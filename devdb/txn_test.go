package devdb_test

import (
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
)

func TestServer_Transactions(t *testing.T) {
	_, srv, client := start(t)
	ctx := longCtx(t)
	coll := client.Database("bank").Collection("accounts")
	if _, err := coll.InsertMany(ctx, []any{bson.M{"_id": "a", "bal": 100}, bson.M{"_id": "b", "bal": 0}}); err != nil {
		t.Fatal(err)
	}
	balance := func(id string) int32 {
		t.Helper()
		var d bson.M
		if err := coll.FindOne(ctx, bson.M{"_id": id}).Decode(&d); err != nil {
			t.Fatal(err)
		}
		return d["bal"].(int32)
	}

	t.Run("commit", func(t *testing.T) {
		sess, err := client.StartSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.EndSession(ctx)
		_, err = sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
			if _, err := coll.UpdateOne(sc, bson.M{"_id": "a"}, bson.M{"$inc": bson.M{"bal": -30}}); err != nil {
				return nil, err
			}
			// Reads inside the transaction see its own writes.
			var a bson.M
			if err := coll.FindOne(sc, bson.M{"_id": "a"}).Decode(&a); err != nil || a["bal"] != int32(70) {
				return nil, errors.New("the transaction does not see its own write")
			}
			_, err := coll.UpdateOne(sc, bson.M{"_id": "b"}, bson.M{"$inc": bson.M{"bal": 30}})
			return nil, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if a, b := balance("a"), balance("b"); a != 70 || b != 30 {
			t.Fatalf("after commit a=%d b=%d, want 70 30", a, b)
		}
	})

	t.Run("abort", func(t *testing.T) {
		sess, err := client.StartSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.EndSession(ctx)
		if err := sess.StartTransaction(); err != nil {
			t.Fatal(err)
		}
		sc := mongo.NewSessionContext(ctx, sess)
		if _, err := coll.UpdateOne(sc, bson.M{"_id": "a"}, bson.M{"$set": bson.M{"bal": 0}}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.InsertOne(sc, bson.M{"_id": "c"}); err != nil {
			t.Fatal(err)
		}
		if err := sess.AbortTransaction(ctx); err != nil {
			t.Fatal(err)
		}
		if a := balance("a"); a != 70 {
			t.Fatalf("after abort a=%d, want 70", a)
		}
		if n, _ := coll.CountDocuments(ctx, bson.M{"_id": "c"}); n != 0 {
			t.Fatal("an aborted insert is visible")
		}
	})

	t.Run("a transaction does not block other writers", func(t *testing.T) {
		s1, _ := client.StartSession()
		defer s1.EndSession(ctx)
		s2, _ := client.StartSession()
		defer s2.EndSession(ctx)
		_ = s1.StartTransaction()
		_ = s2.StartTransaction()
		if _, err := coll.InsertOne(mongo.NewSessionContext(ctx, s1), bson.M{"_id": "t1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.InsertOne(mongo.NewSessionContext(ctx, s2), bson.M{"_id": "t2"}); err != nil {
			t.Fatal(err)
		}
		// Outside both, while both are open.
		if _, err := coll.InsertOne(ctx, bson.M{"_id": "t3"}); err != nil {
			t.Fatal(err)
		}
		if n, _ := coll.CountDocuments(ctx, bson.M{"_id": bson.M{"$in": bson.A{"t1", "t2"}}}); n != 0 {
			t.Fatal("uncommitted writes are visible outside their transactions")
		}
		if err := s2.CommitTransaction(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s1.CommitTransaction(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := coll.CountDocuments(ctx, bson.M{"_id": bson.M{"$in": bson.A{"t1", "t2", "t3"}}}); n != 3 {
			t.Fatalf("%d of t1, t2, t3 exist, want all 3", n)
		}
	})

	t.Run("a concurrent write to the same document is a transient write conflict", func(t *testing.T) {
		sess, _ := client.StartSession()
		defer sess.EndSession(ctx)
		_ = sess.StartTransaction()
		if _, err := coll.UpdateOne(mongo.NewSessionContext(ctx, sess), bson.M{"_id": "b"}, bson.M{"$set": bson.M{"by": "txn"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.UpdateOne(ctx, bson.M{"_id": "b"}, bson.M{"$set": bson.M{"by": "outside"}}); err != nil {
			t.Fatal(err)
		}
		err := sess.CommitTransaction(ctx)
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(112) || !se.HasErrorLabel("TransientTransactionError") {
			t.Fatalf("commit after a concurrent write = %v, want WriteConflict (112) labelled TransientTransactionError", err)
		}
		var b bson.M
		if err := coll.FindOne(ctx, bson.M{"_id": "b"}).Decode(&b); err != nil || b["by"] != "outside" {
			t.Fatalf("b = %v (%v): the conflicting transaction must not apply", b, err)
		}
		// WithTransaction retries the whole transaction and succeeds.
		tries := 0
		_, err = sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
			tries++
			if _, err := coll.UpdateOne(sc, bson.M{"_id": "b"}, bson.M{"$set": bson.M{"by": "txn"}}); err != nil {
				return nil, err
			}
			if tries == 1 {
				if _, err := coll.UpdateOne(ctx, bson.M{"_id": "b"}, bson.M{"$inc": bson.M{"n": 1}}); err != nil {
					return nil, err
				}
			}
			return nil, nil
		})
		if err != nil || tries != 2 {
			t.Fatalf("WithTransaction = %v after %d tries, want success on the second", err, tries)
		}
		if err := coll.FindOne(ctx, bson.M{"_id": "b"}).Decode(&b); err != nil || b["by"] != "txn" || b["n"] != int32(1) {
			t.Fatalf("b = %v (%v), want by: txn and n: 1", b, err)
		}
	})

	t.Run("an update adding fields commits them in the order it wrote them", func(t *testing.T) {
		// The engine lists an update's updatedFields sorted by name; the
		// commit must still produce the document the transaction saw,
		// fields in the order $set added them (new top-level and nested
		// fields, an array element, a removed field).
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "order"}, {Key: "sub", Value: bson.D{{Key: "z", Value: 1}}},
			{Key: "tags", Value: bson.A{"a"}}, {Key: "gone", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		sess, _ := client.StartSession()
		defer sess.EndSession(ctx)
		var inTxn bson.Raw
		_, err := sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
			if _, err := coll.UpdateOne(sc, bson.M{"_id": "order"}, bson.D{
				{Key: "$set", Value: bson.D{{Key: "s", Value: "x"}, {Key: "sub.b", Value: 2}, {Key: "sub.a", Value: 3}, {Key: "f", Value: true}, {Key: "tags.1", Value: "b"}}},
				{Key: "$unset", Value: bson.D{{Key: "gone", Value: ""}}},
			}); err != nil {
				return nil, err
			}
			return nil, coll.FindOne(sc, bson.M{"_id": "order"}).Decode(&inTxn)
		})
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		var after bson.Raw
		if err := coll.FindOne(ctx, bson.M{"_id": "order"}).Decode(&after); err != nil {
			t.Fatal(err)
		}
		want := `{"_id": "order","sub": {"z": {"$numberInt":"1"},"b": {"$numberInt":"2"},"a": {"$numberInt":"3"}},"tags": ["a","b"],"s": "x","f": true}`
		if after.String() != want || inTxn.String() != want {
			t.Fatalf("committed %s\nin the transaction %s\nwant %s", after, inTxn, want)
		}
	})

	t.Run("catalog commands are refused in a transaction", func(t *testing.T) {
		sess, _ := client.StartSession()
		defer sess.EndSession(ctx)
		_ = sess.StartTransaction()
		err := client.Database("bank").CreateCollection(mongo.NewSessionContext(ctx, sess), "new")
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(263) {
			t.Fatalf("create in a transaction = %v, want OperationNotSupportedInTransaction (263)", err)
		}
		_ = sess.AbortTransaction(ctx)
	})

	t.Run("an error inside aborts the transaction", func(t *testing.T) {
		sess, _ := client.StartSession()
		defer sess.EndSession(ctx)
		_ = sess.StartTransaction()
		sc := mongo.NewSessionContext(ctx, sess)
		if _, err := coll.InsertOne(sc, bson.M{"_id": "d"}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.InsertOne(sc, bson.M{"_id": "a"}); !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("duplicate insert in a transaction = %v, want 11000", err)
		}
		err := sess.CommitTransaction(ctx)
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(251) {
			t.Fatalf("commit after a failed statement = %v, want NoSuchTransaction (251)", err)
		}
		if n, _ := coll.CountDocuments(ctx, bson.M{"_id": "d"}); n != 0 {
			t.Fatal("a write of the aborted transaction is visible")
		}
	})

	t.Run("unacknowledged write", func(t *testing.T) {
		// One connection: devdb serves a connection's messages in order, so
		// the read after the w:0 insert sees it.
		one := connect(t, srv.URI()+"&maxPoolSize=1")
		w0 := one.Database("bank").Collection("log", optionsW0())
		if _, err := w0.InsertOne(ctx, bson.M{"_id": 1}); err != nil && !errors.Is(err, mongo.ErrUnacknowledgedWrite) {
			t.Fatal(err)
		}
		n, err := one.Database("bank").Collection("log").CountDocuments(ctx, bson.M{})
		if err != nil || n != 1 {
			t.Fatalf("after a w:0 insert the collection holds %d documents (%v), want 1", n, err)
		}
	})
}

func optionsW0() *options.CollectionOptions {
	return options.Collection().SetWriteConcern(writeconcern.Unacknowledged())
}

func TestServer_SnapshotReads(t *testing.T) {
	_, _, client := start(t)
	ctx := longCtx(t)
	coll := client.Database("app").Collection("c")
	for i := range 5 {
		if _, err := coll.InsertOne(ctx, bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := client.StartSession(options.Session().SetSnapshot(true))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(ctx)
	sc := mongo.NewSessionContext(ctx, sess)
	cur, err := coll.Find(sc, bson.M{}, options.Find().SetBatchSize(2))
	if err != nil {
		t.Fatal(err)
	}
	// A write after the snapshot's first batch is not in the snapshot.
	if _, err := coll.InsertOne(ctx, bson.M{"_id": 99}); err != nil {
		t.Fatal(err)
	}
	var docs []bson.M
	if err := cur.All(sc, &docs); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 5 {
		t.Fatalf("snapshot read %d documents, want the 5 before it", len(docs))
	}
	if x, ok := sess.(mongo.XSession); !ok || x.ClientSession().SnapshotTime == nil {
		t.Fatal("the driver got no atClusterTime for the snapshot session")
	}
	// Reading the same snapshot again after a write: devdb keeps no
	// history, so it refuses instead of answering with newer data.
	_, err = coll.CountDocuments(sc, bson.M{})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(239) {
		t.Fatalf("a second snapshot read after a write = %v, want SnapshotTooOld (239)", err)
	}
}
