// Package httpapi is godwit's HTTP listener: Prometheus metrics at /metrics,
// liveness at /healthz and readiness at /readyz. It serves no data and
// changes nothing.
//
// # Security
//
// The default address is loopback, where the listener needs neither TLS
// nor a token. Config.Validate refuses a non-loopback address unless the
// listener serves TLS and tokens are configured, or Insecure is set (the
// listener then logs a warning at start). On a listener that requires
// tokens (a non-loopback address that is not Insecure), /metrics needs
// "Authorization: Bearer TOKEN" of any configured token, and /readyz
// names the components that are not ready only to a request carrying
// one; /healthz stays open. /readyz never shows driver messages or
// addresses: `godwit status` (admins) has the details.
//
// Metrics labels: per-trigger and per-subscription series carry the
// trigger's id and name and the subscription's name, which belong to
// users. Config.Named, when set, is served instead of Config.Metrics only
// to scrapes with an admin token (api.metrics_labels: admin).
package httpapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/status"
)

// DefaultAddr is the listen address when none is configured.
const DefaultAddr = "127.0.0.1:9464"

// Config configures the listener.
type Config struct {
	// Addr is host:port. Default DefaultAddr.
	Addr string
	// TLS, when set, serves HTTPS.
	TLS *tls.Config
	// Auth is the API's tokens; a listener that requires tokens checks
	// them (see the package doc).
	Auth *auth.Authenticator
	// Insecure allows a non-loopback Addr without TLS or tokens
	// (api.http_insecure, `godwit serve --http-insecure`): anyone who
	// reaches it reads the metrics. Warned at start.
	Insecure bool
	// Metrics is what /metrics serves.
	Metrics prometheus.Gatherer
	// Named, when set, is served instead of Metrics to scrapes carrying an
	// admin token: the per-trigger and per-subscription series with their
	// names.
	Named prometheus.Gatherer
	// Status supplies the daemon's status for /readyz.
	Status func() status.Snapshot
}

// Validate names the first bad field.
func (c Config) Validate() error {
	addr := c.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api.http_addr: %q: %v (use host:port, for example %s)", addr, err, DefaultAddr)
	}
	if !isLoopback(host) && !c.Insecure && (c.TLS == nil || !c.Auth.Enabled()) {
		return fmt.Errorf("api.http_addr: %q is not a loopback address: configure api.tls and api.tokens "+
			"(/metrics then needs a token), or set api.http_insecure: true (godwit serve --http-insecure) on a trusted network", addr)
	}
	if c.Metrics == nil || c.Status == nil {
		return errors.New("httpapi: Metrics and Status are required")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server serves the endpoints.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	log    zerolog.Logger
	tls    bool
	tokens bool
}

// Listen validates cfg and binds its address.
func Listen(cfg Config, log zerolog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	remote := !isLoopback(host)
	needToken := remote && !cfg.Insecure
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listener on %s: %w (choose another with --http-addr)", cfg.Addr, err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	h := handler{cfg: cfg, needToken: needToken, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", h.metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", h.readyz)
	s := &Server{ln: ln, log: log, tls: cfg.TLS != nil, tokens: needToken,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	if remote && cfg.Insecure {
		log.Warn().Str("addr", cfg.Addr).Bool("tls", cfg.TLS != nil).Msg("http listener on a non-loopback address " +
			"without tokens (api.http_insecure): anyone who reaches it reads the metrics; configure api.tls and api.tokens unless the network is trusted")
	}
	return s, nil
}

type handler struct {
	cfg       Config
	needToken bool
	log       zerolog.Logger
}

// identity returns the request's identity, if it carries a valid token.
func (h handler) identity(r *http.Request) (auth.Identity, bool) {
	if !h.cfg.Auth.Enabled() {
		return auth.Identity{}, false
	}
	token, err := auth.BearerToken(r.Header.Get("Authorization"))
	if err != nil {
		return auth.Identity{}, false
	}
	id, err := h.cfg.Auth.Verify(token)
	return id, err == nil
}

func (h handler) metrics(w http.ResponseWriter, r *http.Request) {
	id, ok := h.identity(r)
	if h.needToken && !ok {
		h.log.Warn().Str("path", r.URL.Path).Str("peer", r.RemoteAddr).Msg("refused a scrape without a valid token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="godwit"`)
		http.Error(w, "a valid token is required: send Authorization: Bearer TOKEN", http.StatusUnauthorized)
		return
	}
	g := h.cfg.Metrics
	if h.cfg.Named != nil && ok && id.IsAdmin() {
		g = h.cfg.Named
	}
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (h handler) readyz(w http.ResponseWriter, r *http.Request) {
	problems := NotReadyComponents(h.cfg.Status())
	w.Header().Set("Content-Type", "application/json")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	body := map[string]any{"ready": len(problems) == 0}
	if _, ok := h.identity(r); ok || !h.needToken {
		body["problems"] = problems
	}
	_ = json.NewEncoder(w).Encode(body)
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close.
func (s *Server) Serve() error {
	s.log.Info().Str("addr", s.Addr()).Bool("tls", s.tls).Bool("tokens", s.tokens).Msg("http listener: /metrics /healthz /readyz")
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// NotReadyComponents lists the components that keep godwit from being
// ready, by kind, id and state only ("source shop: reconnecting"): what
// /readyz shows. Reasons carry driver messages and addresses and are left
// to NotReady (`godwit status`, admins only). Empty means ready.
func NotReadyComponents(st status.Snapshot) []string {
	var out []string
	for _, s := range st.Sources {
		if s.State != "running" {
			out = append(out, fmt.Sprintf("source %s: %s", s.ID, s.State))
		}
	}
	for _, s := range st.Sinks {
		if s.Halted {
			out = append(out, fmt.Sprintf("sink %s: halted", s.ID))
		}
	}
	for _, p := range st.Pipelines {
		if p.Phase == "halted" {
			out = append(out, fmt.Sprintf("pipeline %s: halted", p.Pipeline))
		}
	}
	return out
}

// NotReady lists why godwit is not ready, with reasons: a source that is
// not running or a halted sink or pipeline. Empty means ready. The
// reasons are redacted (logging.RedactText) but may name hosts: this is
// for `godwit status`, not for /readyz.
func NotReady(st status.Snapshot) []string {
	var out []string
	for _, s := range st.Sources {
		if s.State != "running" {
			msg := fmt.Sprintf("source %s is %s", s.ID, s.State)
			if s.Reason != "" {
				msg += ": " + s.Reason
			} else if s.LastError != "" {
				msg += ": " + s.LastError
			}
			out = append(out, logging.RedactText(msg))
		}
	}
	for _, s := range st.Sinks {
		if s.Halted {
			out = append(out, logging.RedactText(fmt.Sprintf("sink %s is halted: %s", s.ID, s.LastError)))
		}
	}
	for _, p := range st.Pipelines {
		if p.Phase == "halted" {
			out = append(out, logging.RedactText(fmt.Sprintf("pipeline %s is halted: %s", p.Pipeline, p.LastError)))
		}
	}
	return out
}
