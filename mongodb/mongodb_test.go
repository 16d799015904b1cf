package mongodb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/mongodb"
)

func TestOpen_ConvertsFileStoreFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "source.lungo")
	// A file as godwit wrote it before the incremental store.
	client, engine, err := lungo.Open(ctx, lungo.Options{Store: lungo.NewFileStore(path, 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": 1, "total": 12}); err != nil {
		t.Fatal(err)
	}
	engine.Close()

	conn, err := mongodb.Open(ctx, "lungo:"+path, "")
	if err != nil {
		t.Fatal(err)
	}
	if conn.Migrated == "" {
		t.Fatal("Conn.Migrated is empty after opening a FileStore file")
	}
	if _, err := os.Stat(conn.Migrated); err != nil {
		t.Fatalf("backup: %v", err)
	}
	coll := conn.Client.Database("shop").Collection("orders")
	if n, err := coll.CountDocuments(ctx, bson.M{"_id": 1}); err != nil || n != 1 {
		t.Fatalf("converted deployment has %d matching documents (%v), want 1", n, err)
	}
	if _, err := coll.InsertOne(ctx, bson.M{"_id": 2}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Reopened: no second conversion, both documents there.
	conn, err = mongodb.Open(ctx, "lungo:"+path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if conn.Migrated != "" {
		t.Fatalf("converted again (backup %s)", conn.Migrated)
	}
	if n, err := conn.Client.Database("shop").Collection("orders").CountDocuments(ctx, bson.M{}); err != nil || n != 2 {
		t.Fatalf("reopened deployment has %d documents (%v), want 2", n, err)
	}
}
