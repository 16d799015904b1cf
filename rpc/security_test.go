package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/rpc/rpctest"
)

// whoami is a test service: a unary Check and a server-streaming Watch
// that record who called them. Check's request names what to do:
// "panic" panics, "leak" fails with a message quoting a URI's password.
type whoami struct {
	mu   sync.Mutex
	seen []auth.Identity
}

func (w *whoami) Names() []string { return []string{"test.Whoami"} }

func (w *whoami) record(ctx context.Context) {
	id, _ := auth.FromContext(ctx)
	w.mu.Lock()
	w.seen = append(w.seen, id)
	w.mu.Unlock()
}

func (w *whoami) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

func (w *whoami) last() auth.Identity {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) == 0 {
		return auth.Identity{}
	}
	return w.seen[len(w.seen)-1]
}

func (w *whoami) check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	w.record(ctx)
	switch req.Service {
	case "panic":
		panic("boom mongodb://root:hunter2@db1/")
	case "internal":
		return nil, status.Error(codes.Internal, "read trigger t1: server selection error: { Addr: meta.internal:27017, Last error: connection refused }")
	case "leak":
		return nil, status.Error(codes.Unavailable, "connect mongodb://root:hunter2@db1:27017/admin: refused")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (w *whoami) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Whoami",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Check", Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				return w.check(ctx, req.(*healthpb.HealthCheckRequest))
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Whoami/Check"}, h)
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
			w.record(stream.Context())
			return stream.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
		}}},
	}, w)
}

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve starts a server with the whoami service and stops it at cleanup.
func serve(t *testing.T, cfg rpc.Config, log zerolog.Logger) (*rpc.Server, *whoami) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	w := &whoami{}
	srv, err := rpc.New(cfg, log, w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv, w
}

func dial(t *testing.T, c rpc.ClientConfig) *grpc.ClientConn {
	t.Helper()
	conn, err := rpc.Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	t.Cleanup(cancel)
	return ctx
}

func check(ctx context.Context, conn *grpc.ClientConn, what string) error {
	return conn.Invoke(ctx, "/test.Whoami/Check", &healthpb.HealthCheckRequest{Service: what}, new(healthpb.HealthCheckResponse))
}

func watch(ctx context.Context, conn *grpc.ClientConn) error {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/test.Whoami/Watch")
	if err != nil {
		return err
	}
	if err := s.SendMsg(&healthpb.HealthCheckRequest{}); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(new(healthpb.HealthCheckResponse))
}

func tokens(t *testing.T, list ...auth.Token) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(list)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const (
	aliceToken = "gdw_alice-token-for-tests"
	bobToken   = "gdw_bob-token-for-tests"
	rootToken  = "gdw_root-token-for-tests"
)

func TestServer_Tokens(t *testing.T) {
	all := []auth.Token{
		{User: "alice", SHA256: auth.Hash(aliceToken), Namespaces: []string{"shop.*"}},
		{User: "bob", SHA256: auth.Hash(bobToken)},
		{User: "root", Role: auth.RoleAdmin, SHA256: auth.Hash(rootToken)},
	}
	srv, w := serve(t, rpc.Config{Auth: tokens(t, all...)}, zerolog.Nop())
	ctx := ctx10(t)
	as := func(token string) *grpc.ClientConn { return dial(t, rpc.ClientConfig{Addr: srv.Addr(), Token: token}) }

	for _, tc := range []struct {
		name  string
		conn  *grpc.ClientConn
		ctx   context.Context
		code  codes.Code
		user  string
		admin bool
	}{
		{"Absent", as(""), ctx, codes.Unauthenticated, "", false},
		{"Wrong", as("gdw_guessed"), ctx, codes.Unauthenticated, "", false},
		{"NotBearer", as(""), metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+aliceToken), codes.Unauthenticated, "", false},
		{"EmptyBearer", as(""), metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "), codes.Unauthenticated, "", false},
		{"User", as(aliceToken), ctx, codes.OK, "alice", false},
		{"Admin", as(rootToken), ctx, codes.OK, "root", true},
		{"SchemeCaseInsensitive", as(""), metadata.AppendToOutgoingContext(ctx, "authorization", "bearer "+bobToken), codes.OK, "bob", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for kind, call := range map[string]func() error{
				"Unary":  func() error { return check(tc.ctx, tc.conn, "") },
				"Stream": func() error { return watch(tc.ctx, tc.conn) },
			} {
				before := w.count()
				err := call()
				if status.Code(err) != tc.code {
					t.Fatalf("%s: %v, want %v", kind, err, tc.code)
				}
				if err != nil {
					if strings.Contains(err.Error(), "token-for-tests") {
						t.Fatalf("%s: the error quotes the token: %v", kind, err)
					}
					if w.count() != before {
						t.Fatalf("%s: the service ran for a refused call", kind)
					}
					continue
				}
				if id := w.last(); id.User != tc.user || id.IsAdmin() != tc.admin {
					t.Fatalf("%s: the service saw %+v, want %s (admin %v)", kind, id, tc.user, tc.admin)
				}
			}
		})
	}
	t.Run("IdentityCarriesTheAllowList", func(t *testing.T) {
		if err := check(ctx, as(aliceToken), ""); err != nil {
			t.Fatal(err)
		}
		if got := w.last().Allow.Namespaces(); len(got) != 1 || got[0] != "shop.*" {
			t.Fatalf("allow-list %v", got)
		}
	})
	t.Run("HealthNeedsNoToken", func(t *testing.T) {
		res, err := healthpb.NewHealthClient(as("")).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health without a token: %v %v", res, err)
		}
	})
	t.Run("ReflectionNeedsAToken", func(t *testing.T) {
		list := func(conn *grpc.ClientConn) error {
			s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			if err != nil {
				return err
			}
			// A refused stream may already be closed when Send runs: gRPC
			// then reports io.EOF there and the status on Recv.
			if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			_, err = s.Recv()
			return err
		}
		if err := list(as("")); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("reflection without a token: %v", err)
		}
		if err := list(as(bobToken)); err != nil {
			t.Fatalf("reflection with a token: %v", err)
		}
	})
	// Revoking is removing the token from the config and restarting: the
	// server that starts on the shorter list refuses it.
	t.Run("Revoked", func(t *testing.T) {
		srv2, _ := serve(t, rpc.Config{Auth: tokens(t, all[0], all[2])}, zerolog.Nop())
		conn := dial(t, rpc.ClientConfig{Addr: srv2.Addr(), Token: bobToken})
		if err := check(ctx, conn, ""); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked token: %v", err)
		}
		if err := check(ctx, dial(t, rpc.ClientConfig{Addr: srv2.Addr(), Token: aliceToken}), ""); err != nil {
			t.Fatalf("a token still listed: %v", err)
		}
	})
}

func TestServer_NoTokensLetsEveryCallThrough(t *testing.T) {
	srv, w := serve(t, rpc.Config{Auth: tokens(t)}, zerolog.Nop())
	if err := check(ctx10(t), dial(t, rpc.ClientConfig{Addr: srv.Addr()}), ""); err != nil {
		t.Fatal(err)
	}
	if id := w.last(); id.User != "" {
		t.Fatalf("without tokens there is no identity, got %+v", id)
	}
}

func TestServer_TLS(t *testing.T) {
	dir := t.TempDir()
	ca := rpctest.NewCA(t, dir, "godwit")
	other := rpctest.NewCA(t, dir, "other")
	server := ca.Server(t, "server")
	good, bad := ca.Client(t, "alice"), other.Client(t, "mallory")
	ctx := ctx10(t)

	t.Run("TLS", func(t *testing.T) {
		srv, _ := serve(t, rpc.Config{TLS: &rpc.TLS{Cert: server.CertFile, Key: server.KeyFile}}, zerolog.Nop())
		for _, tc := range []struct {
			name string
			c    rpc.ClientConfig
			ok   bool
		}{
			{"TrustsTheCA", rpc.ClientConfig{CACert: ca.CertFile}, true},
			{"Plaintext", rpc.ClientConfig{}, false},
			{"TrustsAnotherCA", rpc.ClientConfig{CACert: other.CertFile}, false},
			{"WrongServerName", rpc.ClientConfig{CACert: ca.CertFile, ServerName: "godwit.example.com"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.c.Addr = srv.Addr()
				err := check(ctx, dial(t, tc.c), "")
				if (err == nil) != tc.ok {
					t.Fatalf("got %v, want ok=%v", err, tc.ok)
				}
			})
		}
	})
	t.Run("MutualTLS", func(t *testing.T) {
		srv, _ := serve(t, rpc.Config{TLS: &rpc.TLS{Cert: server.CertFile, Key: server.KeyFile, ClientCA: ca.CertFile}}, zerolog.Nop())
		for _, tc := range []struct {
			name string
			c    rpc.ClientConfig
			ok   bool
		}{
			{"ClientCertFromTheCA", rpc.ClientConfig{CACert: ca.CertFile, Cert: good.CertFile, Key: good.KeyFile}, true},
			{"NoClientCert", rpc.ClientConfig{CACert: ca.CertFile}, false},
			{"ClientCertFromAnotherCA", rpc.ClientConfig{CACert: ca.CertFile, Cert: bad.CertFile, Key: bad.KeyFile}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.c.Addr = srv.Addr()
				err := check(ctx, dial(t, tc.c), "")
				if (err == nil) != tc.ok {
					t.Fatalf("got %v, want ok=%v", err, tc.ok)
				}
			})
		}
	})
	t.Run("BadFiles", func(t *testing.T) {
		for _, tc := range []struct {
			tls  rpc.TLS
			want string
		}{
			{rpc.TLS{Cert: server.CertFile}, "api.tls: cert and key"},
			{rpc.TLS{Cert: server.CertFile, Key: good.KeyFile}, "api.tls: load cert"},
			{rpc.TLS{Cert: server.CertFile, Key: server.KeyFile, ClientCA: server.KeyFile}, "api.tls.client_ca"},
		} {
			_, err := rpc.New(rpc.Config{Addr: "127.0.0.1:0", TLS: &tc.tls}, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New with %+v: %v, want %q", tc.tls, err, tc.want)
			}
		}
	})
}

// TestServer_Guard checks that a panicking handler costs one call, not the
// daemon, and that error messages lose their passwords.
func TestServer_Guard(t *testing.T) {
	var logs syncBuffer
	srv, _ := serve(t, rpc.Config{}, zerolog.New(&logs))
	conn := dial(t, rpc.ClientConfig{Addr: srv.Addr()})
	ctx := ctx10(t)
	err := check(ctx, conn, "panic")
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("panicking handler: %v, want Internal without the panic's text", err)
	}
	if err := check(ctx, conn, ""); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	if !strings.Contains(logs.String(), "a call panicked") || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("the panic must be logged, without the password:\n%s", logs.String())
	}
	err = check(ctx, conn, "leak")
	if st := status.Convert(err); st.Code() != codes.Unavailable || strings.Contains(st.Message(), "hunter2") ||
		!strings.Contains(st.Message(), "root:xxxxx@db1:27017") {
		t.Fatalf("leaking handler: %v, want Unavailable with the URI redacted", err)
	}
}

func TestServer_WarnsWhenExposed(t *testing.T) {
	var logs bytes.Buffer
	srv, err := rpc.New(rpc.Config{Addr: "0.0.0.0:0", AllowRemote: true}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	for _, want := range []string{"PLAINTEXT on a non-loopback address", "needs no token on a non-loopback address"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q in:\n%s", want, logs.String())
		}
	}

	dir := t.TempDir()
	pair := rpctest.NewCA(t, dir, "ca").Server(t, "server")
	logs.Reset()
	srv2, err := rpc.New(rpc.Config{Addr: "0.0.0.0:0", TLS: &rpc.TLS{Cert: pair.CertFile, Key: pair.KeyFile},
		Auth: tokens(t, auth.Token{User: "alice", SHA256: auth.Hash(aliceToken)})}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close(context.Background())
	if logs.Len() != 0 {
		t.Errorf("TLS and tokens on a non-loopback address need no warning, got:\n%s", logs.String())
	}
}

func TestDial(t *testing.T) {
	for _, tc := range []struct {
		c    rpc.ClientConfig
		want string
	}{
		{rpc.ClientConfig{Addr: "10.1.2.3:7701", Token: "t"}, "refusing to send the token unencrypted"},
		{rpc.ClientConfig{Addr: "127.0.0.1:7701", Cert: "c.pem"}, "--cert and --key"},
		{rpc.ClientConfig{Addr: "127.0.0.1:7701", CACert: "/nonexistent/ca.pem"}, "--ca-cert"},
		{rpc.ClientConfig{Addr: "7701"}, "--addr"},
	} {
		_, err := rpc.Dial(tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial(%+v) = %v, want %q", tc.c, err, tc.want)
		}
	}
	for _, c := range []rpc.ClientConfig{
		{Addr: "10.1.2.3:7701", Token: "t", AllowPlaintextToken: true},
		{Addr: "127.0.0.1:7701", Token: "t"},
		{Addr: "10.1.2.3:7701"},
	} {
		conn, err := rpc.Dial(c)
		if err != nil {
			t.Errorf("Dial(%+v): %v", c, err)
			continue
		}
		conn.Close()
	}
}
