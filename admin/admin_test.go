package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/godwit-dev/godwit/admin"
	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/outbox"
	adminpb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
	eventpb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
	"github.com/godwit-dev/godwit/status"
	"github.com/godwit-dev/godwit/trigger"
)

const sentinel = "S3ntinel-Pa55word"

// statusConfig has an embedded source, a source on a real URI with a
// password that never connects, a jsonl and an audit sink.
var statusConfig = fmt.Sprintf(`
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
outbox: {max_bytes: 1000000}
sources:
  - {id: shop, uri: "lungo:source.lungo"}
  - {id: remote, uri: "mongodb://godwit:%s@127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"}
sinks:
  - {id: events, type: jsonl, jsonl: {path: events.jsonl}}
  - {id: audit, type: audit, audit: {path: audit.jsonl}}
`, sentinel)

func TestService_Status(t *testing.T) {
	dir := t.TempDir()
	srv := runtimetest.Start(t, dir, statusConfig)
	ctx, cancel := context.WithTimeout(context.Background(), runtimetest.Wait)
	defer cancel()

	// A database trigger, a connected durable subscription and one whose
	// subscriber went away.
	wasm, err := guests.Wasm("notifier")
	if err != nil {
		t.Fatal(err)
	}
	fn, err := srv.Triggers.CreateFunction(ctx, trigger.Function{UserID: "ann", Name: "notifier", Wasm: wasm})
	if err != nil {
		t.Fatal(err)
	}
	trg, err := srv.Triggers.CreateTrigger(ctx, trigger.Trigger{UserID: "ann", Name: "notify-items", Type: trigger.TypeDatabase,
		FunctionID: fn.ID, Enabled: true, Database: &trigger.DatabaseConfig{DataSource: "shop", Database: "inventory", Collection: "items"},
		Writes: trigger.Writes{Namespaces: []string{"notify.*"}}})
	if err != nil {
		t.Fatal(err)
	}
	conn := srv.Dial(t)
	events := eventpb.NewEventServiceClient(conn)
	var app eventpb.EventService_SubscribeClient
	for _, name := range []string{"gone", "app"} {
		sctx, scancel := context.WithCancel(ctx)
		stream, err := events.Subscribe(sctx, &eventpb.SubscribeRequest{DurableName: name})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.GetStarted() == nil {
			t.Fatalf("subscribe %s: %v %v", name, m, err)
		}
		if name == "gone" {
			scancel()
		} else {
			app = stream
			defer scancel()
		}
	}

	const n = 12
	src := runtimetest.Source(t, dir, "source.lungo")
	for i := range n {
		if _, err := src.Database("shop").Collection("orders").InsertOne(ctx, bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range srv.Runners() {
		if err := r.WaitAcked(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Triggers.WaitAcked(ctx, trg.ID, n); err != nil {
		t.Fatal(err)
	}
	// The connected subscriber has received every event.
	for got := 0; got < n; {
		m, err := app.Recv()
		if err != nil {
			t.Fatalf("app subscription after %d events: %v", got, err)
		}
		if m.GetEvent() != nil {
			got++
		}
	}

	res, err := adminpb.NewAdminServiceClient(conn).Status(ctx, &adminpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := protojson.Marshal(res)
	if strings.Contains(string(all), sentinel) {
		t.Fatalf("status carries the password: %s", all)
	}

	t.Run("Outbox", func(t *testing.T) {
		st := srv.Outbox().Stats()
		o := res.Outbox
		// The durable subscriptions hold every event: nothing was deleted.
		if o.LastSequence != n || o.OldestSequence != 1 || o.Bytes != st.Bytes || o.MaxBytes != 1000000 ||
			o.FileBytes <= 0 || o.Paused || o.Path != srv.Outbox().Path() {
			t.Fatalf("outbox status %v, outbox %+v", o, st)
		}
	})

	t.Run("Sources", func(t *testing.T) {
		if len(res.Sources) != 2 {
			t.Fatalf("sources = %v", res.Sources)
		}
		shop, remote := res.Sources[0], res.Sources[1]
		if shop.Id != "shop" || shop.State != "running" || shop.Captured != n || shop.Uri != "lungo:source.lungo" ||
			shop.LastClusterTime == nil || time.Since(shop.LastClusterTime.AsTime()) > time.Hour {
			t.Errorf("shop = %v", shop)
		}
		if remote.Id != "remote" || remote.State == "running" || !strings.Contains(remote.Uri, "godwit:xxxxx@127.0.0.1:1") {
			t.Errorf("remote = %v", remote)
		}
		if len(res.Problems) != 1 || !strings.HasPrefix(res.Problems[0], "source remote is") {
			t.Errorf("problems = %q, want the remote source", res.Problems)
		}
	})

	t.Run("Sinks", func(t *testing.T) {
		if len(res.Sinks) != 2 {
			t.Fatalf("sinks = %v", res.Sinks)
		}
		for i, want := range []string{"jsonl", "audit"} {
			s := res.Sinks[i]
			if s.Type != want || s.Acked != n || s.Backlog != 0 || s.Halted || s.DeadLetters != 0 {
				t.Errorf("sink %d = %v", i, s)
			}
		}
	})

	t.Run("Triggers", func(t *testing.T) {
		if len(res.Triggers) != 1 {
			t.Fatalf("triggers = %v", res.Triggers)
		}
		tr := res.Triggers[0]
		if tr.Id != trg.ID || tr.Name != "notify-items" || tr.UserId != "ann" || tr.Type != "database" ||
			tr.State != "running" || tr.Acked != n || tr.Backlog != 0 {
			t.Errorf("trigger = %v", tr)
		}
	})

	t.Run("Subscriptions", func(t *testing.T) {
		if len(res.Subscriptions) != 2 {
			t.Fatalf("subscriptions = %v", res.Subscriptions)
		}
		app, gone := res.Subscriptions[0], res.Subscriptions[1]
		if app.Name != "app" || !app.Durable || !app.Connected || !strings.HasPrefix(app.Peer, "127.0.0.1:") || app.Sent != n {
			t.Errorf("app = %v", app)
		}
		if gone.Name != "gone" || !gone.Durable || gone.Connected || gone.Cursor != 0 || gone.Backlog != n {
			t.Errorf("gone = %v", gone)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + srv.HTTP.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p expfmt.TextParser
		fams, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		value := func(name, label, want string) float64 {
			for _, m := range fams[name].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == want {
						return m.GetGauge().GetValue() + m.GetCounter().GetValue()
					}
				}
			}
			t.Errorf("no %s{%s=%q}", name, label, want)
			return -1
		}
		if v := value("godwit_subscription_backlog_events", "subscription", "gone"); v != n {
			t.Errorf("backlog of gone = %v, want %d", v, n)
		}
		if v := value("godwit_subscriptions_connected", "durable", "true"); v != 1 {
			t.Errorf("connected durable streams = %v, want 1", v)
		}
		if v := value("godwit_trigger_backlog_events", "name", "notify-items"); v != 0 {
			t.Errorf("trigger backlog = %v", v)
		}
		if v := value("godwit_trigger_up", "name", "notify-items"); v != 1 {
			t.Errorf("trigger up = %v", v)
		}
		if v := value("godwit_trigger_log_dropped_lines_total", "name", "notify-items"); v != 0 {
			t.Errorf("log lines dropped = %v, want 0", v)
		}
		if fams["godwit_functions_memory_budget_bytes"].GetMetric()[0].GetGauge().GetValue() < 256<<20 {
			t.Errorf("functions' memory budget %v, want the default of at least 256 MiB", fams["godwit_functions_memory_budget_bytes"])
		}
		if len(fams["godwit_functions_memory_bytes"].GetMetric()) != 1 {
			t.Errorf("no godwit_functions_memory_bytes")
		}
	})
}

func TestService_Status_AdminsOnly(t *testing.T) {
	svc := admin.New(admin.Deps{})
	ctx := auth.WithIdentity(context.Background(), auth.Identity{User: "bob", Role: auth.RoleUser})
	if _, err := svc.Status(ctx, &adminpb.StatusRequest{}); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("Status as a user = %v, want PermissionDenied", err)
	}
}

// TestService_WatchHealth marks the source halted in the outbox, as
// capture does when it halts, while the server runs.
func TestService_WatchHealth(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), runtimetest.Config)
	hc := healthpb.NewHealthClient(srv.Dial(t))
	ctx, cancel := context.WithTimeout(context.Background(), runtimetest.Wait)
	defer cancel()
	await := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		for {
			res, err := w.Recv()
			if err != nil {
				t.Fatalf("health of %q never became %s: %v", service, want, err)
			}
			if res.Status == want {
				return
			}
		}
	}
	await("", healthpb.HealthCheckResponse_SERVING)
	await("source/shop", healthpb.HealthCheckResponse_SERVING)
	await("sink/events", healthpb.HealthCheckResponse_SERVING)

	err := srv.Outbox().UpdateSource("shop", func(s *outbox.SourceState) {
		s.State, s.Reason = outbox.StateHalted, "history lost; run godwit resync"
	})
	if err != nil {
		t.Fatal(err)
	}
	await("", healthpb.HealthCheckResponse_NOT_SERVING)
	await("source/shop", healthpb.HealthCheckResponse_NOT_SERVING)
	await("sink/events", healthpb.HealthCheckResponse_SERVING)
	await("godwit.event.v1.EventService", healthpb.HealthCheckResponse_SERVING)
}

// setter records health changes.
type setter chan [2]any

func (s setter) SetServing(name string, ok bool) { s <- [2]any{name, ok} }

func TestWatchHealth(t *testing.T) {
	states := make(chan status.Snapshot, 1)
	cur := status.Snapshot{}
	snapshot := func() status.Snapshot {
		select {
		case cur = <-states:
		default:
		}
		return cur
	}
	src := func(state capture.State) status.Snapshot {
		st := status.Snapshot{Sources: []status.Source{{}}, Sinks: []status.Sink{{}}}
		st.Sources[0].ID, st.Sources[0].State = "a", state
		st.Sinks[0].ID = "s"
		return st
	}
	states <- src("running")
	got := make(setter, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.WatchHealth(ctx, snapshot, got, time.Millisecond) }()
	defer func() { cancel(); <-done }()

	want := func(wants map[string]bool) {
		t.Helper()
		for len(wants) > 0 {
			select {
			case c := <-got:
				name, ok := c[0].(string), c[1].(bool)
				if w, listed := wants[name]; !listed || w != ok {
					t.Fatalf("SetServing(%q, %v), want %v", name, ok, wants)
				}
				delete(wants, name)
			case <-time.After(runtimetest.Wait):
				t.Fatalf("still waiting for %v", wants)
			}
		}
	}
	want(map[string]bool{"": true, "source/a": true, "sink/s": true})
	states <- src("halted")
	want(map[string]bool{"": false, "source/a": false}) // only changes are set
	states <- src("running")
	want(map[string]bool{"": true, "source/a": true})
}
