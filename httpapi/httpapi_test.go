package httpapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/rpc/rpctest"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/status"
)

const (
	userToken  = "gdw_http-user-token"
	adminToken = "gdw_http-admin-token"
)

// unready is a godwit whose source cannot connect: its reason and last
// error carry what the driver says, host and port included.
func unready() status.Snapshot {
	return status.Snapshot{
		Sources: []status.Source{{Status: capture.Status{ID: "hr", State: "reconnecting",
			LastError: "server selection error: current topology: { Addr: db-hr.internal:27017, Last error: dial tcp 10.1.2.3:27017: connection refused }"}}},
		Sinks: []status.Sink{{Status: sink.Status{ID: "audit", Halted: true, LastError: "record 12 at /var/lib/godwit/audit.jsonl: bad seal"}}},
	}
}

// gatherers returns the plain metrics and the named ones an admin gets.
func gatherers(t *testing.T) (plain, named prometheus.Gatherer) {
	t.Helper()
	p, n := prometheus.NewRegistry(), prometheus.NewRegistry()
	p.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "godwit_triggers"}))
	c := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "godwit_trigger_up"}, []string{"name"})
	c.WithLabelValues("alice-payroll-export").Set(1)
	n.MustRegister(c)
	return p, n
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func serve(t *testing.T, cfg httpapi.Config, log zerolog.Logger) *httpapi.Server {
	t.Helper()
	s, err := httpapi.Listen(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

// TestListen_NetworkNeedsTLSAndTokens is issue 16 hole 11's listener: it
// bound 0.0.0.0 with only an info line. A non-loopback address now needs
// TLS and tokens, or the explicit opt-in, which is warned about.
func TestListen_NetworkNeedsTLSAndTokens(t *testing.T) {
	plain, _ := gatherers(t)
	authn, err := auth.New([]auth.Token{{User: "alice", SHA256: auth.Hash(userToken)}})
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]httpapi.Config{
		"Plain":       {Addr: "0.0.0.0:0"},
		"TLSNoTokens": {Addr: "0.0.0.0:0", TLS: &tls.Config{}},
		"TokensNoTLS": {Addr: "0.0.0.0:0", Auth: authn},
	} {
		cfg.Metrics, cfg.Status = plain, unready
		if _, err := httpapi.Listen(cfg, zerolog.Nop()); err == nil ||
			!strings.Contains(err.Error(), "api.http_addr") || !strings.Contains(err.Error(), "api.http_insecure") {
			t.Errorf("%s: %v, want a refusal naming api.http_addr and the opt-in", name, err)
		}
	}
	var logs syncBuffer
	s := serve(t, httpapi.Config{Addr: "0.0.0.0:0", Insecure: true, Metrics: plain, Status: unready}, zerolog.New(&logs))
	if !strings.Contains(logs.String(), "non-loopback address") || !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("no warning for an insecure network listener: %s", logs.String())
	}
	if s.Addr() == "" {
		t.Fatal("no address")
	}
}

// TestServer_AttackerOnTheNetwork scrapes a listener on a non-loopback
// address with TLS and tokens the way an outsider would: no token, a made
// up one, plaintext. It learns that godwit is alive and not ready, and
// nothing else; a user token reads metrics without names; an admin token
// reads names. /readyz never shows a driver message or an address.
func TestServer_AttackerOnTheNetwork(t *testing.T) {
	dir := t.TempDir()
	ca := rpctest.NewCA(t, dir, "test")
	pair := ca.Server(t, "godwit")
	tc, err := rpc.TLS{Cert: pair.CertFile, Key: pair.KeyFile}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New([]auth.Token{
		{User: "alice", SHA256: auth.Hash(userToken)},
		{User: "root", Role: auth.RoleAdmin, SHA256: auth.Hash(adminToken)},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, named := gatherers(t)
	s := serve(t, httpapi.Config{Addr: "0.0.0.0:0", TLS: tc, Auth: authn, Metrics: plain, Named: named, Status: unready}, zerolog.Nop())
	_, port, _ := net.SplitHostPort(s.Addr())
	base := "https://127.0.0.1:" + port
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(t *testing.T, path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	t.Run("Plaintext", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get("http://127.0.0.1:" + port + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("plaintext scrape answered: %s", body)
			}
		}
	})
	t.Run("Metrics", func(t *testing.T) {
		for _, token := range []string{"", "gdw_guessed", auth.Hash(userToken)} {
			code, body := get(t, "/metrics", token)
			if code != http.StatusUnauthorized || strings.Contains(body, "godwit_") {
				t.Errorf("/metrics with token %q: %d %s", token, code, body)
			}
		}
		code, body := get(t, "/metrics", userToken)
		if code != http.StatusOK || !strings.Contains(body, "godwit_triggers") || strings.Contains(body, "alice-payroll-export") {
			t.Errorf("/metrics as a user: %d, want metrics without trigger names:\n%s", code, body)
		}
		code, body = get(t, "/metrics", adminToken)
		if code != http.StatusOK || !strings.Contains(body, "alice-payroll-export") {
			t.Errorf("/metrics as an admin: %d, want the named series:\n%s", code, body)
		}
	})
	t.Run("Readyz", func(t *testing.T) {
		for _, token := range []string{"", userToken} {
			code, body := get(t, "/readyz", token)
			var r struct {
				Ready    bool     `json:"ready"`
				Problems []string `json:"problems"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusServiceUnavailable || r.Ready {
				t.Fatalf("/readyz (token %q): %d %s", token, code, body)
			}
			for _, leak := range []string{"db-hr.internal", "27017", "10.1.2.3", "selection", "/var/lib", "seal"} {
				if strings.Contains(body, leak) {
					t.Errorf("/readyz (token %q) shows driver internals (%q): %s", token, leak, body)
				}
			}
			if token == "" && (len(r.Problems) > 0 || strings.Contains(body, "hr")) {
				t.Errorf("/readyz without a token names components: %s", body)
			}
			if token != "" && strings.Join(r.Problems, "; ") != "source hr: reconnecting; sink audit: halted" {
				t.Errorf("/readyz with a token should say which component is not ready: %s", body)
			}
		}
		if code, body := get(t, "/healthz", ""); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
			t.Errorf("/healthz is open: %d %s", code, body)
		}
	})
}

// TestServer_LoopbackNamesComponents: on loopback (the default) no token
// is needed, and /readyz names what is not ready, still without driver
// internals.
func TestServer_LoopbackNamesComponents(t *testing.T) {
	plain, _ := gatherers(t)
	s := serve(t, httpapi.Config{Addr: "127.0.0.1:0", Metrics: plain, Status: unready}, zerolog.Nop())
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get("http://" + s.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "source hr: reconnecting") ||
		strings.Contains(string(body), "27017") {
		t.Fatalf("/readyz on loopback: %d %s", resp.StatusCode, body)
	}
}
