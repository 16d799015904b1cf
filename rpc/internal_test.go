package rpc_test

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/rpc"
)

// TestServer_InternalErrorsTellUsersNothing: an Internal error quotes the
// driver, naming the metadata store's host and port: configuration a user
// may not see (issue 16, "errors never list configuration a user may not
// see"). A user gets a plain "internal error"; the operator finds the
// message in the log; an admin gets it in the answer.
func TestServer_InternalErrorsTellUsersNothing(t *testing.T) {
	var logs syncBuffer
	srv, _ := serve(t, rpc.Config{Auth: tokens(t,
		auth.Token{User: "alice", SHA256: auth.Hash(aliceToken)},
		auth.Token{User: "root", Role: auth.RoleAdmin, SHA256: auth.Hash(rootToken)},
	)}, zerolog.New(&logs))
	ctx := ctx10(t)
	err := check(ctx, dial(t, rpc.ClientConfig{Addr: srv.Addr(), Token: aliceToken}), "internal")
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "meta.internal") || strings.Contains(err.Error(), "27017") {
		t.Fatalf("alice got %v, want Internal without the host", err)
	}
	if !strings.Contains(logs.String(), "meta.internal:27017") || !strings.Contains(logs.String(), `"user":"alice"`) {
		t.Fatalf("the operator's log lacks the message: %s", logs.String())
	}
	err = check(ctx, dial(t, rpc.ClientConfig{Addr: srv.Addr(), Token: rootToken}), "internal")
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "meta.internal:27017") {
		t.Fatalf("root got %v, want the details", err)
	}
	// Errors users can act on pass unchanged.
	err = check(ctx, dial(t, rpc.ClientConfig{Addr: srv.Addr(), Token: aliceToken}), "leak")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "root:xxxxx@db1") {
		t.Fatalf("alice got %v, want the redacted Unavailable", err)
	}
}
