// Package server runs a configured godwit: the daemon (capture, outbox,
// sinks), the trigger manager, and the network listeners (HTTP metrics and
// health, the gRPC API). `godwit serve` and `godwit demo` use it.
package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/daemon"
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

	meta *mongodb.Conn
	log  zerolog.Logger
}

// Open opens the daemon and the trigger manager and binds the listeners.
// Nothing runs until Run.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger) (_ *Server, err error) {
	s := &Server{log: log}
	defer func() {
		if err != nil {
			_ = s.Close(context.WithoutCancel(ctx))
		}
	}()
	var m *metrics.Metrics
	m = metrics.New(func() daemon.Status { return s.Daemon.Status() })
	if s.Daemon, err = daemon.Open(ctx, cfg, log, daemon.WithDeliveryObserver(m.ObserveDelivery)); err != nil {
		return nil, err
	}
	if s.meta, err = mongodb.Open(ctx, cfg.Metadata.URI, cfg.Dir()); err != nil {
		return nil, fmt.Errorf("metadata.uri: %w", err)
	}
	s.Triggers, err = trigger.Open(ctx, trigger.Config{
		MetadataDatabase: cfg.Metadata.Database,
		Wasm: wasm.Config{
			CacheDir:    filepath.Join(cfg.DataDir, "wazero-cache"),
			MemoryLimit: cfg.Triggers.MemoryLimit,
			Timeout:     cfg.Triggers.Timeout,
		},
		MaxModuleBytes: cfg.Triggers.MaxModuleBytes,
	}, trigger.Deps{
		Outbox:      s.Daemon.Outbox(),
		Metadata:    s.meta.Client,
		DataSources: s.Daemon.SourceClients(),
		Log:         log.With().Str("component", "triggers").Logger(),
		Audit:       s.auditTrigger,
	})
	if err != nil {
		return nil, fmt.Errorf("triggers: %w", err)
	}
	if cfg.API.HTTPAddr != "off" {
		if s.HTTP, err = httpapi.Listen(cfg.API.HTTPAddr, m, s.Daemon.Status, log); err != nil {
			return nil, err
		}
	}
	if cfg.API.GRPCAddr != "off" {
		rc := rpc.Config{Addr: cfg.API.GRPCAddr, AllowRemote: cfg.API.Insecure || cfg.API.TLS != nil}
		if s.RPC, err = rpc.New(rc, log, api.New(s.Triggers)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// auditTrigger records what the trigger manager must audit.
func (s *Server) auditTrigger(ctx context.Context, ev trigger.AuditEvent) error {
	s.Daemon.Audit(ctx, audit.SystemEvent{
		Class:   strings.ReplaceAll(ev.Kind, ".", "_"),
		User:    ev.UserID,
		Message: fmt.Sprintf("trigger %s (%s): %s", ev.TriggerName, ev.TriggerID, ev.Detail),
		Time:    ev.At,
	})
	return nil
}

// Run runs until ctx ends, then stops the listeners, the triggers and the
// daemon, and returns the first error.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
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
