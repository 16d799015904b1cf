package api_test

import (
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger"
)

// TestTriggerService_RevokedOwner is issue 16 hole 7 as an attacker
// meets it: bob's token line is removed, and his trigger, which writes,
// must not run on with no allow-list at all (a missing line used to count
// as "unrestricted"). After the restart the trigger is stopped (state
// error, saying why) and audited; bob's old token is refused. An admin
// moves the trigger to alice, and it runs again from where it stopped:
// nothing captured meanwhile is lost.
func TestTriggerService_RevokedOwner(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, envOptions{tokens: securityTokens(), persist: true})
	bob := e.as(tokBob)
	fn := bob.createFunction(t, "audit", guests["auditenricher"])
	tr := dbTrigger("orders", fn.Id, &pb.DatabaseConfig{DataSource: "src", Database: "shop", Collection: "orders"}, "audit.*")
	tr.UserId = ""
	tr = bob.createTrigger(t, tr)
	e.stop()

	var withoutBob []auth.Token
	for _, tk := range securityTokens() {
		if tk.User != "bob" {
			withoutBob = append(withoutBob, tk)
		}
	}
	e = startEnv(t, dir, envOptions{tokens: withoutBob, persist: true})
	ctx := ctxT(t)
	root := e.as(tokRoot)

	_, err := e.as(tokBob).tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bob's removed token: %v, want Unauthenticated", err)
	}
	got, err := root.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.GetStatus(); trigger.State(st.GetState()) != trigger.StateError || !strings.Contains(st.GetLastError(), "bob has no token") {
		t.Fatalf("a revoked owner's trigger is %q (%q), want stopped saying why", st.GetState(), st.GetLastError())
	}
	if !slices.Contains(e.audits.kinds(), trigger.AuditOwnerRevoked+":orders") {
		t.Fatalf("the stop is not audited: %v", e.audits.kinds())
	}

	// Captured while the trigger is stopped.
	last := e.add("src",
		event("insert", "shop", "orders", int32(1), bson.D{{Key: "_id", Value: int32(1)}}),
		event("insert", "shop", "orders", int32(2), bson.D{{Key: "_id", Value: int32(2)}}))

	t.Run("OnlyAnAdminMovesIt", func(t *testing.T) {
		alice := e.as(tokAlice)
		mv := &pb.Trigger{Id: got.Id, UserId: "alice", Name: got.Name, TriggerType: got.TriggerType, FunctionId: fn.Id,
			Enabled: true, Config: got.Config, Writes: got.Writes}
		_, err := alice.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: mv})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("alice taking bob's trigger: %v, want NotFound", err)
		}
	})

	alice := e.as(tokAlice)
	afn := alice.createFunction(t, "audit", guests["auditenricher"])
	mv := &pb.Trigger{Id: got.Id, UserId: "alice", Name: got.Name, TriggerType: got.TriggerType, FunctionId: afn.Id,
		Enabled: true, Config: got.Config, Writes: got.Writes}
	moved, err := root.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: mv})
	if err != nil {
		t.Fatalf("the admin moving the trigger to alice: %v", err)
	}
	if moved.UserId != "alice" || trigger.State(moved.GetStatus().GetState()) != trigger.StateRunning {
		t.Fatalf("moved trigger: owner %q, state %q", moved.UserId, moved.GetStatus().GetState())
	}
	e.waitAcked(tr, last)
	if docs := e.docs("audit.enriched"); len(docs) != 2 {
		t.Fatalf("after the move the trigger handled %d of the 2 events captured while it was stopped", len(docs))
	}
}
