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
// # Users
//
// Until bearer tokens land (issue 7), requests name their user in user_id
// fields. Services ask UserFromContext for the acting user: an
// authentication interceptor (Config.UnaryInterceptors and
// StreamInterceptors) will put it there with WithUser, and services then
// refuse to act on other users' resources.
//
// # Caveats
//
// The default address is loopback: without authentication, anyone who can
// reach the port can run functions. Config.Validate refuses a non-loopback
// address unless AllowRemote is set.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
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
	// AllowRemote permits a non-loopback Addr. Default false.
	AllowRemote bool
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
	if !c.AllowRemote && !isLoopback(host) {
		return fmt.Errorf("addr: %q is not a loopback address; the API has no authentication yet, so set allow_remote only behind a trusted network", addr)
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
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gRPC listen on %s: %w (choose another api.grpc_addr)", cfg.Addr, err)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(cfg.UnaryInterceptors...),
		grpc.ChainStreamInterceptor(cfg.StreamInterceptors...),
	)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	for _, s := range services {
		s.Register(srv)
		for _, name := range s.Names() {
			hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return &Server{lis: lis, srv: srv, health: hs, log: log.With().Str("component", "rpc").Logger()}, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

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
	s.log.Info().Str("addr", s.Addr()).Msg("gRPC API listening")
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

type userKey struct{}

// WithUser returns ctx carrying the authenticated user id.
func WithUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, userKey{}, user)
}

// UserFromContext returns the authenticated user, if an interceptor set
// one. Without authentication (today) it returns "", false and services
// trust the user_id of the request.
func UserFromContext(ctx context.Context) (string, bool) {
	u, ok := ctx.Value(userKey{}).(string)
	return u, ok && u != ""
}
