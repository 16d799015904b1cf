package client_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/runtime"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
)

// The examples share one daemon, started on first use and stopped after
// every test and example ran.
var (
	exampleOnce sync.Once
	exampleAddr string
	exampleShop lungo.IDatabase
	exampleStop = func() {}
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		runChild(dir, os.Getenv(childAddrEnv)) // never returns
	}
	code := m.Run()
	exampleStop()
	os.Exit(code)
}

// exampleDaemon returns the address of a running godwit with one embedded
// source "shop", and its "shop" database for the examples to write into.
func exampleDaemon() (addr string, shop lungo.IDatabase) {
	exampleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "godwit-client-example-")
		if err != nil {
			panic(err)
		}
		srv, stop, err := openServer(dir, runtimetest.Config)
		if err != nil {
			panic(err)
		}
		conn, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, "source.lungo"), "")
		if err != nil {
			panic(err)
		}
		exampleAddr, exampleShop = srv.RPC.Addr(), conn.Client.Database("shop")
		exampleStop = func() {
			conn.Close(context.Background())
			stop()
			os.RemoveAll(dir)
		}
	})
	return exampleAddr, exampleShop
}

// openServer runs a godwit server from yaml in dir until stop, and returns
// once its sources capture.
func openServer(dir, yaml string) (*runtime.Godwit, func(), error) {
	cfg, err := config.Parse([]byte(yaml), dir)
	if err != nil {
		return nil, nil, err
	}
	cfg.Triggers.CompilationCache = runtimetest.SharedCompilationCache
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		return nil, nil, err
	}
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	stop := func() {
		cancel()
		<-ran
		_ = srv.Close(context.Background())
	}
	for _, src := range srv.Sources() {
		select {
		case <-src.Ready():
		case err := <-ran:
			cancel()
			_ = srv.Close(context.Background())
			return nil, nil, fmt.Errorf("server stopped before capture started: %v", err)
		case <-time.After(testwait.Long):
			stop()
			return nil, nil, fmt.Errorf("source %s did not start", src.Status().ID)
		}
	}
	return srv, stop, nil
}

// write runs fn against the source of srv and waits until capture
// appended the n events it makes; it returns the last one's sequence.
func write(t *testing.T, srv *runtimetest.Server, n uint64, fn func(ctx context.Context, db lungo.IDatabase) error) uint64 {
	t.Helper()
	ob := srv.Outbox()
	want := ob.LastSeq() + n
	if err := fn(testwait.Context(t), runtimetest.Source(t, srv.Dir, "source.lungo").Database("shop")); err != nil {
		t.Fatal(err)
	}
	if err := ob.Wait(testwait.Context(t), want-1); err != nil {
		t.Fatalf("capture did not reach %d: %v", want, err)
	}
	return want
}

// insertN inserts n documents {_id: first+i, n: first+i} into coll in one
// write (one commit of the embedded engine, n change events).
func insertN(coll string, first, n int) func(ctx context.Context, db lungo.IDatabase) error {
	return func(ctx context.Context, db lungo.IDatabase) error {
		docs := make([]any, n)
		for i := range docs {
			docs[i] = bson.M{"_id": first + i, "n": first + i}
		}
		_, err := db.Collection(coll).InsertMany(ctx, docs)
		return err
	}
}
