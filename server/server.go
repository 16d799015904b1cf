// Package server runs a configured godwit: the daemon (capture, outbox,
// sinks), the trigger manager, and the network listeners (HTTP metrics and
// health, the gRPC API). `godwit serve` and `godwit demo` use it.
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
	m = metrics.New(func() daemon.Status { return s.Daemon.Status() })
	opts = append(opts, daemon.WithDeliveryObserver(m.ObserveDelivery))
	if s.Daemon, err = daemon.Open(ctx, cfg, log, opts...); err != nil {
		return nil, err
	}
	if s.meta, err = mongodb.Open(ctx, cfg.Metadata.URI, cfg.Dir()); err != nil {
		return nil, fmt.Errorf("metadata.uri: %w", err)
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
	if s.Events, err = events.Open(s.Daemon.Outbox(), events.Config{MetadataDatabase: cfg.Metadata.Database}, log); err != nil {
		return nil, err
	}
	s.Admin = admin.New(admin.Deps{Daemon: s.Daemon, Config: cfg, Triggers: s.Triggers, Events: s.Events})
	s.auditAPI = auditapi.New(s.Daemon.AuditLogs())
	if cfg.API.HTTPAddr != "off" {
		if s.HTTP, err = listenHTTP(cfg, m, s.Admin, authn, s.Daemon.Status, log); err != nil {
			return nil, err
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
	}
	return s, nil
}

// listenHTTP binds the HTTP listener: HTTPS with api.tls on a
// non-loopback address, and the metrics api.metrics_labels allows.
func listenHTTP(cfg *config.Config, m *metrics.Metrics, a *admin.Service, authn *auth.Authenticator,
	status func() daemon.Status, log zerolog.Logger) (*httpapi.Server, error) {
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

// Run runs until ctx ends, then stops the listeners, the triggers and the
// daemon, and returns the first error.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goRun := func(f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- f() }()
	}
	if s.HTTP != nil {
		goRun(s.HTTP.Serve)
	}
	if s.RPC != nil {
		goRun(func() error { return s.RPC.Serve(ctx) })
	}
	goRun(func() error { return s.Triggers.Run(ctx) })
	// Streams end only when told: these end them when ctx does, so that
	// the gRPC server's graceful stop can finish.
	goRun(func() error { return s.Events.Run(ctx) })
	goRun(func() error { return s.auditAPI.Run(ctx) })
	if s.RPC != nil {
		goRun(func() error { return s.Admin.WatchHealth(ctx, s.RPC, 0) })
	}
	runErr := s.Daemon.Run(ctx)
	if s.HTTP != nil {
		_ = s.HTTP.Close(context.WithoutCancel(ctx))
	}
	wg.Wait()
	close(errs)
	all := []error{runErr}
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// Close closes everything (after Run returned, or instead of Run).
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	if s.RPC != nil {
		errs = append(errs, s.RPC.Close(ctx))
	}
	if s.Triggers != nil {
		errs = append(errs, s.Triggers.Close(ctx))
	}
	if s.meta != nil {
		errs = append(errs, s.meta.Close(ctx))
	}
	if s.Daemon != nil {
		errs = append(errs, s.Daemon.Close(ctx))
	}
	return errors.Join(errs...)
}
