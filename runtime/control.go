package runtime

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
	"github.com/godwit-dev/godwit/events"
	eventsapi "github.com/godwit-dev/godwit/events/api"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/metrics"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/status"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/api"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// openControl opens the control plane after the data path: the metadata
// store, the trigger manager, the events engine, the admin service and the
// listeners. They close before the data path (reverse order).
func (s *Godwit) openControl(ctx context.Context, m *metrics.Metrics) (err error) {
	cfg, log, g := s.cfg, s.log, s.group
	if s.meta, err = mongodb.Open(ctx, cfg.Metadata.URI, cfg.Dir()); err != nil {
		return fmt.Errorf("metadata.uri: %w", err)
	}
	if err := g.Add(New("metadata", nil, s.meta.Close)); err != nil {
		return errors.Join(err, s.meta.Close(ctx))
	}
	authn, err := auth.New(authTokens(cfg.API.Tokens))
	if err != nil { // one problem per line, each naming its field
		return errors.New("api." + strings.ReplaceAll(err.Error(), "\n", "\napi."))
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
		Outbox:      s.ob,
		Metadata:    s.meta.Client,
		DataSources: s.SourceClients(),
		Log:         log.With().Str("component", "triggers").Logger(),
		Audit:       s.auditTrigger,
		Allow:       allow,
	})
	if err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	// Isolated: with the metadata store down, capture and the sinks go on
	// (the failure is logged, shown, and returned when godwit stops).
	if err := g.Add(New("triggers", s.Triggers.Run, s.Triggers.Close, "metadata").Isolate()); err != nil {
		return errors.Join(err, s.Triggers.Close(ctx))
	}
	if s.Events, err = events.Open(s.ob, events.Config{MetadataDatabase: cfg.Metadata.Database}, log); err != nil {
		return err
	}
	// Streams end only when told: events and audit-api end them when the
	// group stops, so that the gRPC server's graceful stop can finish.
	closeEvents := s.Events.Close
	if err := g.Add(New("events", s.Events.Run, closeEvents)); err != nil {
		return errors.Join(err, closeEvents(ctx))
	}
	s.Admin = admin.New(admin.Deps{Status: s.Status, Report: s.Report})
	s.auditAPI = auditapi.New(s.auditLogs)
	if err := g.Add(New("audit-api", s.auditAPI.Run, nil)); err != nil {
		return err
	}
	if cfg.API.HTTPAddr != "off" {
		if s.HTTP, err = listenHTTP(cfg, m, s.Admin, authn, s.Status, log); err != nil {
			return err
		}
		h := &httpListener{srv: s.HTTP}
		if err := g.Add(h); err != nil {
			return errors.Join(err, h.Close(ctx))
		}
	}
	if cfg.API.GRPCAddr != "off" {
		rc := rpc.Config{Addr: cfg.API.GRPCAddr, AllowRemote: cfg.API.Insecure || cfg.API.TLS != nil, Auth: authn,
			MaxMessageBytes: max(rpc.DefaultMaxMessageBytes, cfg.Triggers.MaxModuleBytes+8<<20)}
		if t := cfg.API.TLS; t != nil {
			rc.TLS = &rpc.TLS{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA}
		}
		if s.RPC, err = rpc.New(rc, log, api.New(s.Triggers), eventsapi.New(s.Events), s.Admin, s.auditAPI); err != nil {
			return err
		}
		if err := g.Add(New("grpc", s.RPC.Serve, s.RPC.Close)); err != nil {
			return errors.Join(err, s.RPC.Close(ctx))
		}
		health := func(ctx context.Context) error { return s.Admin.WatchHealth(ctx, s.RPC, 0) }
		if err := g.Add(New("admin-health", health, nil, "grpc")); err != nil {
			return err
		}
	}
	return nil
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
func (s *Godwit) auditTrigger(ctx context.Context, ev trigger.AuditEvent) error {
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
	s.Audit(ctx, audit.SystemEvent{
		Class:   strings.ReplaceAll(ev.Kind, ".", "_"),
		User:    user,
		Message: what + ": " + ev.Detail,
		Details: details,
		Time:    ev.At,
	})
	return nil
}
