package runtime_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/runtime"
)

const pipelineConfig = `
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources: [{id: shop, uri: "lungo:source.lungo"}]
sinks:
  - {id: events, type: jsonl, jsonl: {path: events.jsonl}}
  - {id: copy, type: replicate, replicate: {source: shop, target: "lungo:target.lungo"}}
`

func open(t *testing.T, yaml string) *runtime.Godwit {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := runtime.Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func names(states []runtime.State) []string {
	var out []string
	for _, s := range states {
		out = append(out, s.Name)
	}
	return out
}

func TestGodwit_Components(t *testing.T) {
	srv := open(t, pipelineConfig)
	defer func() {
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	// Dependencies first: a pipeline's runner after its initial sync, which
	// comes after its source; the listeners last, so they close first.
	want := []string{"outbox", "source shop", "sink events", "sync copy", "sink copy",
		"metadata", "triggers", "events", "audit-api", "http", "grpc", "admin-health"}
	states := srv.Group().States()
	if got := names(states); !slices.Equal(got, want) {
		t.Fatalf("components %v, want %v", got, want)
	}
	for _, st := range states {
		if st.State != runtime.StateWaiting {
			t.Errorf("%s is %s before Run", st.Name, st.State)
		}
	}
	if st, ok := states[1].Status.(capture.Status); !ok || st.ID != "shop" {
		t.Errorf("source shop reports %#v", states[1].Status)
	}
}

func TestGodwit_Run(t *testing.T) {
	t.Run("AFailingComponentStopsEverythingAtOnce", func(t *testing.T) {
		srv := open(t, pipelineConfig)
		g := srv.Group()
		// A component that fails once godwit captures, standing in for a
		// listener or manager that dies early.
		boom := errors.New("listener died")
		fail := runtime.New("flaky", func(ctx context.Context) error {
			select {
			case <-g.Ready("source shop"):
				return boom
			case <-ctx.Done():
				return nil
			}
		}, nil)
		if err := g.Add(fail); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		// The context never ends: only the failure can stop Run.
		go func() { done <- srv.Run(context.Background()) }()
		select {
		case err := <-done:
			if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "flaky: ") {
				t.Fatalf("Run = %v, want the failure naming its component", err)
			}
		case <-time.After(testwait.Long):
			t.Fatal("Run did not return after a component failed")
		}
		for _, st := range g.States() {
			if want := map[bool]string{true: runtime.StateFailed, false: runtime.StateStopped}[st.Name == "flaky"]; st.State != want &&
				!(st.Name == "sink copy" && st.State == runtime.StateBlocked) && !(st.Name == "sync copy" && st.State == runtime.StateStopped) {
				t.Errorf("%s is %s after the failure, want %s", st.Name, st.State, want)
			}
		}
		if err := srv.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
