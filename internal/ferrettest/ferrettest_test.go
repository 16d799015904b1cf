package ferrettest_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/internal/ferrettest"
)

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(uri).SetServerSelectionTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// The server keeps its port and data across a stop and a start, so a
// client that was connected before reconnects by itself.
func TestServer_StopStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := ferrettest.Start(t)
	c := connect(t, srv.URI)
	coll := c.Database("shop").Collection("orders")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "total", Value: 10}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	srv.Stop()
	if conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(srv.URI, "mongodb://"), "/")); err == nil {
		conn.Close()
		t.Fatal("a stopped server still accepts connections")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil {
		t.Fatalf("find after restart: %v", err)
	}
	if got["total"] != int32(10) {
		t.Fatalf("after restart: %v, want total 10", got)
	}
}

// FerretDB is the real server of the tests that need one without
// transactions: hello says standalone, and a transaction is refused.
func TestServer_NoTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := connect(t, ferrettest.Start(t).URI)
	var hello bson.M
	if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		t.Fatal(err)
	}
	if _, ok := hello["setName"]; ok {
		t.Fatalf("hello reports a replica set: %v", hello)
	}
	err := c.UseSession(ctx, func(sc mongo.SessionContext) error {
		_, err := sc.WithTransaction(sc, func(tc mongo.SessionContext) (any, error) {
			return c.Database("shop").Collection("orders").InsertOne(tc, bson.D{{Key: "x", Value: 1}})
		})
		return err
	})
	if err == nil {
		t.Fatal("a transaction on FerretDB succeeded")
	}
	t.Logf("transaction refused: %v", err)
}
