package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
)

// wantCode asserts a gRPC error's code and that its message starts with
// the field it names.
func wantCode(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.HasPrefix(st.Message(), field) {
		t.Fatalf("got %v %q, want %v naming %q", st.Code(), st.Message(), code, field)
	}
}

func collect[T any](t *testing.T, stream grpc.ServerStreamingClient[T], err error) []*T {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []*T
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

func TestTriggerService_BadRequests(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("audit", guests["auditenricher"])
	good := func() *pb.Trigger {
		return dbTrigger("t1", fn.Id, &pb.DatabaseConfig{Database: "shop"}, "audit.*")
	}
	for _, tc := range []struct {
		name  string
		edit  func(*pb.Trigger)
		code  codes.Code
		field string
	}{
		{"NameWithSpace", func(tr *pb.Trigger) { tr.Name = "bad name" }, codes.InvalidArgument, "name"},
		{"NameTooLong", func(tr *pb.Trigger) { tr.Name = strings.Repeat("a", 65) }, codes.InvalidArgument, "name"},
		{"NoUser", func(tr *pb.Trigger) { tr.UserId = "" }, codes.InvalidArgument, "user_id"},
		{"NoType", func(tr *pb.Trigger) { tr.TriggerType = pb.TriggerType_TRIGGER_TYPE_UNSPECIFIED }, codes.InvalidArgument, "trigger_type"},
		{"UnknownFunction", func(tr *pb.Trigger) { tr.FunctionId = "nope" }, codes.NotFound, "function_id"},
		{"OtherUsersFunction", func(tr *pb.Trigger) { tr.UserId = "u2" }, codes.NotFound, "function_id"},
		{"UnknownDataSource", func(tr *pb.Trigger) { tr.GetDatabase().DataSource = "nope" }, codes.InvalidArgument, "database.data_source"},
		{"BadOperationType", func(tr *pb.Trigger) { tr.GetDatabase().OperationTypes = []string{"insert", "drop"} }, codes.InvalidArgument, "database.operation_types[1]"},
		{"MatchNotJSON", func(tr *pb.Trigger) { tr.GetDatabase().Match = "{qty: " }, codes.InvalidArgument, "database.match"},
		{"MatchUnknownOperator", func(tr *pb.Trigger) { tr.GetDatabase().Match = `{"qty": {"$bogus": 1}}` }, codes.InvalidArgument, "database.match"},
		{"BadProjection", func(tr *pb.Trigger) { tr.GetDatabase().Project = `{"a": 1, "b": 0}` }, codes.InvalidArgument, "database.project"},
		{"BadWriteGlob", func(tr *pb.Trigger) { tr.Writes.Namespaces = []string{".x"} }, codes.InvalidArgument, "writes.namespaces[0]"},
		{"BadCron", func(tr *pb.Trigger) {
			tr.TriggerType = pb.TriggerType_TRIGGER_TYPE_SCHEDULED
			tr.Config = &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "61 * * * *"}}
		}, codes.InvalidArgument, "scheduled.schedule"},
		{"CronWithTimeZone", func(tr *pb.Trigger) {
			tr.TriggerType = pb.TriggerType_TRIGGER_TYPE_SCHEDULED
			tr.Config = &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "CRON_TZ=Europe/Paris 0 * * * *"}}
		}, codes.InvalidArgument, "scheduled.schedule"},
		{"AuthWithoutOperations", func(tr *pb.Trigger) {
			tr.TriggerType = pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION
			tr.Config = &pb.Trigger_Authentication{Authentication: &pb.AuthenticationConfig{}}
		}, codes.InvalidArgument, "authentication.operation_types"},
	} {
		t.Run("Create_"+tc.name, func(t *testing.T) {
			tr := good()
			tc.edit(tr)
			_, err := e.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: tr})
			wantCode(t, err, tc.code, tc.field)
		})
	}
	t.Run("DuplicateName", func(t *testing.T) {
		e.createTrigger(good())
		_, err := e.tc.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: good()})
		wantCode(t, err, codes.AlreadyExists, "name")
	})
	t.Run("UnknownID", func(t *testing.T) {
		_, err := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.tc.DeleteTrigger(ctx, &pb.DeleteTriggerRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: &pb.Trigger{Id: "nope"}})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{})
		wantCode(t, err, codes.InvalidArgument, "id")
	})
	t.Run("UpdateChangesType", func(t *testing.T) {
		tr := e.createTrigger(dbTrigger("t2", fn.Id, &pb.DatabaseConfig{}))
		tr.TriggerType = pb.TriggerType_TRIGGER_TYPE_SCHEDULED
		tr.Config = &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "* * * * *"}}
		_, err := e.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: tr})
		wantCode(t, err, codes.InvalidArgument, "trigger_type")
	})
}

func TestFunctionService_BadRequests(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	create := func(name string, module []byte) error {
		_, err := e.fc.CreateFunction(ctx, &pb.CreateFunctionRequest{Function: &pb.Function{UserId: "u1", Name: name,
			FunctionType: pb.FunctionType_FUNCTION_TYPE_WASM, Wasm: module}})
		return err
	}
	t.Run("BadName", func(t *testing.T) { wantCode(t, create("a/b", abiWasm), codes.InvalidArgument, "name") })
	t.Run("NotWasm", func(t *testing.T) { wantCode(t, create("f", []byte("not wasm")), codes.InvalidArgument, "wasm") })
	t.Run("NoWasm", func(t *testing.T) { wantCode(t, create("f", nil), codes.InvalidArgument, "wasm") })
	t.Run("NotOurABI", func(t *testing.T) {
		wantCode(t, create("f", []byte("\x00asm\x01\x00\x00\x00")), codes.InvalidArgument, "wasm")
	})
	t.Run("DuplicateName", func(t *testing.T) {
		if err := create("dup", abiWasm); err != nil {
			t.Fatal(err)
		}
		wantCode(t, create("dup", abiWasm), codes.AlreadyExists, "name")
	})
	t.Run("UnknownID", func(t *testing.T) {
		_, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.fc.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: "nope"})
		wantCode(t, err, codes.NotFound, "id")
		_, err = e.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{FunctionId: "nope", Event: "{}"})
		wantCode(t, err, codes.NotFound, "function_id")
	})
	t.Run("ExecuteBadEvent", func(t *testing.T) {
		_, err := e.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{Wasm: abiWasm, Event: "{nope"})
		wantCode(t, err, codes.InvalidArgument, "event")
	})
}

func TestServices_CRUD(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("audit", guests["auditenricher"])
	fn2 := e.createFunction("notify", guests["auditenricher"])
	if fn.WasmSize != int64(len(guests["auditenricher"])) || fn.WasmSha256 == "" || !fn.Enabled || len(fn.Wasm) != 0 {
		t.Fatalf("created function %+v: want size, sha, enabled, no bytes", fn)
	}
	a := e.createTrigger(dbTrigger("orders", fn.Id, &pb.DatabaseConfig{Database: "shop", Collection: "orders"}, "audit.*"))
	b := e.createTrigger(dbTrigger("items", fn2.Id, &pb.DatabaseConfig{Database: "inventory"}, "notify.*"))
	c := e.createTrigger(&pb.Trigger{Name: "nightly", TriggerType: pb.TriggerType_TRIGGER_TYPE_SCHEDULED, FunctionId: fn.Id,
		Config: &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: "0 3 * * *"}}})
	if a.Id == "" || a.GetStatus().GetState() != "running" || c.GetStatus().GetState() != "disabled" {
		t.Fatalf("created: %v / %v", a, c)
	}

	t.Run("Get", func(t *testing.T) {
		got, err := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: a.Id})
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "orders" || got.GetDatabase().Collection != "orders" || got.FunctionId != fn.Id {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("Query", func(t *testing.T) {
		names := func(req *pb.QueryTriggersRequest) []string {
			s, err := e.tc.QueryTriggers(ctx, req)
			var out []string
			for _, tr := range collect(t, s, err) {
				out = append(out, tr.Name)
			}
			return out
		}
		for _, tc := range []struct {
			req  *pb.QueryTriggersRequest
			want []string
		}{
			{&pb.QueryTriggersRequest{UserId: "u1"}, []string{"items", "nightly", "orders"}},
			{&pb.QueryTriggersRequest{UserId: "u2"}, nil},
			{&pb.QueryTriggersRequest{FunctionId: fn.Id}, []string{"nightly", "orders"}},
			{&pb.QueryTriggersRequest{TriggerType: pb.TriggerType_TRIGGER_TYPE_SCHEDULED}, []string{"nightly"}},
			{&pb.QueryTriggersRequest{DataSource: "src", Database: "shop"}, []string{"orders"}},
			{&pb.QueryTriggersRequest{Collection: "orders"}, []string{"orders"}},
		} {
			if got := names(tc.req); !slices.Equal(got, tc.want) {
				t.Errorf("query %v: %v, want %v", tc.req, got, tc.want)
			}
		}
		s, err := e.fc.QueryFunctions(ctx, &pb.QueryFunctionsRequest{UserId: "u1", Name: "notify"})
		if got := collect(t, s, err); len(got) != 1 || got[0].Id != fn2.Id {
			t.Errorf("function query: %v", got)
		}
	})
	t.Run("Update", func(t *testing.T) {
		upd := b
		upd.Name = "inventory"
		upd.GetDatabase().OperationTypes = []string{"insert"}
		got, err := e.tc.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: upd})
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "inventory" || !slices.Equal(got.GetDatabase().OperationTypes, []string{"insert"}) || got.CreatedAt.AsTime() != b.CreatedAt.AsTime() {
			t.Fatalf("updated %v", got)
		}
	})
	t.Run("DisableEnable", func(t *testing.T) {
		got, err := e.tc.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: a.Id})
		if err != nil || got.Enabled || got.GetStatus().GetState() != "disabled" {
			t.Fatalf("disable: %v %v", got, err)
		}
		got, err = e.tc.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: a.Id})
		if err != nil || !got.Enabled || got.GetStatus().GetState() != "running" {
			t.Fatalf("enable: %v %v", got, err)
		}
		f, err := e.fc.DisableFunction(ctx, &pb.DisableFunctionRequest{Id: fn.Id})
		if err != nil || f.Enabled {
			t.Fatalf("disable function: %v %v", f, err)
		}
		if got, _ := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: a.Id}); got.GetStatus().GetState() != "waiting" {
			t.Fatalf("trigger of a disabled function is %q, want waiting", got.GetStatus().GetState())
		}
		if _, err := e.fc.EnableFunction(ctx, &pb.EnableFunctionRequest{Id: fn.Id}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("FunctionGetUpdate", func(t *testing.T) {
		got, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: fn2.Id, IncludeWasm: true})
		if err != nil || !bytes.Equal(got.Wasm, guests["auditenricher"]) {
			t.Fatalf("get with wasm: %v", err)
		}
		upd, err := e.fc.UpdateFunction(ctx, &pb.UpdateFunctionRequest{Function: &pb.Function{Id: fn2.Id, Name: "notify2", Wasm: abiWasm}})
		if err != nil || upd.Name != "notify2" || upd.WasmSize != int64(len(abiWasm)) {
			t.Fatalf("update: %v %v", upd, err)
		}
	})
	t.Run("DeleteFunctionInUse", func(t *testing.T) {
		_, err := e.fc.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: fn.Id})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "orders") {
			t.Fatalf("got %v, want FailedPrecondition naming the trigger", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		for _, id := range []string{a.Id, c.Id} {
			if _, err := e.tc.DeleteTrigger(ctx, &pb.DeleteTriggerRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.fc.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: fn.Id}); err != nil {
			t.Fatal(err)
		}
		_, err := e.tc.GetTrigger(ctx, &pb.GetTriggerRequest{Id: a.Id})
		wantCode(t, err, codes.NotFound, "id")
	})
	t.Run("HealthAndReflection", func(t *testing.T) {
		h, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "godwit.trigger.v1.TriggerService"})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", h, err)
		}
		rs, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := rs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.Name)
		}
		for _, want := range []string{"godwit.trigger.v1.TriggerService", "godwit.trigger.v1.FunctionService", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, missing %s", names, want)
			}
		}
	})
}

// TestFunctionService_LargeModule stores a module above MongoDB's 16 MiB
// document limit and reads it back.
func TestFunctionService_LargeModule(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	// A custom section (id 0) is valid anywhere and ignored by compilers.
	pad := 16<<20 + 12345
	big := append([]byte(nil), abiWasm...)
	big = append(big, 0)
	big = appendLEB(big, uint64(pad+2))
	big = append(big, 1, 'x')
	big = append(big, bytes.Repeat([]byte{0xAB}, pad)...)
	f := e.createFunction("big", big)
	got, err := e.fc.GetFunction(ctx, &pb.GetFunctionRequest{Id: f.Id, IncludeWasm: true})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(big)
	if !bytes.Equal(got.Wasm, big) || got.WasmSha256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("read back %d bytes (sha %s), stored %d", len(got.Wasm), got.WasmSha256, len(big))
	}
}

func appendLEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func TestFunctionService_Execute(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("notify", guests["notifier"])
	ev := `{"_id": {"_data": "01"}, "operationType": "insert", "ns": {"db": "shop", "coll": "orders"},
		"documentKey": {"_id": 7}, "fullDocument": {"_id": 7, "status": "paid"}}`
	res, err := e.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{FunctionId: fn.Id, Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != "" || len(res.Actions) != 1 || len(res.Logs) != 1 {
		t.Fatalf("execute: %v", res)
	}
	act := res.Actions[0]
	var doc bson.M
	if err := bson.UnmarshalExtJSON([]byte(act.Document), false, &doc); err != nil {
		t.Fatal(err)
	}
	if act.Kind != "insert" || act.Namespace != "notify.outbox" || doc["topic"] != "orders.insert" || doc["status"] != "paid" {
		t.Fatalf("action %v", act)
	}
	if res.Logs[0].Message != "queued orders.insert notification" {
		t.Fatalf("logs %v", res.Logs)
	}
	if got := e.docs("notify.outbox"); len(got) != 0 {
		t.Fatalf("execute applied its writes: %v", got)
	}
	res, err = e.fc.ExecuteFunction(ctx, &pb.ExecuteFunctionRequest{Wasm: abiWasm, Event: `{"mode": "fail"}`})
	if err != nil || !strings.Contains(res.Error, "asked to fail") {
		t.Fatalf("execute failing function: %v %v", res, err)
	}
}

func TestTriggerService_ReportAuthEvent(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{})
	ctx := ctxT(t)
	fn := e.createFunction("audit", guests["auditenricher"])
	tr := e.createTrigger(&pb.Trigger{Name: "logins", TriggerType: pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION, FunctionId: fn.Id, Enabled: true,
		Config: &pb.Trigger_Authentication{Authentication: &pb.AuthenticationConfig{OperationTypes: []string{"login"}, Providers: []string{"oidc"}}},
		Writes: &pb.WriteConfig{DataSource: "src", Namespaces: []string{"audit.*"}}})
	report := func(op, provider string) (*pb.ReportAuthEventResponse, error) {
		return e.tc.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: op, Provider: provider, UserId: "alice", Wait: true})
	}
	res, err := report("login", "oidc")
	if err != nil || !slices.Equal(res.Triggered, []string{tr.Id}) || len(res.Failed) != 0 {
		t.Fatalf("report login: %v %v", res, err)
	}
	got := e.docs("audit.enriched")
	if len(got) != 1 || got[0]["op"] != "login" {
		t.Fatalf("audit.enriched %v, want the login", got)
	}
	for _, tc := range [][2]string{{"login", "local-userpass"}, {"create", "oidc"}} {
		if res, err := report(tc[0], tc[1]); err != nil || len(res.Triggered) != 0 {
			t.Fatalf("report %v fired %v (%v)", tc, res, err)
		}
	}
	_, err = report("logout", "oidc")
	wantCode(t, err, codes.InvalidArgument, "operation_type")
}

var _ = context.Background
