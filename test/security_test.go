package test

// End-to-end tests of issue 7: TLS and mTLS, tokens with per-user
// isolation, secrets kept out of every output, hostile inputs.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/rpc/rpctest"
	"github.com/godwit-dev/godwit/runtime"
)

// daemon is a running `godwit serve` whose log lines the test can wait for.
type daemon struct {
	cmd  *exec.Cmd
	done chan error

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every line
}

func startDaemon(t *testing.T, cfg string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(godwit, append([]string{"serve", "--config", cfg}, args...)...),
		done: make(chan error, 1), changed: make(chan struct{})}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
		d.done <- d.cmd.Wait()
		d.mu.Lock()
		close(d.changed)
		d.changed = nil
		d.mu.Unlock()
	}()
	t.Cleanup(func() { _ = d.cmd.Process.Kill() })
	return d
}

// waitLine returns the first log line containing all of subs, waiting up
// to 30s for it.
func (d *daemon) waitLine(t *testing.T, subs ...string) string {
	t.Helper()
	timeout := time.After(testwait.Long)
	for seen := 0; ; {
		d.mu.Lock()
		lines, ch := d.lines, d.changed
		d.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if containsAll(lines[seen], subs...) {
				return lines[seen]
			}
		}
		if ch == nil {
			t.Fatalf("godwit exited without logging %q:\n%s", subs, d.logs())
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no log line with %q within %s:\n%s", subs, testwait.Long, d.logs())
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// addr returns the "addr" of the log line with msg.
func (d *daemon) addr(t *testing.T, msg string) string {
	t.Helper()
	var l struct{ Addr string }
	if err := json.Unmarshal([]byte(d.waitLine(t, msg)), &l); err != nil || l.Addr == "" {
		t.Fatalf("no addr in the %q line: %v", msg, err)
	}
	return l.Addr
}

// stop sends SIGTERM and returns serve's exit error.
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		return err
	case <-time.After(testwait.Long):
		t.Fatalf("godwit did not stop within 60s of SIGTERM:\n%s", d.logs())
		return nil
	}
}

// cli runs a godwit command with extra environment variables and returns
// its combined output.
func cli(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	cmd := exec.CommandContext(ctx, godwit, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newToken runs `godwit token new` and returns the token and the config
// line holding its hash.
func newToken(t *testing.T, user, role string) (token, line string) {
	t.Helper()
	out, err := cli(t, nil, "token", "new", "--user", user, "--role", role)
	if err != nil {
		t.Fatalf("token new: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "token:"); ok {
			token = strings.TrimSpace(v)
		}
		if strings.HasPrefix(strings.TrimSpace(l), "- {user: "+user) {
			line = strings.TrimSpace(l)
		}
	}
	if token == "" || line == "" {
		t.Fatalf("token new printed no token or config line:\n%s", out)
	}
	// What the config holds is what `token hash` prints for the token.
	cmd := exec.Command(godwit, "token", "hash")
	cmd.Stdin = strings.NewReader(token + "\n")
	sum, err := cmd.Output()
	if err != nil || !strings.Contains(line, strings.TrimSpace(string(sum))) {
		t.Fatalf("token hash printed %q (%v), the config line is %q", sum, err, line)
	}
	return token, line
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

const abiWasmPath = "../trigger/wasm/testdata/abi.wasm"

// TestSecurity_TLSTokensIsolation runs godwit with mTLS and three tokens
// and drives it with the CLI: only a client with a certificate from the
// configured CA and a valid token gets in; bob cannot see, change, run or
// attach to alice's objects by their ids; the admin can; every change is
// audited with its user; a token removed from the config (revoked) is
// refused after the restart.
func TestSecurity_TLSTokensIsolation(t *testing.T) {
	dir := t.TempDir()
	ca := rpctest.NewCA(t, dir, "godwit")
	other := rpctest.NewCA(t, dir, "other")
	srvCert := ca.Server(t, "server")
	clientCert, strangerCert := ca.Client(t, "client"), other.Client(t, "stranger")
	aliceTok, aliceLine := newToken(t, "alice", "user")
	bobTok, bobLine := newToken(t, "bob", "user")
	rootTok, rootLine := newToken(t, "root", "admin")

	cfgPath := filepath.Join(dir, "godwit.yaml")
	writeConfig := func(tokenLines ...string) {
		writeFile(t, cfgPath, fmt.Sprintf(`
data_dir: data
api:
  http_addr: "127.0.0.1:0"
  grpc_addr: "127.0.0.1:0"
  tls: {cert: %s, key: %s, client_ca: %s}
  tokens:
    %s
sources: [{id: local, uri: "lungo:source.lungo"}]
sinks: [{id: audit, type: audit, audit: {path: audit.jsonl}}]
`, srvCert.CertFile, srvCert.KeyFile, ca.CertFile, strings.Join(tokenLines, "\n    ")))
	}
	writeConfig(aliceLine, bobLine, rootLine)
	d := startDaemon(t, cfgPath)
	addr := d.addr(t, "gRPC API listening")
	if l := d.waitLine(t, "gRPC API listening"); !containsAll(l, `"tls":true`, `"mtls":true`, `"tokens":3`) {
		t.Fatalf("the listening line should say TLS, mTLS and 3 tokens: %s", l)
	}

	mtls := []string{"--addr", addr, "--ca-cert", ca.CertFile, "--cert", clientCert.CertFile, "--key", clientCert.KeyFile}
	as := func(token string, args ...string) (string, error) {
		t.Helper()
		return cli(t, []string{"GODWIT_TOKEN=" + token}, append(args, mtls...)...)
	}
	mustAs := func(token string, args ...string) string {
		t.Helper()
		out, err := as(token, args...)
		if err != nil {
			t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	id := func(jsonLine string) string {
		t.Helper()
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(strings.TrimSpace(jsonLine)), &v); err != nil || v.ID == "" {
			t.Fatalf("no id in %q: %v", jsonLine, err)
		}
		return v.ID
	}

	t.Run("Transport", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"Plaintext", []string{"--addr", addr}, "Unavailable"},
			{"NoClientCertificate", []string{"--addr", addr, "--ca-cert", ca.CertFile}, "Unavailable"},
			{"ClientCertificateFromAnotherCA", []string{"--addr", addr, "--ca-cert", ca.CertFile,
				"--cert", strangerCert.CertFile, "--key", strangerCert.KeyFile}, "Unavailable"},
			{"ServerNotTrusted", []string{"--addr", addr, "--tls", "--cert", clientCert.CertFile, "--key", clientCert.KeyFile}, "Unavailable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := cli(t, []string{"GODWIT_TOKEN=" + aliceTok}, append([]string{"function", "list"}, tc.args...)...)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Fatalf("err=%v, want %s:\n%s", err, tc.want, out)
				}
			})
		}
	})
	t.Run("Tokens", func(t *testing.T) {
		for _, tc := range []struct{ name, token, want string }{
			{"Absent", "", "Unauthenticated: no bearer token"},
			{"Wrong", "gdw_" + strings.Repeat("A", 43), "Unauthenticated: invalid token"},
			{"HashInsteadOfToken", strings.Fields(strings.SplitAfter(aliceLine, "sha256: ")[1])[0], "Unauthenticated"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := as(tc.token, "function", "list")
				if err == nil || !strings.Contains(out, tc.want) {
					t.Fatalf("err=%v, want %q:\n%s", err, tc.want, out)
				}
			})
		}
		if out, err := as(aliceTok, "function", "list"); err != nil {
			t.Fatalf("alice: %v\n%s", err, out)
		}
		// --token wins over the environment; -h never prints the token.
		out, err := cli(t, []string{"GODWIT_TOKEN=gdw_wrong"}, append([]string{"function", "list", "--token", aliceTok}, mtls...)...)
		if err != nil {
			t.Fatalf("--token: %v\n%s", err, out)
		}
		out, _ = cli(t, []string{"GODWIT_TOKEN=" + aliceTok}, "trigger", "-h")
		if strings.Contains(out, aliceTok) {
			t.Fatalf("help printed the token:\n%s", out)
		}
	})

	fnID := id(mustAs(aliceTok, "function", "create", "--name", "audit", "--wasm", abiWasmPath, "--json"))
	trID := id(mustAs(aliceTok, "trigger", "create", "--name", "orders", "--type", "database", "--function", fnID,
		"--source", "local", "--database", "shop", "--json"))

	t.Run("Isolation", func(t *testing.T) {
		event := `{"operationType": "insert"}`
		for _, args := range [][]string{
			{"trigger", "get", trID},
			{"trigger", "update", trID, "--name", "stolen"},
			{"trigger", "disable", trID},
			{"trigger", "enable", trID},
			{"trigger", "delete", trID},
			{"function", "get", fnID, "--wasm-out", filepath.Join(dir, "stolen.wasm")},
			{"function", "update", fnID, "--wasm", abiWasmPath},
			{"function", "disable", fnID},
			{"function", "delete", fnID},
			{"function", "exec", fnID, "--event", event},
			{"trigger", "create", "--name", "attach", "--type", "database", "--function", fnID, "--source", "local"},
		} {
			out, err := as(bobTok, args...)
			if err == nil || !strings.Contains(out, "NotFound") {
				t.Errorf("bob: godwit %s: err=%v, want NotFound:\n%s", strings.Join(args, " "), err, out)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "stolen.wasm")); err == nil {
			t.Error("bob got alice's module")
		}
		if out := mustAs(bobTok, "trigger", "list"); strings.Contains(out, trID) {
			t.Errorf("bob lists alice's trigger:\n%s", out)
		}
		if out, err := as(bobTok, "trigger", "list", "--user", "alice"); err == nil || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("bob listing alice's triggers: err=%v\n%s", err, out)
		}
		out := mustAs(aliceTok, "trigger", "get", trID, "--json")
		if !strings.Contains(out, `"name":"orders"`) || !strings.Contains(out, `"enabled":true`) || !strings.Contains(out, `"user_id":"alice"`) {
			t.Errorf("alice's trigger after bob's attempts:\n%s", out)
		}
	})
	t.Run("Admin", func(t *testing.T) {
		if out := mustAs(rootTok, "trigger", "list"); !strings.Contains(out, trID) {
			t.Fatalf("the admin does not list alice's trigger:\n%s", out)
		}
		mustAs(rootTok, "trigger", "disable", trID)
		if out := mustAs(aliceTok, "trigger", "get", trID, "--json"); strings.Contains(out, `"enabled":true`) {
			t.Fatalf("the admin's disable did not take:\n%s", out)
		}
	})

	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
	t.Run("Audited", func(t *testing.T) {
		out, err := cli(t, nil, "audit", "query", "--file", filepath.Join(dir, "data", "audit.jsonl"),
			"--class", "trigger_changed,function_changed", "--json")
		if err != nil {
			t.Fatalf("audit query: %v\n%s", err, out)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r struct{ Class, User, Message string }
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			got = append(got, r.Class+" "+r.User)
		}
		want := []string{"function_changed alice", "trigger_changed alice", "trigger_changed root"}
		if !slices.Equal(got, want) {
			t.Fatalf("audited %q, want %q (bob's refused attempts change nothing)", got, want)
		}
	})

	// Revoke bob: remove his token and restart.
	writeConfig(aliceLine, rootLine)
	d = startDaemon(t, cfgPath)
	addr = d.addr(t, "gRPC API listening")
	mtls[1] = addr
	t.Run("Revoked", func(t *testing.T) {
		out, err := as(bobTok, "function", "list")
		if err == nil || !strings.Contains(out, "Unauthenticated: invalid token (unknown or revoked)") {
			t.Fatalf("bob after revocation: err=%v\n%s", err, out)
		}
		if out := mustAs(aliceTok, "function", "list"); !strings.Contains(out, fnID) {
			t.Fatalf("alice after bob's revocation:\n%s", out)
		}
		if l := d.waitLine(t, "refused a call without a valid token"); strings.Contains(l, bobTok) {
			t.Fatalf("the log quotes the token: %s", l)
		}
	})
	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
	for _, tok := range []string{aliceTok, bobTok, rootTok} {
		if strings.Contains(d.logs(), tok) {
			t.Fatal("a log line contains a token")
		}
	}
}

// TestServe_PlaintextOnTheNetwork: a non-loopback address without TLS is
// refused unless --insecure, and then the log says so.
func TestServe_PlaintextOnTheNetwork(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, `
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "0.0.0.0:0"}
sources: [{id: local, uri: "lungo:source.lungo"}]
`)
	out, err := cli(t, nil, "serve", "--config", cfg)
	if err == nil || !containsAll(out, "api.grpc_addr", "not a loopback address", "api.tls", "--insecure") {
		t.Fatalf("serve on 0.0.0.0 without TLS: err=%v\n%s", err, out)
	}
	d := startDaemon(t, cfg, "--insecure")
	d.waitLine(t, "PLAINTEXT on a non-loopback address")
	d.waitLine(t, "needs no token on a non-loopback address")
	if err := d.stop(t); err != nil {
		t.Fatalf("serve --insecure: %v\n%s", err, d.logs())
	}
}

// fakeMongo is a MongoDB server that answers the connection handshake and
// refuses every authentication, like a real server given a wrong
// password. It returns host:port.
func fakeMongo(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); serveMongo(c) }()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

func serveMongo(c net.Conn) {
	defer c.Close()
	const opReply, opQuery, opMsg = 1, 2004, 2013
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		size := int(binary.LittleEndian.Uint32(hdr[0:]))
		reqID := binary.LittleEndian.Uint32(hdr[4:])
		op := binary.LittleEndian.Uint32(hdr[12:])
		if size < 16 || size > 48<<20 {
			return
		}
		body := make([]byte, size-16)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		var cmd bson.Raw
		switch op {
		case opQuery: // flags, collection name, skip, limit, query
			i := 4 + bytes.IndexByte(body[4:], 0) + 1 + 8
			cmd = bson.Raw(body[i:])
		case opMsg: // flags, section kind 0, body
			cmd = bson.Raw(body[5:])
		default:
			return
		}
		elems, err := cmd.Elements()
		if err != nil || len(elems) == 0 {
			return
		}
		reply := bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: "Authentication failed."},
			{Key: "code", Value: int32(18)}, {Key: "codeName", Value: "AuthenticationFailed"}}
		if name := strings.ToLower(elems[0].Key()); name == "ismaster" || name == "hello" {
			reply = bson.D{{Key: "ismaster", Value: true}, {Key: "isWritablePrimary", Value: true}, {Key: "helloOk", Value: true},
				{Key: "maxBsonObjectSize", Value: int32(16 << 20)}, {Key: "maxMessageSizeBytes", Value: int32(48000000)},
				{Key: "maxWriteBatchSize", Value: int32(100000)}, {Key: "localTime", Value: time.Now()},
				{Key: "minWireVersion", Value: int32(0)}, {Key: "maxWireVersion", Value: int32(17)},
				{Key: "connectionId", Value: int32(1)}, {Key: "ok", Value: 1.0}}
		}
		doc, _ := bson.Marshal(reply)
		var msg []byte
		if op == opQuery {
			msg = binary.LittleEndian.AppendUint32(make([]byte, 16), 0) // response flags
			msg = binary.LittleEndian.AppendUint64(msg, 0)              // cursor id
			msg = binary.LittleEndian.AppendUint32(msg, 0)              // starting from
			msg = binary.LittleEndian.AppendUint32(msg, 1)              // number returned
			binary.LittleEndian.PutUint32(msg[12:], opReply)
		} else {
			msg = binary.LittleEndian.AppendUint32(make([]byte, 16), 0) // flags
			msg = append(msg, 0)                                        // section kind 0
			binary.LittleEndian.PutUint32(msg[12:], opMsg)
		}
		msg = append(msg, doc...)
		binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.LittleEndian.PutUint32(msg[4:], reqID+1)
		binary.LittleEndian.PutUint32(msg[8:], reqID)
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}

// TestSecurity_SecretsNeverLeak puts a sentinel password into every URI
// godwit is given (sources, metadata, replication target, audit mirror)
// and drives the failure paths: a host that refuses connections, a server
// that refuses the password, malformed URIs. The sentinel must appear in
// no log line, no error, no gRPC status, no metric and no health answer.
func TestSecurity_SecretsNeverLeak(t *testing.T) {
	const sentinel = "Sent1nel-Pa55"
	fake := fakeMongo(t)
	quick := "serverSelectionTimeoutMS=500&connectTimeoutMS=500"
	noLeak := func(t *testing.T, what, s string) {
		t.Helper()
		if strings.Contains(s, sentinel) {
			t.Fatalf("%s contains the password:\n%s", what, s)
		}
	}

	t.Run("UnreachableAndRefused", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "godwit.yaml")
		writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
metadata: {uri: "mongodb://meta:%[1]s@%[2]s/?%[3]s"}
sources:
  - {id: local, uri: "lungo:source.lungo"}
  - {id: badhost, uri: "mongodb://src:%[1]s@127.0.0.1:1/?%[3]s"}
  - {id: badauth, uri: "mongodb://src:%[1]s@%[2]s/?%[3]s"}
sinks:
  - id: audit
    type: audit
    audit: {path: audit.jsonl, mirror: {uri: "mongodb://mirror:%[1]s@%[2]s/?%[3]s", database: sec, collection: audit}}
`, sentinel, fake, quick))
		d := startDaemon(t, cfg)
		grpcAddr, httpAddr := d.addr(t, "gRPC API listening"), d.addr(t, "http listener")
		// Every failure path has been walked at least once, some twice.
		d.waitLine(t, "change stream failed", "badhost", "attempt\":2")
		// A refused password is retried slowly (state failing): one attempt
		// is enough to walk its path.
		d.waitLine(t, "the server refused the change stream", "badauth", "authentication failed")
		d.waitLine(t, "audit mirror behind the log")

		// The API answers from a metadata store refusing the password.
		for _, args := range [][]string{
			{"function", "create", "--user", "u", "--name", "f", "--wasm", abiWasmPath},
			{"function", "list"},
			{"trigger", "list"},
			{"trigger", "create", "--user", "u", "--name", "t", "--type", "database", "--function", "x", "--source", "badauth"},
		} {
			out, err := cli(t, nil, append(args, "--addr", grpcAddr, "--timeout", "20s")...)
			if err == nil {
				t.Errorf("godwit %s succeeded against a metadata store that refuses the password:\n%s", strings.Join(args, " "), out)
			}
			noLeak(t, "godwit "+strings.Join(args, " "), out)
			t.Logf("godwit %s: %s", args[0]+" "+args[1], strings.TrimSpace(out))
		}
		// `godwit status` shows every source and sink of the running daemon.
		for _, args := range [][]string{{"status"}, {"status", "--json"}} {
			out, _ := cli(t, nil, append(args, "--addr", grpcAddr, "--timeout", "20s")...)
			noLeak(t, "godwit "+strings.Join(args, " "), out)
			t.Logf("godwit %s:\n%s", strings.Join(args, " "), out)
		}
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			resp, err := http.Get("http://" + httpAddr + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			noLeak(t, path, string(body))
		}
		err := d.stop(t)
		logs := d.logs()
		noLeak(t, "the log", logs)
		if err == nil {
			t.Logf("serve exited 0")
		}
		if !strings.Contains(logs, "src:xxxxx@127.0.0.1:1") {
			t.Fatalf("the redacted URI should still say where godwit connects:\n%s", logs)
		}
	})

	// A replication target is read at startup: godwit refuses to start,
	// saying which sink, and not with what password.
	t.Run("TargetAtStartup", func(t *testing.T) {
		for name, host := range map[string]string{"Unreachable": "127.0.0.1:1", "RefusesPassword": fake} {
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				cfg := filepath.Join(dir, "godwit.yaml")
				writeFile(t, cfg, fmt.Sprintf(`
data_dir: data
api: {http_addr: off, grpc_addr: off}
sources: [{id: local, uri: "lungo:source.lungo"}]
sinks: [{id: copy, type: replicate, replicate: {source: local, target: "mongodb://target:%s@%s/?%s"}}]
`, sentinel, host, quick))
				for _, cmd := range []string{"serve", "verify"} {
					out, err := cli(t, nil, cmd, "--config", cfg)
					if err == nil || !strings.Contains(out, "copy") {
						t.Fatalf("%s with an unusable target: err=%v, want a failure naming the sink:\n%s", cmd, err, out)
					}
					noLeak(t, cmd, out)
				}
			})
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		for name, uri := range map[string]string{
			"BadPort":       "mongodb://u:" + sentinel + "@db1:notaport/",
			"SpaceInHost":   "mongodb://u:" + sentinel + "@bad host/?serverSelectionTimeoutMS=300",
			"UnknownOption": "mongodb://u:" + sentinel + "@db1/?bogus=%zz",
			"NoHost":        "mongodb://u:" + sentinel + "@/",
			"SRVWithPort":   "mongodb+srv://u:" + sentinel + "@cluster.example.invalid:27017/",
			"SRVNoDNS":      "mongodb+srv://u:" + sentinel + "@cluster.example.invalid/",
			"WrongScheme":   "postgres://u:" + sentinel + "@db1/",
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				for field, cfg := range map[string]string{
					"source":   fmt.Sprintf(`sources: [{id: s, uri: %q}]`, uri),
					"metadata": fmt.Sprintf("metadata: {uri: %q}\nsources: [{id: s, uri: \"lungo:memory\"}]", uri),
					"target": fmt.Sprintf("sources: [{id: s, uri: \"lungo:memory\"}]\nsinks: [{id: c, type: replicate, replicate: {source: s, target: %q}}]",
						uri),
					"mirror": fmt.Sprintf("sources: [{id: s, uri: \"lungo:memory\"}]\nsinks: [{id: a, type: audit, audit: {path: a.jsonl, mirror: {uri: %q, database: d, collection: c}}}]",
						uri),
				} {
					path := filepath.Join(dir, field+".yaml")
					writeFile(t, path, "data_dir: data\napi: {http_addr: off, grpc_addr: off}\n"+cfg+"\n")
					for _, cmd := range [][]string{{"serve", "--config", path}, {"verify", "--config", path}} {
						// Most fail at once; a URI that parses runs until
						// stopped, failing to connect meanwhile.
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						c := exec.CommandContext(ctx, godwit, cmd...)
						c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
						out, err := c.CombinedOutput()
						cancel()
						noLeak(t, fmt.Sprintf("godwit %s with a malformed %s URI (err %v)", cmd[0], field, err), string(out))
					}
				}
			})
		}
	})
}

// TestSecurity_HostileInputsKeepServing throws hostile requests and a
// function emitting malformed output at a running server while a source
// is written to: every request gets a clear error, the server keeps
// serving, and every captured event reaches the sink, or (for the hostile
// function's trigger) its dead letters.
func TestSecurity_HostileInputsKeepServing(t *testing.T) {
	const token = "gdw_hostile-test-token"
	dir := t.TempDir()
	sum := auth.Hash(token)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
api:
  http_addr: off
  grpc_addr: "127.0.0.1:0"
  tokens: [{user: alice, sha256: %s}]
triggers: {max_module_bytes: 1048576, timeout: 2s}
sources: [{id: shop, uri: "lungo:source.lungo"}]
sinks: [{id: events, type: jsonl, jsonl: {path: events.jsonl}}]
`, sum)), dir)
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
	select {
	case <-srv.Sources()[0].Ready():
	case <-time.After(testwait.Long):
		t.Fatal("source did not start")
	}
	conn, err := rpc.Dial(rpc.ClientConfig{Addr: srv.RPC.Addr(), Token: token, MaxMessageBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc, fc := pb.NewTriggerServiceClient(conn), pb.NewFunctionServiceClient(conn)
	cctx, ccancel := context.WithTimeout(context.Background(), testwait.Long)
	defer ccancel()

	hostileWasm, err := os.ReadFile("../trigger/wasm/testdata/hostile.wasm")
	if err != nil {
		t.Fatal(err)
	}
	abiWasm, err := os.ReadFile(abiWasmPath)
	if err != nil {
		t.Fatal(err)
	}
	// A trigger whose function answers events marked "badr" with a result
	// that is not BSON.
	hf, err := fc.CreateFunction(cctx, &pb.CreateFunctionRequest{Function: &pb.Function{Name: "hostile", Wasm: hostileWasm}})
	if err != nil {
		t.Fatal(err)
	}
	ht, err := tc.CreateTrigger(cctx, &pb.CreateTriggerRequest{Trigger: &pb.Trigger{Name: "hostile", FunctionId: hf.Id, Enabled: true,
		TriggerType: pb.TriggerType_TRIGGER_TYPE_DATABASE,
		Config:      &pb.Trigger_Database{Database: &pb.DatabaseConfig{DataSource: "shop", Database: "shop"}}}})
	if err != nil {
		t.Fatal(err)
	}

	// Write to the source while the hostile requests run.
	const n = 300
	src, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	written := make(chan error, 1)
	go func() {
		for i := range n {
			mode := "echo"
			if i%50 == 0 {
				mode = "badr"
			}
			if _, err := src.Client.Database("shop").Collection("orders").InsertOne(context.Background(), bson.D{{Key: "_id", Value: i}, {Key: mode, Value: 1}}); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()

	deep := `{"a": ` + strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20) + `}`
	unknownImport := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x02\x0c\x01\x06godwit\x01f\x00\x00")
	createFn := func(name string, module []byte) error {
		_, err := fc.CreateFunction(cctx, &pb.CreateFunctionRequest{Function: &pb.Function{Name: name, Wasm: module}})
		return err
	}
	exec := func(module []byte, ev string) (*pb.ExecuteFunctionResponse, error) {
		return fc.ExecuteFunction(cctx, &pb.ExecuteFunctionRequest{Wasm: module, Event: ev})
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"NotWasm", func() error { return createFn("f", []byte("not wasm at all")) }, codes.InvalidArgument, "wasm: "},
		{"ModuleOverMaxModuleBytes", func() error { return createFn("f", append(slices.Clone(abiWasm), make([]byte, 1<<20)...)) }, codes.InvalidArgument, "more than the limit"},
		{"RequestOverTheMessageLimit", func() error { return createFn("f", make([]byte, 41<<20)) }, codes.ResourceExhausted, ""},
		{"UnknownHostFunction", func() error { return createFn("f", unknownImport) }, codes.InvalidArgument, "unknown host function godwit.f"},
		{"OddName", func() error { return createFn("\x00../etc", abiWasm) }, codes.InvalidArgument, "name: "},
		{"DeepEvent", func() error { _, err := exec(abiWasm, deep); return err }, codes.InvalidArgument, "event: "},
		{"MalformedEvent", func() error { _, err := exec(abiWasm, `{"a": {"$date": "never"}}`); return err }, codes.InvalidArgument, "event: "},
		{"DeepMatch", func() error {
			_, err := tc.CreateTrigger(cctx, &pb.CreateTriggerRequest{Trigger: &pb.Trigger{Name: "m", FunctionId: hf.Id,
				TriggerType: pb.TriggerType_TRIGGER_TYPE_DATABASE,
				Config:      &pb.Trigger_Database{Database: &pb.DatabaseConfig{DataSource: "shop", Match: deep}}}})
			return err
		}, codes.InvalidArgument, "database.match: "},
		{"GuessedID", func() error { _, err := fc.GetFunction(cctx, &pb.GetFunctionRequest{Id: `{"$gt": ""}`}); return err }, codes.NotFound, "id: "},
		{"MalformedGuestOutput", func() error {
			res, err := exec(hostileWasm, `{"badr": 1}`)
			if err == nil && strings.Contains(res.Error, "set_result: not a BSON document") {
				return nil // reported as the function's error, not the call's
			}
			return fmt.Errorf("execute: %v %v", res, err)
		}, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v, want %v saying %q", err, tc.code, tc.msg)
			}
		})
	}
	unauth, err := rpc.Dial(rpc.ClientConfig{Addr: srv.RPC.Addr(), Token: "gdw_not-a-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer unauth.Close()
	if _, err := pb.NewFunctionServiceClient(unauth).CreateFunction(cctx, &pb.CreateFunctionRequest{Function: &pb.Function{Name: "x", Wasm: abiWasm}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token: %v", err)
	}
	// Probing the control plane without a valid token learns nothing but
	// "serving" (issue 16 hole 8), while events keep flowing.
	hc := healthpb.NewHealthClient(unauth)
	if _, err := hc.List(cctx, &healthpb.HealthListRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health List with a bad token: %v", err)
	}
	for _, name := range []string{"source/shop", "source/guess", "sink/events"} {
		if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: name}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("health Check(%q) with a bad token: %v", name, err)
		}
	}
	if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("the overall health Check stays open: %v", err)
	}

	if err := <-written; err != nil {
		t.Fatal(err)
	}
	// Nothing captured is lost: the sink has every write once, and the
	// hostile trigger handled every event, parking the ones it choked on.
	if err := srv.Runners()[0].WaitAcked(cctx, n); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "godwit-data", "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Count(data, []byte("\n")); lines != n {
		t.Fatalf("the sink has %d events, want %d", lines, n)
	}
	if err := srv.Triggers.WaitAcked(cctx, ht.Id, n); err != nil {
		t.Fatal(err)
	}
	dls, err := srv.Triggers.DeadLetters(cctx, ht.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != n/50 || !strings.Contains(dls[0].Error, "set_result: not a BSON document") {
		t.Fatalf("%d dead letters (first %+v), want the %d events the function choked on", len(dls), dls, n/50)
	}
	// Still serving.
	if h, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after all that: %v %v", h, err)
	}
	if got, err := tc.GetTrigger(cctx, &pb.GetTriggerRequest{Id: ht.Id}); err != nil || got.GetStatus().GetState() != "running" {
		t.Fatalf("the hostile function's trigger: %v %v", got.GetStatus(), err)
	}
}
