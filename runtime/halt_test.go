package runtime_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/internal/ferrettest"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/internal/wiretest"
	"github.com/godwit-dev/godwit/runtime"
)

// TestGodwit_SourceWithoutChangeStreamsHalts points a source at a server
// that answers a change stream as FerretDB v1.24.2 does (scripted over the
// wire protocol; the official driver runs): the source halts instead of
// retrying forever, and the plain-words reason is in status, in /readyz's
// problems and in the audit log.
func TestGodwit_SourceWithoutChangeStreamsHalts(t *testing.T) {
	srv := wiretest.Start(t, func(_ context.Context, req wiretest.Request) bson.Raw {
		if req.Command == "aggregate" {
			return wiretest.Error(238, "NotImplemented", "$changeStream is not implemented yet")
		}
		return wiretest.Error(59, "CommandNotFound", "no such command: '"+req.Command+"'")
	})
	reason := sourceHalts(t, srv.URI())
	if !strings.Contains(reason, "$changeStream is not implemented yet") {
		t.Fatalf("reason %q lacks the server's words", reason)
	}
}

// TestGodwit_FerretDBSourceHalts does the same against a real FerretDB
// v1.24.2, whatever it answers: a database-scoped and a deployment-scoped
// source both halt with the plain-words reason.
func TestGodwit_FerretDBSourceHalts(t *testing.T) {
	uri := ferrettest.Start(t).URI
	for _, scope := range []string{"database: shop", "database: shop, collection: orders", ""} {
		t.Run("scope "+scope, func(t *testing.T) {
			t.Logf("halted: %s", sourceHalts(t, uri, scope))
		})
	}
}

// sourceHalts runs a daemon whose one source (id ferret, at uri, with the
// given scope line) must halt because the server has no change streams,
// checks the reason in status, /readyz and the audit log, and returns it.
func sourceHalts(t *testing.T, uri string, scope ...string) string {
	t.Helper()
	sc := "database: shop"
	if len(scope) > 0 {
		sc = scope[0]
	}
	if sc != "" {
		sc = ", " + sc
	}
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
api: {http_addr: "off", grpc_addr: "off"}
sources:
  - {id: ferret, uri: "`+uri+`"`+sc+`}
sinks:
  - {id: audit, type: audit, audit: {path: audit.jsonl}}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	d, err := runtime.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		<-done
		if err := d.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-d.Sources()[0].Halted():
	case <-ctx.Done():
		t.Fatalf("source never halted: %+v", d.Status().Sources)
	}

	const want = "this deployment does not support change streams"
	src := d.Status().Sources[0]
	if src.State != "halted" || !strings.Contains(src.Reason, want) {
		t.Fatalf("status %q %q, want halted with %q", src.State, src.Reason, want)
	}
	problems := strings.Join(httpapi.NotReady(d.Status()), "\n")
	if !strings.Contains(problems, "source ferret is halted: "+want) {
		t.Fatalf("/readyz problems %q lack the halt", problems)
	}
	f, err := os.Open(cfg.Sinks[0].Settings.(*audit.Config).Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var halts []audit.Record
	for r, err := range audit.Query(f, audit.Filter{Classes: []string{audit.ClassCaptureHalted}}) {
		if err != nil {
			t.Fatal(err)
		}
		halts = append(halts, r)
	}
	if len(halts) != 1 || halts[0].Source != "ferret" || halts[0].Message != src.Reason {
		t.Fatalf("capture_halted records %+v, want one with the reason", halts)
	}
	return src.Reason
}
