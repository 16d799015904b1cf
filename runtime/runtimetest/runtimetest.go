// Package runtimetest runs a whole godwit inside a test: the data path
// on embedded deployments, the listeners on free loopback ports, and gRPC
// clients for it. Tests of the gRPC services use it to test what a client
// sees.
package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/runtime"
)

// Wait bounds every blocking step of a test.
var Wait = testwait.Long

// SharedCompilationCache is the wasm compilation cache every test godwit
// shares (unless its YAML names one): compiling a Go guest takes tens of
// seconds under -race on a busy 2-core machine, loading it from the cache
// well under a second. Entries are keyed by module hash and wazero version,
// so sharing is safe across test processes.
var SharedCompilationCache = filepath.Join(os.TempDir(), "godwit-test-wazero-cache")

// Config is a configuration with one embedded source "shop"
// (lungo:source.lungo), one jsonl sink "events" and the listeners on free
// loopback ports. extra is appended to the YAML.
const Config = `
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources: [{id: shop, uri: "lungo:source.lungo"}]
sinks: [{id: events, type: jsonl, jsonl: {path: events.jsonl}}]
`

// Server is a running godwit with its listeners, stopped at cleanup.
type Server struct {
	*runtime.Godwit
	Dir  string
	stop func()
}

// Start opens and runs a server from yaml in dir and waits until every
// embedded source captures (unless it is halted). It stops at cleanup, or earlier with Stop.
func Start(t testing.TB, dir, yaml string) *Server {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(yaml, "compilation_cache") {
		cfg.Triggers.CompilationCache = SharedCompilationCache
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	s := &Server{Godwit: srv, Dir: dir}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server run: %v", err)
			}
		case <-time.After(Wait):
			t.Errorf("server did not stop within %s (a stream holding it up?)", Wait)
		}
		if err := srv.Close(context.Background()); err != nil {
			t.Errorf("server close: %v", err)
		}
	}
	t.Cleanup(s.stop)
	for i, src := range srv.Sources() {
		// A source halted before the start never gets ready, nor does one
		// on a real deployment (tests have none).
		if st, _, _ := srv.Outbox().Source(src.Status().ID); st.State == "halted" || !strings.HasPrefix(cfg.Sources[i].URI, "lungo:") {
			continue
		}
		select {
		case <-src.Ready():
		case err := <-done:
			done <- err
			t.Fatalf("server stopped before capture started: %v", err)
		case <-time.After(Wait):
			t.Fatalf("source %s did not start: %+v", src.Status().ID, src.Status())
		}
	}
	return s
}

// Stop stops the server and waits for it, failing the test if it hangs.
func (s *Server) Stop() { s.stop() }

// Dial returns a client connection to the gRPC API. opts are added to the
// defaults.
func (s *Server) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.RPC.Addr(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Source opens the embedded deployment of the file name in dir: the same
// engine the server captures, when it runs in this process.
func Source(t testing.TB, dir, name string) lungo.IClient {
	t.Helper()
	conn, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, name), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn.Client
}
