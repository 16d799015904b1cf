// Package rpc is godwit's gRPC server: one listener hosting the control
// plane's services (TriggerService and FunctionService now; EventService,
// AuditService and AdminService later), with server reflection and the
// standard health service.
//
// # Basics
//
// New binds the listener (so a taken port fails at startup), Serve serves
// until its context ends, Close stops gracefully within its context's
// deadline and then forcibly. Services implement Service.
//
// # Security
//
// Every call passes, in order: a guard that turns a handler's panic into
// an Internal error and strips passwords from error messages; the token
// check of Config.Auth (when it has tokens: "authorization: Bearer TOKEN",
// else Unauthenticated), which puts the caller's auth.Identity in the
// context; then Config.UnaryInterceptors and StreamInterceptors. Services
// read the caller with auth.FromContext (or UserFromContext) and act only
// on what the caller may see. Only the overall health Check (empty service
// name) needs no token; List, Watch, per-component Check and reflection do,
// and a user sees only the health of the API's services and of the sources
// in its allow-list. Config.TLS serves TLS, and mTLS with a client CA.
// Dial is the matching client.
//
// # Caveats
//
// The default address is loopback: without tokens, anyone who can reach
// the port can run functions. Config.Validate refuses a non-loopback
// address without TLS unless AllowRemote is set, and New logs a warning for
// plaintext or token-less serving on a non-loopback address.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/godwit-dev/godwit/auth"
)

// DefaultAddr is the default listen address: loopback only.
const DefaultAddr = "127.0.0.1:7701"

// DefaultMaxMessageBytes admits function modules of 32 MiB plus framing.
const DefaultMaxMessageBytes = 40 << 20

// Config configures the server. The zero value listens on DefaultAddr.
type Config struct {
	// Addr is host:port to listen on. Default DefaultAddr; port 0 picks a
	// free port (see Server.Addr).
	Addr string
	// AllowRemote permits a non-loopback Addr without TLS (`godwit serve
	// --insecure`). Default false. TLS alone permits a non-loopback Addr.
	AllowRemote bool
	// TLS, when set, serves TLS (and mTLS with a client CA).
	TLS *TLS
	// Auth checks bearer tokens; nil or without tokens, every call is let
	// through without an identity.
	Auth *auth.Authenticator
	// MaxMessageBytes bounds request and response messages. Default 40 MiB.
	MaxMessageBytes int
	// UnaryInterceptors and StreamInterceptors run before every call, in
	// order (for example authentication).
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
}

// Validate names the first bad field.
func (c Config) Validate() error {
	addr := c.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("addr: %q: %v (use host:port, for example %s)", addr, err, DefaultAddr)
	}
	if !c.AllowRemote && c.TLS == nil && !isLoopback(host) {
		return fmt.Errorf("addr: %q is not a loopback address: serve TLS (api.tls), or start with --insecure (api.insecure) on a trusted network", addr)
	}
	if c.MaxMessageBytes < 0 {
		return errors.New("max_message_bytes: must not be negative")
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

// Service is a gRPC service the server hosts.
type Service interface {
	// Register registers the service's implementation with s.
	Register(s grpc.ServiceRegistrar)
	// Names returns the full names of the services registered (for
	// health), for example "godwit.trigger.v1.TriggerService".
	Names() []string
}

// Server is a listening gRPC server.
type Server struct {
	lis    net.Listener
	srv    *grpc.Server
	health *health.Server
	log    zerolog.Logger

	tls, mtls bool
	tokens    int

	mu      sync.Mutex
	serving bool
}

// New validates cfg, binds the listener and registers the services, the
// health service and reflection. Nothing is served until Serve.
func New(cfg Config, log zerolog.Logger, services ...Service) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	log = log.With().Str("component", "rpc").Logger()
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxMessageBytes), grpc.MaxSendMsgSize(cfg.MaxMessageBytes)}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.ServerConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	g, a := guard{log: log}, authenticator{a: cfg.Auth, log: log}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{g.unary, a.unary}, cfg.UnaryInterceptors...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{g.stream, a.stream}, cfg.StreamInterceptors...)...))
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gRPC listen on %s: %w (choose another api.grpc_addr)", cfg.Addr, err)
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthServer{Server: hs})
	reflection.Register(srv)
	for _, s := range services {
		s.Register(srv)
		for _, name := range s.Names() {
			hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	warnExposure(log, cfg)
	return &Server{lis: lis, srv: srv, health: hs, log: log,
		tls: cfg.TLS != nil, mtls: cfg.TLS != nil && cfg.TLS.ClientCA != "", tokens: cfg.Auth.Len()}, nil
}

// warnExposure says, once at startup, when the API is reachable from the
// network without encryption or without tokens.
func warnExposure(log zerolog.Logger, cfg Config) {
	host, _, _ := net.SplitHostPort(cfg.Addr)
	if isLoopback(host) {
		return
	}
	if cfg.TLS == nil {
		log.Warn().Str("addr", cfg.Addr).Msg("gRPC API serves PLAINTEXT on a non-loopback address (--insecure / api.insecure): " +
			"tokens and data cross the network unencrypted; configure api.tls unless the network is trusted")
	}
	if !cfg.Auth.Enabled() {
		log.Warn().Str("addr", cfg.Addr).Msg("gRPC API needs no token on a non-loopback address: " +
			"anyone who reaches it can manage triggers and run functions; configure api.tokens")
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// SetServing sets the health status of service ("" is the server as a
// whole; any name works, for example "source/ID"). After Close every
// service stays NOT_SERVING.
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
}

// Serve serves until ctx ends or Close is called, and returns nil then.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("rpc: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.lis) }()
	s.log.Info().Str("addr", s.Addr()).Bool("tls", s.tls).Bool("mtls", s.mtls).Int("tokens", s.tokens).Msg("gRPC API listening")
	select {
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
		return err
	case <-ctx.Done():
		s.stop(context.Background())
		<-errc
		return nil
	}
}

// Close marks the server not serving, lets running calls finish until ctx
// ends, then cuts the rest off.
func (s *Server) Close(ctx context.Context) error {
	s.stop(ctx)
	return nil
}

func (s *Server) stop(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.srv.Stop()
		<-done
	}
	_ = s.lis.Close()
}

// WithUser returns ctx carrying an authenticated user with the user role
// and no allow-list: a shorthand of auth.WithIdentity for tests and
// interceptors.
func WithUser(ctx context.Context, user string) context.Context {
	return auth.WithIdentity(ctx, auth.Identity{User: user, Role: auth.RoleUser})
}

// UserFromContext returns the authenticated user, if the call carried a
// valid token. Without tokens configured it returns "", false and services
// trust the user_id of the request. auth.FromContext also gives the role.
func UserFromContext(ctx context.Context) (string, bool) {
	id, ok := auth.FromContext(ctx)
	return id.User, ok
}
