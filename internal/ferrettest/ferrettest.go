// Package ferrettest runs FerretDB v1.24.2, a MongoDB wire-protocol server
// over SQLite written by others, inside a test process: a real server that
// godwit's driver path talks to over TCP, with nothing to install.
//
// # Basics
//
// [Start] listens on a random port of 127.0.0.1 with its SQLite files in the
// test's temporary directory and stops at the test's cleanup. [Server.Stop]
// and [Server.Start] stop and restart it on the same port and files, for
// tests of a target that goes away and comes back.
//
// # Caveats
//
//   - Import it from _test.go files only: FerretDB and SQLite must not end
//     up in the godwit binary.
//   - FerretDB has no change streams and no multi-document transactions
//     (commands inside a transaction fail with FailedToParse on their
//     readConcern field); hello reports a standalone server.
//   - Embedding avoids the panic of `go install …/cmd/ferretdb@v1.24.2`: the
//     module zip lacks build/version/version.txt, which FerretDB reads only
//     when it is the main module.
package ferrettest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Server is one FerretDB instance.
type Server struct {
	// URI is the server's mongodb:// URI (127.0.0.1 and its port). It stays
	// the same across Stop and Start.
	URI  string
	addr string
	dir  string

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts FerretDB for the test and stops it at the test's cleanup.
// Its data lives in a temporary directory of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{addr: "127.0.0.1:0", dir: t.TempDir()}
	if err := s.Start(); err != nil {
		t.Fatalf("start FerretDB: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start starts a stopped server again on the same port and data.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return nil
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("GODWIT_TEST_FERRETDB_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: s.addr},
		Logger:    log,
		Handler:   "sqlite",
		SQLiteURL: "file:" + s.dir + "/",
	})
	if err != nil {
		return fmt.Errorf("ferretdb on %s: %w", s.addr, err)
	}
	uri := f.MongoDBURI()
	if s.URI == "" {
		s.URI = uri
		u, err := url.Parse(uri)
		if err != nil {
			return fmt.Errorf("ferretdb URI %q: %w", uri, err)
		}
		s.addr = u.Host // the port picked for 127.0.0.1:0, kept for restarts
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	s.cancel, s.done = cancel, done
	return nil
}

// Stop stops the server: its listener and every connection close. It
// returns when the server is down; stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
}
