package runtime_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/runtime"
)

// A pipeline whose initial sync failed is halted, and status says so for
// the pipeline and for its sink alike; the log line names the sink.
func TestGodwit_Status(t *testing.T) {
	t.Run("FailedInitialSyncHaltsTheSink", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// The target already holds a document of the replicated namespace:
		// the initial sync refuses it.
		a, b := openSide(t, ctx, dir, "a.lungo"), openSide(t, ctx, dir, "b.lungo")
		if _, err := a.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "from", Value: "a"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "from", Value: "b"}}); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources:
  - {id: a, uri: "lungo:a.lungo"}
sinks:
  - {id: a2b, type: replicate, replicate: {source: a, target: "lungo:b.lungo"}}
`), dir)
		if err != nil {
			t.Fatal(err)
		}
		failed := make(chan string, 1)
		var once sync.Once
		log := zerolog.New(lineWriter(func(line string) {
			if strings.Contains(line, "initial sync failed") {
				once.Do(func() { failed <- line })
			}
		}))
		d, err := runtime.Open(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(runCtx) }()
		defer func() {
			stop()
			<-done
			_ = d.Close(context.Background())
		}()
		var line string
		select {
		case line = <-failed:
		case <-ctx.Done():
			t.Fatal("the initial sync did not fail")
		}
		if !strings.Contains(line, `"sink":"a2b"`) {
			t.Fatalf("log line %s does not name the sink", line)
		}
		st := d.Status()
		if len(st.Pipelines) != 1 || st.Pipelines[0].Phase != replicate.PhaseHalted {
			t.Fatalf("pipelines %+v, want a2b halted", st.Pipelines)
		}
		if len(st.Sinks) != 1 || !st.Sinks[0].Halted || !strings.Contains(st.Sinks[0].LastError, "not empty") {
			t.Fatalf("sinks %+v, want a2b halted with the reason", st.Sinks)
		}
	})
}

// lineWriter hands every log line to fn.
type lineWriter func(string)

func (w lineWriter) Write(p []byte) (int, error) {
	w(string(p))
	return len(p), nil
}
