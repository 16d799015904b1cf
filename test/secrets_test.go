package test

// Issue 16 hole 3: a session token in a URI (authMechanismProperties=
// AWS_SESSION_TOKEN:…) was printed in clear in logs, `godwit status`,
// `godwit verify` and the startup error. These tests put a sentinel into
// every credential slot of the connection-string spec and walk every
// failure path.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/godwit-dev/godwit/rpc"
)

const slotSentinel = "Sl0t-S3ntinel"

// credentialSlots returns, per credential slot of the connection-string
// spec, a URI to host carrying the sentinel in that slot only (plus
// extra options).
func credentialSlots(host, extra string) map[string]string {
	s := slotSentinel
	return map[string]string{
		"password": "mongodb://u:" + s + "@" + host + "/?" + extra,
		"session-token": "mongodb://AKIAEXAMPLE:secret-key@" + host + "/?authMechanism=MONGODB-AWS&authSource=%24external" +
			"&authMechanismProperties=AWS_SESSION_TOKEN:" + s + "&" + extra,
		"key-password":   "mongodb://" + host + "/?tls=true&tlsCertificateKeyFilePassword=" + s + "&" + extra,
		"proxy-password": "mongodb://" + host + "/?proxyHost=127.0.0.1&proxyPort=1&proxyUsername=p&proxyPassword=" + s + "&" + extra,
		"unknown-option": "mongodb://" + host + "/?" + extra + "&customSecret=" + s,
	}
}

func noSlotLeak(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, slotSentinel) {
		t.Fatalf("%s carries a credential:\n%s", what, s)
	}
}

// TestSecurity_EveryCredentialSlot runs a daemon whose sources and audit
// mirror carry the sentinel in each slot, against a host that refuses
// connections and a server that refuses authentication, and reads every
// output: the log, `godwit status` (text and JSON), /metrics, /readyz,
// /healthz and gRPC health. Then each slot as a replication target (read
// at startup: serve and verify fail) and each slot broken by a bad
// %-escape (the driver's parse error quotes what it cannot parse).
func TestSecurity_EveryCredentialSlot(t *testing.T) {
	fake := fakeMongo(t)
	quick := "serverSelectionTimeoutMS=500&connectTimeoutMS=500"

	t.Run("Running", func(t *testing.T) {
		dir := t.TempDir()
		var sources, ids []string
		for slot, uri := range credentialSlots(fake, quick) {
			sources = append(sources, fmt.Sprintf("  - {id: refused-%s, uri: %q}", slot, uri))
			ids = append(ids, "refused-"+slot)
		}
		for slot, uri := range credentialSlots("127.0.0.1:1", quick) {
			sources = append(sources, fmt.Sprintf("  - {id: down-%s, uri: %q}", slot, uri))
			ids = append(ids, "down-"+slot)
		}
		cfg := filepath.Join(dir, "godwit.yaml")
		writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources:
  - {id: local, uri: "lungo:source.lungo"}
%s
sinks:
  - id: audit
    type: audit
    audit: {path: audit.jsonl, mirror: {uri: %q, database: sec, collection: audit}}
`, strings.Join(sources, "\n"), credentialSlots(fake, quick)["session-token"]))
		d := startDaemon(t, cfg)
		grpcAddr, httpAddr := d.addr(t, "gRPC API listening"), d.addr(t, "http listener")
		for _, id := range ids {
			// A refused password is retried slowly (state failing, "the
			// server refused the change stream"), a server that is down
			// with backoff ("change stream failed"): one failed attempt
			// each walks every path that prints the URI or the error.
			d.waitLine(t, "change stream", `"`+id+`"`, `"attempt":`)
		}
		d.waitLine(t, "audit mirror behind the log")

		for _, args := range [][]string{{"status"}, {"status", "--json"}} {
			out, err := cli(t, nil, append(args, "--addr", grpcAddr, "--timeout", "60s")...)
			if err != nil {
				t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			noSlotLeak(t, "godwit "+strings.Join(args, " "), out)
			if !strings.Contains(out, "AWS_SESSION_TOKEN:xxxxx") {
				t.Fatalf("godwit %s should show the redacted URI:\n%s", strings.Join(args, " "), out)
			}
		}
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			resp, err := http.Get("http://" + httpAddr + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			noSlotLeak(t, path, string(body))
			if path == "/readyz" && (strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "AuthenticationFailed")) {
				t.Fatalf("/readyz shows driver internals: %s", body)
			}
		}
		conn, err := rpc.Dial(rpc.ClientConfig{Addr: grpcAddr})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		list, err := healthpb.NewHealthClient(conn).List(ctx, &healthpb.HealthListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		noSlotLeak(t, "health list", list.String())

		err = d.stop(t)
		logs := d.logs()
		noSlotLeak(t, "the log", logs)
		if !strings.Contains(logs, "AKIAEXAMPLE:xxxxx@127.0.0.1:1") {
			t.Fatalf("the redacted URI should still say where godwit connects (err %v):\n%s", err, logs)
		}
	})

	t.Run("Startup", func(t *testing.T) {
		cases := map[string]string{}
		for slot, uri := range credentialSlots(fake, quick) {
			cases["refused-"+slot] = uri
		}
		for slot, uri := range credentialSlots("127.0.0.1:1", quick) {
			cases["down-"+slot] = uri
			// A broken escape right after the sentinel: the driver's parse
			// error quotes the value it could not unescape.
			cases["escape-"+slot] = strings.Replace(uri, slotSentinel, slotSentinel+"%zz", 1)
		}
		for name, uri := range cases {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				for field, body := range map[string]string{
					"target": fmt.Sprintf("sources: [{id: s, uri: \"lungo:source.lungo\"}]\nsinks: [{id: copy, type: replicate, replicate: {source: s, target: %q}}]", uri),
					"source": fmt.Sprintf("sources: [{id: s, uri: %q}]", uri),
				} {
					path := filepath.Join(dir, field+".yaml")
					writeFile(t, path, "data_dir: data-"+field+"\napi: {http_addr: off, grpc_addr: off}\n"+body+"\n")
					for _, cmd := range []string{"serve", "verify"} {
						// A URI that parses runs until stopped, failing to
						// connect meanwhile.
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						c := exec.CommandContext(ctx, godwit, cmd, "--config", path)
						c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
						out, err := c.CombinedOutput()
						cancel()
						noSlotLeak(t, fmt.Sprintf("godwit %s with the slot in the %s (err %v)", cmd, field, err), string(out))
					}
				}
			})
		}
	})
}
