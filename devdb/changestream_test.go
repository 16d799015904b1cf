package devdb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/mongodb"
)

type event struct {
	ID            bson.Raw `bson:"_id"`
	OperationType string   `bson:"operationType"`
	NS            struct {
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
	} `bson:"ns"`
	DocumentKey  bson.M              `bson:"documentKey"`
	FullDocument bson.M              `bson:"fullDocument"`
	ClusterTime  primitive.Timestamp `bson:"clusterTime"`
	LSID         bson.Raw            `bson:"lsid"`
	TxnNumber    *int64              `bson:"txnNumber"`
}

func (e event) String() string { return fmt.Sprintf("%s %v", e.OperationType, e.DocumentKey["_id"]) }

// next reads one event, failing the test if the stream ends.
func next(t *testing.T, ctx context.Context, cs *mongo.ChangeStream) event {
	t.Helper()
	if !cs.Next(ctx) {
		t.Fatalf("change stream ended: %v", cs.Err())
	}
	var e event
	if err := cs.Decode(&e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestServer_ChangeStream(t *testing.T) {
	engine, _, client := start(t)
	ctx := longCtx(t)
	coll := client.Database("app").Collection("users")

	t.Run("events in order with real-format tokens", func(t *testing.T) {
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		if cs.ResumeToken() == nil {
			t.Fatal("the opening reply carries no postBatchResumeToken")
		}
		if _, err := coll.InsertOne(ctx, bson.M{"_id": 1, "name": "ann"}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"name": "bo"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := coll.DeleteOne(ctx, bson.M{"_id": 1}); err != nil {
			t.Fatal(err)
		}
		var got []string
		for range 3 {
			e := next(t, ctx, cs)
			got = append(got, e.String())
			if _, ok := change.TokenTime(e.ID); !ok {
				t.Fatalf("token %v does not carry a cluster time like a real server's", e.ID)
			}
			if e.OperationType == "update" && e.FullDocument != nil {
				t.Fatal("an update event carries fullDocument without fullDocument: updateLookup")
			}
		}
		if fmt.Sprint(got) != "[insert 1 update 1 delete 1]" {
			t.Fatalf("events = %v", got)
		}
	})

	t.Run("postBatchResumeToken advances over other namespaces", func(t *testing.T) {
		cs, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetMaxAwaitTime(1))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		before := cs.ResumeToken()
		if _, err := client.Database("app").Collection("other").InsertOne(ctx, bson.M{"x": 1}); err != nil {
			t.Fatal(err)
		}
		// The first TryNext consumes the (empty) opening batch, the second
		// one is a getMore.
		for range 2 {
			if cs.TryNext(ctx) {
				t.Fatal("an event of another collection reached a collection stream")
			}
		}
		t0, _ := change.TokenTime(before)
		t1, ok := change.TokenTime(cs.ResumeToken())
		if !ok || !t0.Before(t1) {
			t.Fatalf("postBatchResumeToken stayed at %v after an empty getMore past a newer write (now %v)", t0, t1)
		}
	})

	t.Run("pipeline stages after $changeStream", func(t *testing.T) {
		pipe := mongo.Pipeline{
			{{Key: "$match", Value: bson.M{"operationType": "insert", "fullDocument.name": bson.M{"$regex": "^a"}}}},
			{{Key: "$project", Value: bson.M{"fullDocument.secret": 0}}},
		}
		cs, err := coll.Watch(ctx, pipe)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		for i, name := range []string{"bob", "alice", "carl", "anna"} {
			if _, err := coll.InsertOne(ctx, bson.M{"_id": 10 + i, "name": name, "secret": "x"}); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []string{"alice", "anna"} {
			e := next(t, ctx, cs)
			if e.FullDocument["name"] != want || e.FullDocument["secret"] != nil {
				t.Fatalf("event %v, want %s without secret", e.FullDocument, want)
			}
		}
	})

	t.Run("unsupported stage is an error", func(t *testing.T) {
		_, err := coll.Watch(ctx, mongo.Pipeline{{{Key: "$lookup", Value: bson.M{"from": "x"}}}})
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(40324) {
			t.Fatalf("Watch with $lookup = %v, want code 40324", err)
		}
	})

	t.Run("changing _id is fatal", func(t *testing.T) {
		cs, err := coll.Watch(ctx, mongo.Pipeline{{{Key: "$project", Value: bson.M{"_id": 0}}}})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		if _, err := coll.InsertOne(ctx, bson.M{"_id": 20}); err != nil {
			t.Fatal(err)
		}
		if cs.Next(ctx) {
			t.Fatal("an event without its resume token was delivered")
		}
		var se mongo.ServerError
		if !errors.As(cs.Err(), &se) || !se.HasErrorCode(280) {
			t.Fatalf("stream error = %v, want ChangeStreamFatalError (280)", cs.Err())
		}
	})

	t.Run("transaction events carry lsid and txnNumber", func(t *testing.T) {
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		sess, _ := client.StartSession()
		defer sess.EndSession(ctx)
		_, err = sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
			_, err := coll.InsertMany(sc, []any{bson.M{"_id": 30}, bson.M{"_id": 31}})
			return nil, err
		})
		if err != nil {
			t.Fatal(err)
		}
		a, b := next(t, ctx, cs), next(t, ctx, cs)
		if a.TxnNumber == nil || b.TxnNumber == nil || *a.TxnNumber != *b.TxnNumber || a.LSID == nil {
			t.Fatalf("transaction events: %+v %+v, want the same lsid and txnNumber", a, b)
		}
	})

	t.Run("startAfter an invalidate", func(t *testing.T) {
		tmp := client.Database("app").Collection("tmp")
		if _, err := tmp.InsertOne(ctx, bson.M{"_id": 1}); err != nil {
			t.Fatal(err)
		}
		cs, err := tmp.Watch(ctx, mongo.Pipeline{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tmp.Drop(ctx); err != nil {
			t.Fatal(err)
		}
		if e := next(t, ctx, cs); e.OperationType != "drop" {
			t.Fatalf("first event %s, want drop", e.OperationType)
		}
		inv := next(t, ctx, cs)
		if inv.OperationType != "invalidate" {
			t.Fatalf("second event %s, want invalidate", inv.OperationType)
		}
		if cs.Next(ctx) {
			t.Fatal("the stream continued after invalidate")
		}
		_ = cs.Close(ctx)
		_, err = tmp.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(inv.ID))
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(260) {
			t.Fatalf("resumeAfter an invalidate = %v, want InvalidResumeToken (260)", err)
		}
		cs, err = tmp.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetStartAfter(inv.ID))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		if _, err := tmp.InsertOne(ctx, bson.M{"_id": 2}); err != nil {
			t.Fatal(err)
		}
		if e := next(t, ctx, cs); e.String() != "insert 2" {
			t.Fatalf("after startAfter: %s, want insert 2", e)
		}
	})

	t.Run("startAtOperationTime and deployment-wide streams", func(t *testing.T) {
		res := client.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}})
		raw, err := res.Raw()
		if err != nil {
			t.Fatal(err)
		}
		tt, ti := raw.Lookup("operationTime").Timestamp()
		if _, err := client.Database("other").Collection("c").InsertOne(ctx, bson.M{"_id": "x"}); err != nil {
			t.Fatal(err)
		}
		at := primitive.Timestamp{T: tt, I: ti + 1}
		cs, err := client.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetStartAtOperationTime(&at))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close(ctx)
		if e := next(t, ctx, cs); e.NS.DB != "other" || e.String() != "insert x" {
			t.Fatalf("first event since the ping: %s in %s", e, e.NS.DB)
		}
	})

	_ = engine
}

func TestServer_ChangeStreamResumesAfterRestart(t *testing.T) {
	engine := openEngine(t)
	srv, err := devdb.Open(engine, devdb.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	client := connect(t, srv.URI())
	ctx := longCtx(t)
	coll := client.Database("app").Collection("c")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	if _, err := coll.InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ctx, cs); e.String() != "insert 1" {
		t.Fatalf("first event %s", e)
	}

	// devdb goes away (every connection dropped) while writes continue
	// in process, then comes back on the same address.
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	local := lungo.NewClient(engine).Database("app").Collection("c")
	for i := 2; i <= 4; i++ {
		if _, err := local.InsertOne(ctx, bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
	}
	srv = serve(t, engine, devdb.Config{Addr: addr})

	// The driver's own resume logic reopens the stream after its token.
	var got []string
	for range 3 {
		got = append(got, next(t, ctx, cs).String())
	}
	if fmt.Sprint(got) != "[insert 2 insert 3 insert 4]" {
		t.Fatalf("after the restart: %v, want inserts 2..4 exactly once", got)
	}
	if _, err := coll.InsertOne(ctx, bson.M{"_id": 5}); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ctx, cs); e.String() != "insert 5" {
		t.Fatalf("next event %s, want insert 5", e)
	}
}

func TestServer_ChangeStreamHistoryLost(t *testing.T) {
	_, engine, err := lungo.Open(context.Background(), lungo.Options{Store: lungo.NewMemoryStore(),
		MinOplogSize: 1, MaxOplogSize: 10, MinOplogAge: 1, ExpireErrors: func(error) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	srv := serve(t, engine, devdb.Config{})
	client := connect(t, srv.URI())
	ctx := longCtx(t)
	coll := client.Database("app").Collection("c")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	token := cs.ResumeToken()
	_ = cs.Close(ctx)
	// Write until the oplog no longer holds the token's position (the
	// engine keeps entries of the current second, so this takes up to a
	// second of writes).
	at, _ := change.TokenTime(token)
	for i := 0; ; i++ {
		if _, err := coll.InsertOne(ctx, bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
		first := engine.Catalog().Namespaces[lungo.Oplog].Documents.List()[0]
		if ts, _ := first.Map()["clusterTime"].(primitive.Timestamp); at.Before(ts) {
			break
		}
	}
	_, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token))
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(286) {
		t.Fatalf("resume after the oplog moved on = %v, want ChangeStreamHistoryLost (286)", err)
	}

	// Starting at the oldest entry still in the oplog loses nothing.
	first := engine.Catalog().Namespaces[lungo.Oplog].Documents.List()[0]
	firstTS := first.Map()["clusterTime"].(primitive.Timestamp)
	firstID := first.Map()["documentKey"].(bson.D).Map()["_id"]
	cs, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetStartAtOperationTime(&firstTS))
	if err != nil {
		t.Fatalf("startAtOperationTime at the oldest entry: %v", err)
	}
	defer cs.Close(ctx)
	if e := next(t, ctx, cs); e.DocumentKey["_id"] != firstID {
		t.Fatalf("first event %s, want the oldest entry's insert %v", e, firstID)
	}
}

// TestServer_TransactionEventsAfterRestart: the events of a transaction
// committed before devdb restarted still carry its lsid and txnNumber when
// a stream reads them after the restart (a consumer that resumes from
// before the commit, as godwit's capture does after a kill, groups them
// into one transaction by these fields).
func TestServer_TransactionEventsAfterRestart(t *testing.T) {
	ctx := longCtx(t)
	// The engine's file store, reopened: what survives is what is on disk.
	path := "lungo:" + filepath.Join(t.TempDir(), "devdb.lungo")
	conn, err := mongodb.Open(ctx, path, "")
	if err != nil {
		t.Fatal(err)
	}
	first, err := devdb.Open(conn.Engine, devdb.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	client := connect(t, first.URI())
	coll := client.Database("app").Collection("c")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	before := cs.ResumeToken()
	_ = cs.Close(ctx)
	sess, _ := client.StartSession()
	_, err = sess.WithTransaction(ctx, func(sc mongo.SessionContext) (any, error) {
		_, err := coll.InsertMany(sc, []any{bson.M{"_id": 1}, bson.M{"_id": 2}})
		return nil, err
	})
	sess.EndSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}

	conn, err = mongodb.Open(ctx, path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	again := connect(t, serve(t, conn.Engine, devdb.Config{}).URI())
	cs, err = again.Database("app").Collection("c").Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(before))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	a, b := next(t, ctx, cs), next(t, ctx, cs)
	if a.TxnNumber == nil || b.TxnNumber == nil || *a.TxnNumber != *b.TxnNumber || a.LSID == nil || !bytes.Equal(a.LSID, b.LSID) {
		t.Fatalf("events of a transaction committed before the restart: %v lsid %v txnNumber %v, %v lsid %v txnNumber %v; want one lsid and txnNumber",
			a, a.LSID, a.TxnNumber, b, b.LSID, b.TxnNumber)
	}
}
