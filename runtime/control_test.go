package runtime_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/runtime"
)

// start runs a server with an embedded source and a jsonl sink.
func start(t *testing.T, dir string) *runtime.Godwit {
	t.Helper()
	cfg, err := config.Parse([]byte(`
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources: [{id: shop, uri: "lungo:source.lungo"}]
sinks: [{id: events, type: jsonl, jsonl: {path: events.jsonl}}]
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return srv
}

func get(t *testing.T, srv *runtime.Godwit, path string) *http.Response {
	t.Helper()
	resp, err := http.Get("http://" + srv.HTTP.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestGodwit_MetricsCountWhatWasWritten(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, dir)
	select {
	case <-srv.Sources()[0].Ready():
	case <-time.After(testwait.Long):
		t.Fatal("source did not start")
	}
	conn, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const n = 25
	for i := range n {
		if _, err := conn.Client.Database("shop").Collection("orders").InsertOne(context.Background(), bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	if err := srv.Runners()[0].WaitAcked(ctx, n); err != nil {
		t.Fatal(err)
	}

	resp := get(t, srv, "/metrics")
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	value := func(name, label, want string) float64 {
		t.Helper()
		f, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == want {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
		}
		t.Fatalf("no %s{%s=%q}", name, label, want)
		return 0
	}
	if got := value("godwit_events_captured_total", "source", "shop"); got != n {
		t.Errorf("captured = %v, want %d", got, n)
	}
	if got := value("godwit_events_delivered_total", "sink", "events"); got != n {
		t.Errorf("delivered = %v, want %d", got, n)
	}
	if got := value("godwit_sink_backlog_events", "sink", "events"); got != 0 {
		t.Errorf("backlog = %v, want 0", got)
	}
	if got := value("godwit_source_up", "source", "shop"); got != 1 {
		t.Errorf("source_up = %v", got)
	}
	if h := families["godwit_sink_deliver_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
		t.Errorf("no delivery latency observed")
	}
	// Every sink acked everything: retention emptied the outbox.
	if f := families["godwit_outbox_bytes"]; f == nil || f.GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("outbox bytes = %v, want 0 after retention", f)
	}
	if f := families["godwit_outbox_file_bytes"]; f == nil || f.GetMetric()[0].GetGauge().GetValue() <= 0 {
		t.Errorf("outbox file size missing")
	}

	if resp := get(t, srv, "/readyz"); resp.StatusCode != 200 {
		t.Errorf("/readyz = %d while everything runs", resp.StatusCode)
	}

	// Status agrees with the outbox.
	st := srv.Status()
	if st.Outbox.Last != n || st.Sources[0].Captured != n || st.Sinks[0].Acked != n {
		t.Errorf("status = %+v", st)
	}
}

func TestGodwit_Health(t *testing.T) {
	dir := t.TempDir()
	// A source halted by an earlier run (its history was lost).
	if err := os.MkdirAll(filepath.Join(dir, "godwit-data"), 0o755); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(filepath.Join(dir, "godwit-data", "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = ob.UpdateSource("shop", func(s *outbox.SourceState) {
		s.State, s.Reason = outbox.StateHalted, "history lost; run godwit resync"
	})
	ob.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, dir)
	if resp := get(t, srv, "/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz = %d, want 200 (the process is alive)", resp.StatusCode)
	}
	resp := get(t, srv, "/readyz")
	var body struct {
		Ready    bool
		Problems []string
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	// It names the component and its state, not the reason: reasons can
	// quote driver messages (godwit status has them).
	if resp.StatusCode != http.StatusServiceUnavailable || body.Ready || len(body.Problems) != 1 ||
		body.Problems[0] != "source shop: halted" {
		t.Fatalf("/readyz = %d %+v, want 503 naming the halted source", resp.StatusCode, body)
	}
}
