// Package httpapi is godwit's HTTP listener: Prometheus metrics at /metrics,
// liveness at /healthz and readiness at /readyz. It listens on loopback by
// default; it serves no data and changes nothing.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/daemon"
	"github.com/godwit-dev/godwit/metrics"
)

// DefaultAddr is the listen address when none is configured.
const DefaultAddr = "127.0.0.1:9464"

// Server serves the endpoints.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log zerolog.Logger
}

// Listen binds addr. snapshot supplies status for /readyz.
func Listen(addr string, m *metrics.Metrics, snapshot func() daemon.Status, log zerolog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener on %s: %w (choose another with --http-addr)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		problems := NotReady(snapshot())
		w.Header().Set("Content-Type", "application/json")
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": len(problems) == 0, "problems": problems})
	})
	s := &Server{ln: ln, log: log, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close.
func (s *Server) Serve() error {
	s.log.Info().Str("addr", s.Addr()).Msg("http listener: /metrics /healthz /readyz")
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// NotReady lists why godwit is not ready: a source that is not running or a
// halted sink. Empty means ready.
func NotReady(st daemon.Status) []string {
	var out []string
	for _, s := range st.Sources {
		if s.State != "running" {
			msg := fmt.Sprintf("source %s is %s", s.ID, s.State)
			if s.Reason != "" {
				msg += ": " + s.Reason
			} else if s.LastError != "" {
				msg += ": " + s.LastError
			}
			out = append(out, msg)
		}
	}
	for _, s := range st.Sinks {
		if s.Halted {
			out = append(out, fmt.Sprintf("sink %s is halted: %s", s.ID, s.LastError))
		}
	}
	for _, p := range st.Pipelines {
		if p.Phase == "halted" {
			out = append(out, fmt.Sprintf("pipeline %s is halted: %s", p.Pipeline, p.LastError))
		}
	}
	return out
}
