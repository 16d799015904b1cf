// Package server runs a configured godwit: the daemon (capture, outbox,
// sinks), the trigger manager, and the network listeners (HTTP metrics and
// health, the gRPC API). `godwit serve` and `godwit demo` use it.
//
// Server adds the control plane's components to the daemon's
// runtime.Group, after the daemon's own (so they close first):
//
//	metadata                     the metadata store's connection
//	triggers      -> metadata    the trigger manager (isolated: its failure stops only itself)
//	events                       subscriptions (open even without gRPC: durable cursors hold retention)
//	audit-api                    ends audit follow streams when godwit stops
//	http                         /metrics, /healthz, /readyz (unless api.http_addr is off)
//	grpc                         the gRPC API (unless api.grpc_addr is off)
//	admin-health  -> grpc        the gRPC health service, from status
//
// The first component that fails stops all the others: Run returns that
// failure at once instead of when its context ends.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/admin"
	"github.com/godwit-dev/godwit/audit"
	auditapi "github.com/godwit-dev/godwit/audit/api"
	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/daemon"
	"github.com/godwit-dev/godwit/events"
	eventsapi "github.com/godwit-dev/godwit/events/api"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/metrics"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/runtime"
	"github.com/godwit-dev/godwit/status"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/api"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Server is an opened configuration with its listeners.
type Server struct {
	Daemon   *daemon.Daemon
	Triggers *trigger.Manager
	HTTP     *httpapi.Server // nil when api.http_addr is "off"
	RPC      *rpc.Server     // nil when api.grpc_addr is "off"
	// Events serves event subscriptions; it is open even without gRPC, so
	// that durable subscriptions' cursors hold retention.
	Events *events.Engine
	Admin  *admin.Service

	meta     *mongodb.Conn
	auditAPI *auditapi.Service
	log      zerolog.Logger
}

// Open opens the daemon and the trigger manager and binds the listeners.
// Nothing runs until Run.
//
// Daemon options (for example daemon.WithProgress) pass through.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts ...daemon.Option) (_ *Server, err error) {
	s := &Server{log: log}
	defer func() {
		if err != nil {
			_ = s.Close(context.WithoutCancel(ctx))
		}
	}()
	var m *metrics.Metrics
	m = metrics.New(func() status.Snapshot { return s.Daemon.Status() })
	opts = append(opts, daemon.WithDeliveryObserver(m.ObserveDelivery))
	if s.Daemon, err = daemon.Open(ctx, cfg, log, opts...); err != nil {
		return nil, err
	}
	g := s.Daemon.Group()
	if s.meta, err = mongodb.Open(ctx, cfg.Metadata.URI, cfg.Dir()); err != nil {
		return nil, fmt.Errorf("metadata.uri: %w", err)
	}
	if err := g.Add(runtime.New("metadata", nil, s.meta.Close)); err != nil {
		return nil, errors.Join(err, s.meta.Close(ctx))
	}
	authn, err := auth.New(authTokens(cfg.API.Tokens))
	if err != nil { // one problem per line, each naming its field
		return nil, errors.New("api." + strings.ReplaceAll(err.Error(), "\n", "\napi."))
	}
	var allow func(string) auth.Allow
	if authn.Enabled() {
		allow = authn.AllowOf
	}
	s.Triggers, err = trigger.Open(ctx, trigger.Config{
		MetadataDatabase: cfg.Metadata.Database,
		Wasm: wasm.Config{
			CacheDir:          cfg.Triggers.CompilationCache,
			MemoryLimit:       cfg.Triggers.MemoryLimit,
			MemoryBudget:      cfg.Triggers.MaxMemoryBytes,
			Timeout:           cfg.Triggers.Timeout,
			LogBytesPerSecond: cfg.Triggers.LogBytesPerSecond,
			LogLinesPerSecond: cfg.Triggers.LogLinesPerSecond,
		},
		MaxModuleBytes:        cfg.Triggers.MaxModuleBytes,
		MaxFunctionsPerUser:   cfg.Triggers.MaxFunctionsPerUser,
		MaxTriggersPerUser:    cfg.Triggers.MaxTriggersPerUser,
		MaxModuleBytesPerUser: cfg.Triggers.MaxModuleBytesPerUser,
		QueuePath:             filepath.Join(cfg.DataDir, "trigger-queue.db"),
		QueueMaxBytes:         cfg.Triggers.QueueMaxBytes,
	}, trigger.Deps{
		Outbox:      s.Daemon.Outbox(),
		Metadata:    s.meta.Client,
		DataSources: s.Daemon.SourceClients(),
		Log:         log.With().Str("component", "triggers").Logger(),
		Audit:       s.auditTrigger,
		Allow:       allow,
	})
	if err != nil {
		return nil, fmt.Errorf("triggers: %w", err)
	}
	// Isolated: with the metadata store down, capture and the sinks go on
	// (the failure is logged, shown, and returned when godwit stops).
	if err := g.Add(runtime.New("triggers", s.Triggers.Run, s.Triggers.Close, "metadata").Isolate()); err != nil {
		return nil, errors.Join(err, s.Triggers.Close(ctx))
	}
	if s.Events, err = events.Open(s.Daemon.Outbox(), events.Config{MetadataDatabase: cfg.Metadata.Database}, log); err != nil {
		return nil, err
	}
	// Streams end only when told: events and audit-api end them when the
	// group stops, so that the gRPC server's graceful stop can finish.
	closeEvents := s.Events.Close
	if err := g.Add(runtime.New("events", s.Events.Run, closeEvents)); err != nil {
		return nil, errors.Join(err, closeEvents(ctx))
	}
	s.Admin = admin.New(admin.Deps{Status: s.Daemon.Status, Outbox: s.Daemon.Outbox(), Config: cfg, Triggers: s.Triggers, Events: s.Events})
	s.auditAPI = auditapi.New(s.Daemon.AuditLogs())
	if err := g.Add(runtime.New("audit-api", s.auditAPI.Run, nil)); err != nil {
		return nil, err
	}
	if cfg.API.HTTPAddr != "off" {
		if s.HTTP, err = listenHTTP(cfg, m, s.Admin, authn, s.Daemon.Status, log); err != nil {
			return nil, err
		}
		h := &httpListener{srv: s.HTTP}
		if err := g.Add(h); err != nil {
			return nil, errors.Join(err, h.Close(ctx))
		}
	}
	if cfg.API.GRPCAddr != "off" {
		rc := rpc.Config{Addr: cfg.API.GRPCAddr, AllowRemote: cfg.API.Insecure || cfg.API.TLS != nil, Auth: authn,
			MaxMessageBytes: max(rpc.DefaultMaxMessageBytes, cfg.Triggers.MaxModuleBytes+8<<20)}
		if t := cfg.API.TLS; t != nil {
			rc.TLS = &rpc.TLS{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA}
		}
		if s.RPC, err = rpc.New(rc, log, api.New(s.Triggers), eventsapi.New(s.Events), s.Admin, s.auditAPI); err != nil {
			return nil, err
		}
		if err := g.Add(runtime.New("grpc", s.RPC.Serve, s.RPC.Close)); err != nil {
			return nil, errors.Join(err, s.RPC.Close(ctx))
		}
		health := func(ctx context.Context) error { return s.Admin.WatchHealth(ctx, s.RPC, 0) }
		if err := g.Add(runtime.New("admin-health", health, nil, "grpc")); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// httpListener is the HTTP listener as a component: it serves until the
// group stops, then shuts down (waiting for requests in flight).
type httpListener struct {
	srv  *httpapi.Server
	once sync.Once
	err  error
}

func (h *httpListener) Name() string { return "http" }

func (h *httpListener) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		_ = h.Close(context.WithoutCancel(ctx))
		return <-served
	}
}

func (h *httpListener) Close(ctx context.Context) error {
	h.once.Do(func() { h.err = h.srv.Close(ctx) })
	return h.err
}

// listenHTTP binds the HTTP listener: HTTPS with api.tls on a
// non-loopback address, and the metrics api.metrics_labels allows.
func listenHTTP(cfg *config.Config, m *metrics.Metrics, a *admin.Service, authn *auth.Authenticator,
	status func() status.Snapshot, log zerolog.Logger) (*httpapi.Server, error) {
	hc := httpapi.Config{Addr: cfg.API.HTTPAddr, Auth: authn, Insecure: cfg.API.HTTPInsecure, Status: status}
	if host, _, err := net.SplitHostPort(cfg.API.HTTPAddr); err == nil && cfg.API.TLS != nil && !isLoopback(host) {
		t := cfg.API.TLS
		tc, err := rpc.TLS{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA}.ServerConfig()
		if err != nil {
			return nil, err
		}
		hc.TLS = tc
	}
	named := prometheus.NewRegistry()
	named.MustRegister(a.Collector(true))
	switch cfg.API.MetricsLabels {
	case "admin":
		anon := prometheus.NewRegistry()
		anon.MustRegister(a.Collector(false))
		hc.Metrics = prometheus.Gatherers{m.Registry, anon}
		hc.Named = prometheus.Gatherers{m.Registry, named}
	case "none":
		anon := prometheus.NewRegistry()
		anon.MustRegister(a.Collector(false))
		hc.Metrics = prometheus.Gatherers{m.Registry, anon}
	default:
		hc.Metrics = prometheus.Gatherers{m.Registry, named}
	}
	return httpapi.Listen(hc, log)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authTokens translates the configured tokens.
func authTokens(in []config.Token) []auth.Token {
	out := make([]auth.Token, len(in))
	for i, t := range in {
		out[i] = auth.Token{User: t.User, Role: auth.Role(t.Role), SHA256: t.SHA256,
			Sources: t.Allow.Sources, Namespaces: t.Allow.Namespaces}
	}
	return out
}

// auditTrigger records what the trigger manager must audit: the acting
// user (the owner when no token named one) and what changed.
func (s *Server) auditTrigger(ctx context.Context, ev trigger.AuditEvent) error {
	user := ev.Actor
	if user == "" {
		user = ev.UserID
	}
	what := fmt.Sprintf("trigger %s (%s)", ev.TriggerName, ev.TriggerID)
	details := map[string]any{"owner": ev.UserID}
	if ev.Kind == trigger.AuditFunctionChanged {
		what = fmt.Sprintf("function %s (%s)", ev.FunctionName, ev.FunctionID)
		details["function_id"] = ev.FunctionID
	} else {
		details["trigger_id"] = ev.TriggerID
	}
	if ev.Action != "" {
		details["action"] = ev.Action
	}
	s.Daemon.Audit(ctx, audit.SystemEvent{
		Class:   strings.ReplaceAll(ev.Kind, ".", "_"),
		User:    user,
		Message: what + ": " + ev.Detail,
		Details: details,
		Time:    ev.At,
	})
	return nil
}

// Run runs every component until ctx ends (nil) or one fails, which stops
// the others at once and is returned.
func (s *Server) Run(ctx context.Context) error { return s.Daemon.Run(ctx) }

// Close closes everything (after Run returned, or instead of Run), in
// reverse start order, joining every error.
func (s *Server) Close(ctx context.Context) error {
	if s.Daemon == nil {
		return nil
	}
	return s.Daemon.Close(ctx)
}
