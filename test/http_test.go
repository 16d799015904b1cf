package test

import (
	"path/filepath"
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
