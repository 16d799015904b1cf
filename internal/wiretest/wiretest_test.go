package wiretest_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/internal/wiretest"
)

func TestServer_DriverRunsCommands(t *testing.T) {
	var dropped atomic.Bool
	srv := wiretest.Start(t, func(_ context.Context, req wiretest.Request) bson.Raw {
		switch req.Command {
		case "count":
			return wiretest.OK(bson.E{Key: "n", Value: 42})
		case "drop":
			if dropped.CompareAndSwap(false, true) {
				return nil // the first attempt loses its connection
			}
			return wiretest.OK()
		}
		return wiretest.Error(59, "CommandNotFound", "no such command: '"+req.Command+"'")
	})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())

	var res struct{ N int }
	if err := client.Database("d").RunCommand(ctx, bson.D{{Key: "count", Value: "c"}}).Decode(&res); err != nil || res.N != 42 {
		t.Fatalf("count = %d, %v; want the scripted 42", res.N, err)
	}
	var ce mongo.CommandError
	err = client.Database("d").RunCommand(ctx, bson.D{{Key: "frob", Value: 1}}).Err()
	if !errors.As(err, &ce) || ce.Code != 59 {
		t.Fatalf("unknown command: %v, want the scripted CommandNotFound", err)
	}
	err = client.Database("d").RunCommand(ctx, bson.D{{Key: "drop", Value: "c"}}).Err()
	if !mongo.IsNetworkError(err) {
		t.Fatalf("dropped connection: %v, want a network error", err)
	}
	if err := client.Database("d").RunCommand(ctx, bson.D{{Key: "drop", Value: "c"}}).Err(); err != nil {
		t.Fatalf("after reconnecting: %v", err)
	}
}
