package api_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

const (
	tokAlice = "gdw_alice"
	tokBob   = "gdw_bob"
	tokRoot  = "gdw_root"
	tokCarol = "gdw_carol"
)

func securityTokens(carolNamespaces ...string) []auth.Token {
	if carolNamespaces == nil {
		carolNamespaces = []string{"shop.*", "audit.*"}
	}
	return []auth.Token{
		{User: "alice", SHA256: auth.Hash(tokAlice)},
		{User: "bob", SHA256: auth.Hash(tokBob)},
		{User: "root", Role: auth.RoleAdmin, SHA256: auth.Hash(tokRoot)},
		{User: "carol", SHA256: auth.Hash(tokCarol), Sources: []string{"src"}, Namespaces: carolNamespaces},
	}
}

func (a *auditLog) all() []trigger.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func (c client) createFunction(t *testing.T, name string, module []byte) *pb.Function {
	t.Helper()
	f, err := c.fc.CreateFunction(ctxT(t), &pb.CreateFunctionRequest{Function: &pb.Function{Name: name, Wasm: module}})
	if err != nil {
		t.Fatalf("create function %s: %v", name, err)
	}
	return f
}

func (c client) createTrigger(t *testing.T, tr *pb.Trigger) *pb.Trigger {
	t.Helper()
	got, err := c.tc.CreateTrigger(ctxT(t), &pb.CreateTriggerRequest{Trigger: tr})
	if err != nil {
		t.Fatalf("create trigger %s: %v", tr.Name, err)
	}
	return got
}

// notFoundLike asserts that err is the NotFound an unknown id gets, with
// the id in the message replaced: a guessed id must not be told apart from
// one that does not exist.
func notFoundLike(t *testing.T, err, unknown error, id, unknownID string) {
	t.Helper()
	st, un := status.Convert(err), status.Convert(unknown)
	if st.Code() != codes.NotFound || un.Code() != codes.NotFound {
		t.Fatalf("got %v (unknown id: %v), want NotFound for both", err, unknown)
	}
	if strings.ReplaceAll(st.Message(), id, "ID") != strings.ReplaceAll(un.Message(), unknownID, "ID") {
		t.Fatalf("another user's id answers %q, an unknown id %q: they must read the same", st.Message(), un.Message())
	}
}

// TestServices_Isolation: with tokens, bob cannot read, change, run, or
// attach to alice's triggers and functions by their ids; an admin can.
func TestServices_Isolation(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{tokens: securityTokens()})
	ctx := ctxT(t)
	alice, bob, root, anon := e.as(tokAlice), e.as(tokBob), e.as(tokRoot), e.as("")

	fn := alice.createFunction(t, "audit", guests["auditenricher"])
	tr := dbTrigger("orders", fn.Id, &pb.DatabaseConfig{Database: "shop", Collection: "orders"}, "audit.*")
	tr.UserId = ""
	tr = alice.createTrigger(t, tr)
	logins := alice.createTrigger(t, &pb.Trigger{Name: "logins", TriggerType: pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION, FunctionId: fn.Id, Enabled: true,
		Config: &pb.Trigger_Authentication{Authentication: &pb.AuthenticationConfig{OperationTypes: []string{"login"}}},
		Writes: &pb.WriteConfig{DataSource: "src", Namespaces: []string{"audit.*"}}})

	t.Run("NoToken", func(t *testing.T) {
		_, err := anon.fc.CreateFunction(ctx, &pb.CreateFunctionRequest{Function: &pb.Function{Name: "f", Wasm: abiWasm}})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("create without a token: %v", err)
		}
		s, err := anon.tc.QueryTriggers(ctx, &pb.QueryTriggersRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("query without a token: %v", err)
		}
	})
	t.Run("OwnerComesFromTheToken", func(t *testing.T) {
		if fn.UserId != "alice" || tr.FunctionId != fn.Id {
			t.Fatalf("function owned by %q", fn.UserId)
		}
		got, err := alice.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
		if err != nil || got.UserId != "alice" {
			t.Fatalf("trigger owned by %v (%v)", got.GetUserId(), err)
		}
		for _, who := range []client{alice, root} {
			_, err := who.fc.CreateFunction(ctx, &pb.CreateFunctionRequest{Function: &pb.Function{UserId: "bob", Name: "planted", Wasm: abiWasm}})
			wantCode(t, err, codes.PermissionDenied, "user_id")
		}
		planted := dbTrigger("planted", fn.Id, &pb.DatabaseConfig{})
		planted.UserId = "bob"
		_, err = alice.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: planted})
		wantCode(t, err, codes.PermissionDenied, "user_id")
	})
	t.Run("OthersIdsAreNotFound", func(t *testing.T) {
		const nope = "5f0000000000000000000000"
		for _, tc := range []struct {
			name string
			call func(id string) error
			id   string
		}{
			{"GetTrigger", func(id string) error { _, err := bob.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: id}); return err }, tr.Id},
			{"UpdateTrigger", func(id string) error {
				u := dbTrigger("stolen", fn.Id, &pb.DatabaseConfig{})
				u.Id, u.UserId = id, ""
				_, err := bob.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: u})
				return err
			}, tr.Id},
			{"EnableTrigger", func(id string) error {
				_, err := bob.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: id})
				return err
			}, tr.Id},
			{"DisableTrigger", func(id string) error {
				_, err := bob.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: id})
				return err
			}, tr.Id},
			{"ListDeadLetters", func(id string) error {
				stream, err := bob.tc.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Id: id})
				if err == nil {
					_, err = stream.Recv()
				}
				return err
			}, tr.Id},
			{"RetryDeadLetters", func(id string) error {
				_, err := bob.tc.RetryDeadLetters(ctx, &pb.RetryDeadLettersRequest{Id: id})
				return err
			}, tr.Id},
			{"DeleteTrigger", func(id string) error {
				_, err := bob.tc.DeleteTrigger(ctx, &pb.DeleteTriggerRequest{Id: id})
				return err
			}, tr.Id},
			{"GetFunction", func(id string) error {
				_, err := bob.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: id, IncludeWasm: true})
				return err
			}, fn.Id},
			{"UpdateFunction", func(id string) error {
				_, err := bob.fc.UpdateFunction(ctx, &pb.UpdateFunctionRequest{Function: &pb.Function{Id: id, Wasm: abiWasm}})
				return err
			}, fn.Id},
			{"EnableFunction", func(id string) error {
				_, err := bob.fc.EnableFunction(ctx, &pb.EnableFunctionRequest{Id: id})
				return err
			}, fn.Id},
			{"DisableFunction", func(id string) error {
				_, err := bob.fc.DisableFunction(ctx, &pb.DisableFunctionRequest{Id: id})
				return err
			}, fn.Id},
			{"DeleteFunction", func(id string) error {
				_, err := bob.fc.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: id})
				return err
			}, fn.Id},
			{"ExecuteFunction", func(id string) error {
				_, err := bob.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{FunctionId: id, Event: `{"operationType": "insert"}`})
				return err
			}, fn.Id},
			// Attaching: a trigger of bob's calling alice's function.
			{"CreateTriggerWithOthersFunction", func(id string) error {
				u := dbTrigger("attach", id, &pb.DatabaseConfig{})
				u.UserId = ""
				_, err := bob.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: u})
				return err
			}, fn.Id},
		} {
			t.Run(tc.name, func(t *testing.T) {
				notFoundLike(t, tc.call(tc.id), tc.call(nope), tc.id, nope)
			})
		}
		// And nothing of alice's changed.
		got, err := alice.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: tr.Id})
		if err != nil || !got.Enabled || got.Name != "orders" {
			t.Fatalf("alice's trigger after bob's attempts: %v %v", got, err)
		}
		f, err := alice.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: fn.Id})
		if err != nil || f.WasmSha256 != fn.WasmSha256 || !f.Enabled {
			t.Fatalf("alice's function after bob's attempts: %v %v", f, err)
		}
	})
	t.Run("RepointingOwnTriggerToOthersFunction", func(t *testing.T) {
		own := bob.createFunction(t, "own", abiWasm)
		mine := dbTrigger("mine", own.Id, &pb.DatabaseConfig{})
		mine.UserId = ""
		mt := bob.createTrigger(t, mine)
		mt.FunctionId, mt.Status = fn.Id, nil
		_, err := bob.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: mt})
		wantCode(t, err, codes.NotFound, "function_id")
	})
	t.Run("Queries", func(t *testing.T) {
		names := func(c client, user string) ([]string, error) {
			s, err := c.tc.QueryTriggers(ctx, &pb.QueryTriggersRequest{UserId: user})
			if err != nil {
				return nil, err
			}
			var out []string
			for {
				tr, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return out, nil
				}
				if err != nil {
					return out, err
				}
				out = append(out, tr.UserId+"/"+tr.Name)
			}
		}
		if got, err := names(bob, ""); err != nil || slices.Contains(got, "alice/orders") || !slices.Contains(got, "bob/mine") {
			t.Fatalf("bob lists %v (%v): only his own", got, err)
		}
		if _, err := names(bob, "alice"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("bob listing alice's: %v", err)
		}
		if got, err := names(root, ""); err != nil || !slices.Contains(got, "alice/orders") || !slices.Contains(got, "bob/mine") {
			t.Fatalf("the admin lists %v (%v): everyone's", got, err)
		}
		if got, err := names(root, "alice"); err != nil || !slices.Equal(got, []string{"alice/logins", "alice/orders"}) {
			t.Fatalf("the admin filtering by alice: %v (%v)", got, err)
		}
	})
	t.Run("ReportAuthEventRunsOnlyOwnTriggers", func(t *testing.T) {
		report := func(c client) []string {
			res, err := c.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc", UserId: "someone", Wait: true})
			if err != nil {
				t.Fatal(err)
			}
			return res.Triggered
		}
		if got := report(bob); len(got) != 0 {
			t.Fatalf("bob's report ran %v", got)
		}
		if got := report(alice); !slices.Equal(got, []string{logins.Id}) {
			t.Fatalf("alice's report ran %v", got)
		}
		if got := report(root); !slices.Equal(got, []string{logins.Id}) {
			t.Fatalf("the admin's report ran %v", got)
		}
	})
	t.Run("AdminChangesAnyoneAndIsAudited", func(t *testing.T) {
		got, err := root.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id})
		if err != nil || got.Enabled || got.UserId != "alice" {
			t.Fatalf("admin disabling alice's trigger: %v %v", got, err)
		}
		var found bool
		for _, ev := range e.audits.all() {
			if ev.Kind == trigger.AuditTriggerChanged && ev.Action == "disable" && ev.TriggerID == tr.Id {
				found = ev.Actor == "root" && ev.UserID == "alice" && strings.Contains(ev.Detail, "disabled by root (owner alice)")
			}
		}
		if !found {
			t.Fatalf("no audit of root disabling alice's trigger in %+v", e.audits.all())
		}
	})
}

// TestServices_AuditsEveryChange: every create, update, enable, disable
// and delete of a trigger or function is audited once, after it is stored.
func TestServices_AuditsEveryChange(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("audit", abiWasm)
	tr := e.createTrigger(dbTrigger("t", fn.Id, &pb.DatabaseConfig{}))
	tr.Name, tr.Status = "renamed", nil
	steps := []func() error{
		func() error { _, err := e.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: tr}); return err },
		func() error { _, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id}); return err },
		func() error { _, err := e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: tr.Id}); return err },
		func() error { _, err := e.tc.DeleteTrigger(ctx, &pb.DeleteTriggerRequest{Id: tr.Id}); return err },
		func() error {
			_, err := e.fc.UpdateFunction(ctx, &pb.UpdateFunctionRequest{Function: &pb.Function{Id: fn.Id, Name: "audit2"}})
			return err
		},
		func() error { _, err := e.fc.DisableFunction(ctx, &pb.DisableFunctionRequest{Id: fn.Id}); return err },
		func() error { _, err := e.fc.EnableFunction(ctx, &pb.EnableFunctionRequest{Id: fn.Id}); return err },
		func() error { _, err := e.fc.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: fn.Id}); return err },
		// Refused changes are not audited.
		func() error {
			_, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: tr.Id})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("disable a deleted trigger: %v", err)
			}
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, ev := range e.audits.all() {
		name := ev.TriggerName + ev.FunctionName
		got = append(got, ev.Kind+":"+ev.Action+":"+name+":"+ev.UserID)
	}
	want := []string{
		"function.changed:create:audit:u1", "trigger.changed:create:t:u1",
		"trigger.changed:update:renamed:u1", "trigger.changed:disable:renamed:u1", "trigger.changed:enable:renamed:u1",
		"trigger.changed:delete:renamed:u1",
		"function.changed:update:audit2:u1", "function.changed:disable:audit2:u1", "function.changed:enable:audit2:u1",
		"function.changed:delete:audit2:u1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("audited\n%v\nwant\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestTriggerService_AllowList: carol may watch and write only src's shop
// and audit databases; triggers reaching further are refused with
// PermissionDenied naming the field. A list narrowed after a restart binds
// the triggers she already has.
func TestTriggerService_AllowList(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, envOptions{tokens: securityTokens(), persist: true})
	ctx := ctxT(t)
	carol := e.as(tokCarol)
	fn := carol.createFunction(t, "audit", guests["auditenricher"])
	mk := func(cfg *pb.DatabaseConfig, writes ...string) *pb.Trigger {
		tr := dbTrigger("t", fn.Id, cfg, writes...)
		tr.UserId = ""
		return tr
	}
	for _, tc := range []struct {
		name  string
		tr    *pb.Trigger
		field string
	}{
		{"OtherSource", mk(&pb.DatabaseConfig{DataSource: "other", Database: "shop"}), "database.data_source"},
		{"OtherDatabase", mk(&pb.DatabaseConfig{Database: "inventory", Collection: "items"}), "database.collection"},
		{"WholeDeployment", mk(&pb.DatabaseConfig{}), "database.database"},
		{"WritesElsewhere", mk(&pb.DatabaseConfig{Database: "shop"}, "notify.*"), "writes.namespaces[0]"},
		{"WritesEverywhere", mk(&pb.DatabaseConfig{Database: "shop"}, "audit.*", "*.*"), "writes.namespaces[1]"},
		{"WritesToOtherSource", func() *pb.Trigger {
			tr := mk(&pb.DatabaseConfig{Database: "shop"}, "audit.*")
			tr.Writes.DataSource = "other"
			return tr
		}(), "writes.data_source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := carol.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: tc.tr})
			wantCode(t, err, codes.PermissionDenied, tc.field)
			if !strings.Contains(err.Error(), "allow-list of user carol") {
				t.Fatalf("the message should say whose allow-list: %v", err)
			}
		})
	}
	ok := carol.createTrigger(t, mk(&pb.DatabaseConfig{Database: "shop"}, "audit.*"))
	t.Run("UpdateOutside", func(t *testing.T) {
		upd := mk(&pb.DatabaseConfig{Database: "shop"}, "notify.*")
		upd.Id = ok.Id
		_, err := carol.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: upd})
		wantCode(t, err, codes.PermissionDenied, "writes.namespaces[0]")
	})
	t.Run("OtherUsersAreNotBound", func(t *testing.T) {
		alice := e.as(tokAlice)
		afn := alice.createFunction(t, "audit", guests["auditenricher"])
		tr := dbTrigger("anything", afn.Id, &pb.DatabaseConfig{DataSource: "other"}, "*.*")
		tr.UserId = ""
		alice.createTrigger(t, tr)
	})
	e.stop()

	// Restarted with carol allowed only shop.orders and no audit writes:
	// her trigger skips shop.items and is denied its writes.
	e = startEnv(t, dir, envOptions{tokens: securityTokens("shop.orders"), persist: true})
	got, err := e.as(tokRoot).tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: ok.Id})
	if err != nil || got.GetStatus().GetState() != "running" {
		t.Fatalf("after restart: %v %v", got, err)
	}
	last := e.add("src",
		event("insert", "shop", "items", int32(1), bson.D{{Key: "_id", Value: int32(1)}}),
		event("insert", "shop", "orders", int32(2), bson.D{{Key: "_id", Value: int32(2)}}),
		event("insert", "shop", "items", int32(3), bson.D{{Key: "_id", Value: int32(3)}}))
	e.waitAcked(ok, last)
	dls, err := e.mgr.DeadLetters(ctxT(t), ok.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || !strings.Contains(dls[0].Error, "not allowed") {
		t.Fatalf("dead letters %+v: want only the shop.orders event, its write refused", dls)
	}
	if got := e.docs("audit.enriched"); len(got) != 0 {
		t.Fatalf("writes outside the narrowed allow-list happened: %v", got)
	}
}

// TestServices_HostileInputs sends what a careless or hostile client
// might: each gets a clear error naming the field, and the service keeps
// answering.
func TestServices_HostileInputs(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{maxModuleBytes: 1 << 20, wasm: wasm.Config{MaxResultBytes: 64 << 10}})
	ctx := ctxT(t)
	hostile, err := os.ReadFile("../wasm/testdata/hostile.wasm")
	if err != nil {
		t.Fatal(err)
	}
	fn := e.createFunction("audit", abiWasm)
	deepArrays := `{"a": ` + strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20) + `}`
	deepDocs := strings.Repeat(`{"a": `, 150) + "1" + strings.Repeat("}", 150)
	unknownImport := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x02\x0c\x01\x06godwit\x01f\x00\x00")
	createFn := func(name string, module []byte) error {
		_, err := e.fc.CreateFunction(ctx, &pb.CreateFunctionRequest{Function: &pb.Function{UserId: "u1", Name: name, Wasm: module}})
		return err
	}
	exec := func(module []byte, event string) (*pb.ExecuteFunctionResponse, error) {
		return e.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{Wasm: module, Event: event})
	}
	for _, tc := range []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"ModuleNotWasm", func() error { return createFn("f", []byte("\x00asm garbage")) }, codes.InvalidArgument, "wasm"},
		{"ModuleTooLarge", func() error { return createFn("f", bytes.Repeat([]byte{0}, 1<<20+1)) }, codes.InvalidArgument, "wasm"},
		{"ModuleImportsUnknownHostFunction", func() error {
			if err := createFn("f", unknownImport); !strings.Contains(err.Error(), "unknown host function godwit.f") {
				t.Errorf("the error should name the import: %v", err)
			}
			return createFn("f", unknownImport)
		}, codes.InvalidArgument, "wasm"},
		{"RequestOverTheMessageLimit", func() error { return createFn("f", bytes.Repeat([]byte{0}, 41<<20)) }, codes.ResourceExhausted, ""},
		{"NameWithNUL", func() error { return createFn("a\x00b", abiWasm) }, codes.InvalidArgument, "name"},
		{"NameUnicode", func() error { return createFn("fünf", abiWasm) }, codes.InvalidArgument, "name"},
		{"NameHuge", func() error { return createFn(strings.Repeat("n", 1<<16), abiWasm) }, codes.InvalidArgument, "name"},
		{"NamePath", func() error { return createFn("../../etc/passwd", abiWasm) }, codes.InvalidArgument, "name"},
		{"IdOperator", func() error {
			_, err := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: `{"$ne": null}`})
			return err
		}, codes.NotFound, "id"},
		{"IdHuge", func() error {
			_, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: strings.Repeat("f", 1<<20)})
			return err
		}, codes.NotFound, "id"},
		{"EventDeepArrays", func() error { _, err := exec(abiWasm, deepArrays); return err }, codes.InvalidArgument, "event"},
		{"EventDeepDocuments", func() error { _, err := exec(abiWasm, deepDocs); return err }, codes.InvalidArgument, "event"},
		{"EventNotJSON", func() error { _, err := exec(abiWasm, `{"a": `); return err }, codes.InvalidArgument, "event"},
		{"EventNotADocument", func() error { _, err := exec(abiWasm, `[1, 2]`); return err }, codes.InvalidArgument, "event"},
		{"MatchDeepArrays", func() error {
			_, err := e.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: dbTrigger("m", fn.Id, &pb.DatabaseConfig{Match: deepArrays})})
			return err
		}, codes.InvalidArgument, "database.match"},
		{"ProjectNotJSON", func() error {
			_, err := e.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: dbTrigger("m", fn.Id, &pb.DatabaseConfig{Project: "{"})})
			return err
		}, codes.InvalidArgument, "database.project"},
		{"AuthDetailsDeep", func() error {
			_, err := e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "p", UserId: "u", Details: deepArrays})
			return err
		}, codes.InvalidArgument, "details"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(), tc.code, tc.field)
		})
	}
	// Functions whose output is malformed fail the call with a clear
	// error; Execute reports it as the function's error.
	for mode, want := range map[string]string{
		"badr": "set_result: not a BSON document",
		"bigr": "set_result of 131072 bytes is more than the limit of 65536",
		"logx": "outside memory",
		"inbd": "code 2",
	} {
		t.Run("GuestOutput_"+mode, func(t *testing.T) {
			res, err := exec(hostile, `{"`+mode+`": 1}`)
			if err != nil || !strings.Contains(res.Error, want) || res.Result != "" || len(res.Actions) != 0 {
				t.Fatalf("execute %s: %v %v, want the error %q and no result or writes", mode, res, err, want)
			}
		})
	}
	t.Run("StillServing", func(t *testing.T) {
		res, err := exec(hostile, `{"echo": {"deep": [[[1]]]}}`)
		if err != nil || res.Error != "" || !strings.Contains(res.Result, "deep") {
			t.Fatalf("a healthy call after all that: %v %v", res, err)
		}
		if _, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: fn.Id}); err != nil {
			t.Fatal(err)
		}
	})
}
