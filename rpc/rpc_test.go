package rpc_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/rpc"
)

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		cfg  rpc.Config
		want string // "" means valid
	}{
		{rpc.Config{}, ""},
		{rpc.Config{Addr: "localhost:0"}, ""},
		{rpc.Config{Addr: "[::1]:7701"}, ""},
		{rpc.Config{Addr: "0.0.0.0:7701"}, "addr: \"0.0.0.0:7701\" is not a loopback address"},
		{rpc.Config{Addr: "0.0.0.0:7701", AllowRemote: true}, ""},
		{rpc.Config{Addr: "0.0.0.0:7701", TLS: &rpc.TLS{Cert: "c.pem", Key: "k.pem"}}, ""},
		{rpc.Config{Addr: "7701"}, "addr:"},
		{rpc.Config{MaxMessageBytes: -1}, "max_message_bytes"},
	} {
		err := tc.cfg.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestServer_Serve(t *testing.T) {
	var seen []string
	// An interceptor standing in for issue 7's token check.
	auth := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx = rpc.WithUser(ctx, "alice")
		u, _ := rpc.UserFromContext(ctx)
		seen = append(seen, u+" "+info.FullMethod)
		return h(ctx, req)
	}
	srv, err := rpc.New(rpc.Config{Addr: "127.0.0.1:0", UnaryInterceptors: []grpc.UnaryServerInterceptor{auth}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), testwait.Long)
	defer ccancel()
	res, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", res, err)
	}
	if len(seen) != 1 || seen[0] != "alice /grpc.health.v1.Health/Check" {
		t.Fatalf("interceptor saw %q", seen)
	}
	if _, ok := rpc.UserFromContext(context.Background()); ok {
		t.Fatal("a plain context has a user")
	}

	t.Run("PortTaken", func(t *testing.T) {
		_, err := rpc.New(rpc.Config{Addr: srv.Addr()}, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), "api.grpc_addr") {
			t.Fatalf("second listener on %s: %v", srv.Addr(), err)
		}
	})

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
