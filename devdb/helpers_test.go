package devdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/devdb"
)

// longCtx is the deadline for anything involving I/O in these tests.
func longCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openEngine opens an in-memory lungo engine closed at cleanup.
func openEngine(t *testing.T) *lungo.Engine {
	t.Helper()
	_, engine, err := lungo.Open(context.Background(), lungo.Options{Store: lungo.NewMemoryStore(), ExpireErrors: func(error) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return engine
}

// serve starts devdb on a free loopback port for engine.
func serve(t *testing.T, engine *lungo.Engine, cfg devdb.Config) *devdb.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Log == nil {
		log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
		cfg.Log = &log
	}
	srv, err := devdb.Open(engine, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(context.Background()); err != nil {
			t.Errorf("close devdb: %v", err)
		}
	})
	return srv
}

// connect connects the official driver to uri.
func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	client, err := mongo.Connect(longCtx(t), options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return client
}

// start opens an engine, serves it and connects the driver.
func start(t *testing.T) (*lungo.Engine, *devdb.Server, *mongo.Client) {
	t.Helper()
	engine := openEngine(t)
	srv := serve(t, engine, devdb.Config{})
	return engine, srv, connect(t, srv.URI())
}
