// Package server runs a configured godwit: the daemon (capture, outbox,
// sinks) together with its network listeners (HTTP metrics and health).
// `godwit serve` and `godwit demo --keep-running` use it.
package server

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/daemon"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/metrics"
)

// Server is an opened configuration with its listeners.
type Server struct {
	Daemon *daemon.Daemon
	HTTP   *httpapi.Server // nil when api.http_addr is "off"
	log    zerolog.Logger
}

// Open opens the daemon and binds the listeners. Nothing runs until Run.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*Server, error) {
	var m *metrics.Metrics
	var d *daemon.Daemon
	m = metrics.New(func() daemon.Status { return d.Status() })
	d, err := daemon.Open(ctx, cfg, log, daemon.WithDeliveryObserver(m.ObserveDelivery))
	if err != nil {
		return nil, err
	}
	s := &Server{Daemon: d, log: log}
	if cfg.API.HTTPAddr != "off" {
		if s.HTTP, err = httpapi.Listen(cfg.API.HTTPAddr, m, d.Status, log); err != nil {
			_ = d.Close(ctx)
			return nil, err
		}
	}
	return s, nil
}

// Run runs until ctx ends, then stops the listeners and the daemon.
func (s *Server) Run(ctx context.Context) error {
	httpErr := make(chan error, 1)
	if s.HTTP != nil {
		go func() { httpErr <- s.HTTP.Serve() }()
	} else {
		httpErr <- nil
	}
	runErr := s.Daemon.Run(ctx)
	if s.HTTP != nil {
		_ = s.HTTP.Close(context.WithoutCancel(ctx))
	}
	return errors.Join(runErr, <-httpErr)
}

// Close closes the daemon (after Run returned, or instead of Run).
func (s *Server) Close(ctx context.Context) error {
	return s.Daemon.Close(ctx)
}
