package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestServe_HTTPOnTheNetwork: issue 16 hole 11. The HTTP listener bound
// 0.0.0.0 with only an info line, serving every user's trigger names to
// anyone. Without TLS and tokens serve now refuses, naming the field and
// the opt-in; with --http-insecure it serves and warns.
func TestServe_HTTPOnTheNetwork(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, `
data_dir: data
api: {http_addr: "0.0.0.0:0", grpc_addr: "127.0.0.1:0"}
sources: [{id: local, uri: "lungo:source.lungo"}]
`)
	out, err := cli(t, nil, "serve", "--config", cfg)
	if err == nil || !containsAll(out, "api.http_addr", "not a loopback address", "api.tls", "api.tokens", "--http-insecure") {
		t.Fatalf("serve with http on 0.0.0.0 without TLS and tokens: err=%v\n%s", err, out)
	}
	// --http-addr bypasses the config file's check: the listener refuses too.
	writeFile(t, cfg, `
data_dir: data
api: {grpc_addr: "127.0.0.1:0"}
sources: [{id: local, uri: "lungo:source.lungo"}]
`)
	out, err = cli(t, nil, "serve", "--config", cfg, "--http-addr", "0.0.0.0:0")
	if err == nil || !containsAll(out, "api.http_addr", "not a loopback address") {
		t.Fatalf("serve --http-addr 0.0.0.0:0: err=%v\n%s", err, out)
	}
	d := startDaemon(t, cfg, "--http-addr", "0.0.0.0:0", "--http-insecure")
	d.waitLine(t, "http listener on a non-loopback address", "http_insecure", `"level":"warn"`)
	if err := d.stop(t); err != nil {
		t.Fatalf("serve --http-insecure: %v\n%s", err, d.logs())
	}
}

// TestServe_MetricsLabels: issue 16 hole 11's /metrics showed every
// user's trigger names to whoever could scrape. With api.metrics_labels:
// admin, a scrape without a token or with a user's token gets counts
// without names; an admin's token gets the named series.
func TestServe_MetricsLabels(t *testing.T) {
	dir := t.TempDir()
	aliceTok, aliceLine := newToken(t, "alice", "user")
	rootTok, rootLine := newToken(t, "root", "admin")
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api:
  http_addr: "127.0.0.1:0"
  grpc_addr: "127.0.0.1:0"
  metrics_labels: admin
  tokens:
    %s
    %s
sources: [{id: local, uri: "lungo:source.lungo"}]
`, aliceLine, rootLine))
	d := startDaemon(t, cfg)
	grpcAddr, httpAddr := d.addr(t, "gRPC API listening"), d.addr(t, "http listener")
	env := []string{"GODWIT_TOKEN=" + aliceTok}
	out, err := cli(t, env, "function", "create", "--name", "audit", "--wasm", abiWasmPath, "--json", "--addr", grpcAddr)
	if err != nil {
		t.Fatalf("function create: %v\n%s", err, out)
	}
	var fn struct{ ID string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &fn); err != nil || fn.ID == "" {
		t.Fatalf("no id in %q: %v", out, err)
	}
	if out, err := cli(t, env, "trigger", "create", "--name", "alice-payroll-export", "--type", "database", "--function", fn.ID,
		"--source", "local", "--addr", grpcAddr); err != nil {
		t.Fatalf("trigger create: %v\n%s", err, out)
	}
	scrape := func(token string) string {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+httpAddr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
		}
		return string(body)
	}
	for _, token := range []string{"", aliceTok, "gdw_guessed"} {
		if body := scrape(token); strings.Contains(body, "alice-payroll-export") || !strings.Contains(body, "godwit_triggers{") {
			t.Errorf("scrape with token %q: want godwit_triggers counts and no trigger names:\n%s", token, body)
		}
	}
	if body := scrape(rootTok); !strings.Contains(body, `name="alice-payroll-export"`) {
		t.Errorf("an admin's scrape should carry the names:\n%s", body)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
}
