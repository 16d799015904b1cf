package rpc_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/rpc"
)

// TestServer_HealthTellsStrangersNothing is issue 16 hole 8 as an
// attacker tries it: without a token, health List named every source and
// sink, and Check on a guessed name answered NotFound or a status, so ids
// could be probed. Now a stranger learns "serving" and nothing else; a
// user sees the sources of its allow-list; an admin sees everything.
func TestServer_HealthTellsStrangersNothing(t *testing.T) {
	srv, _ := serve(t, rpc.Config{Auth: tokens(t,
		auth.Token{User: "alice", SHA256: auth.Hash(aliceToken), Sources: []string{"shop"}},
		auth.Token{User: "root", Role: auth.RoleAdmin, SHA256: auth.Hash(rootToken)},
	)}, zerolog.Nop())
	srv.SetServing("source/shop", true)
	srv.SetServing("source/hr", false)
	srv.SetServing("sink/audit", true)
	ctx := ctx10(t)
	hc := func(token string) healthpb.HealthClient {
		return healthpb.NewHealthClient(dial(t, rpc.ClientConfig{Addr: srv.Addr(), Token: token}))
	}
	anon, alice, root := hc(""), hc(aliceToken), hc(rootToken)

	t.Run("Stranger", func(t *testing.T) {
		res, err := anon.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("the overall check is open for probes: %v %v", res, err)
		}
		for _, name := range []string{"source/hr", "source/guess", "sink/audit", "test.Whoami"} {
			_, err := anon.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("Check(%q) without a token: %v, want Unauthenticated (the same for every name)", name, err)
			}
		}
		if _, err := anon.List(ctx, &healthpb.HealthListRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("List without a token: %v, want Unauthenticated", err)
		}
		w, err := anon.Watch(ctx, &healthpb.HealthCheckRequest{Service: "source/hr"})
		if err == nil {
			_, err = w.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("Watch without a token: %v, want Unauthenticated", err)
		}
	})

	list := func(t *testing.T, c healthpb.HealthClient) []string {
		t.Helper()
		res, err := c.List(ctx, &healthpb.HealthListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(res.GetStatuses()))
	}
	t.Run("User", func(t *testing.T) {
		if got, want := list(t, alice), []string{"", "source/shop", "test.Whoami"}; !slices.Equal(got, want) {
			t.Fatalf("alice lists %q, want %q (her source, not hr's or the sinks)", got, want)
		}
		_, unknown := alice.Check(ctx, &healthpb.HealthCheckRequest{Service: "source/guess"})
		for _, hidden := range []string{"source/hr", "sink/audit"} {
			_, err := alice.Check(ctx, &healthpb.HealthCheckRequest{Service: hidden})
			if status.Code(err) != codes.NotFound || status.Convert(err).Message() != status.Convert(unknown).Message() {
				t.Errorf("Check(%q) as alice: %v; an unknown name: %v; they must read the same", hidden, err, unknown)
			}
		}
		if res, err := alice.Check(ctx, &healthpb.HealthCheckRequest{Service: "source/shop"}); err != nil ||
			res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("alice's own source: %v %v", res, err)
		}
	})
	t.Run("Admin", func(t *testing.T) {
		if got, want := list(t, root), []string{"", "sink/audit", "source/hr", "source/shop", "test.Whoami"}; !slices.Equal(got, want) {
			t.Fatalf("root lists %q, want %q", got, want)
		}
	})
}
