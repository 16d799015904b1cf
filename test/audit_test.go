package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAudit_ForgedAppendRefused is issue 16's attack on the audit log, end
// to end: after a clean stop, a record is appended with a correctly
// recomputed chain. `godwit audit verify --key` names it; the restarted
// daemon keeps serving but refuses to extend the log (its audit sink halts,
// shown in the error log, `godwit status` and /readyz); the log is left as
// it was, as evidence.
func TestAudit_ForgedAppendRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, `
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources: [{id: local, uri: "lungo:source.lungo"}]
sinks: [{id: audit, type: audit, audit: {path: audit.jsonl}}]
`)
	logPath := filepath.Join(dir, "data", "audit.jsonl")
	d := startDaemon(t, cfg)
	d.waitLine(t, "audit log sealing starts with a new key", "audit.jsonl.key")
	d.waitLine(t, "godwit running")
	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
	keyFile := logPath + ".key"
	if out, err := cli(t, nil, "audit", "verify", "--file", logPath, "--key", keyFile); err != nil || !strings.Contains(out, "every seal valid") {
		t.Fatalf("audit verify --key of the genuine log: %v\n%s", err, out)
	}
	head, err := cli(t, nil, "audit", "head", "--file", logPath)
	if err != nil {
		t.Fatal(err)
	}
	head = strings.TrimSpace(head)

	// The forgery: the last record copied, changed, with index, prev and
	// hash computed as docs/audit.md explains.
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
	last := strings.TrimSuffix(ls[len(ls)-1], "\n")
	var rec struct {
		Index uint64
		Hash  string
	}
	if err := json.Unmarshal([]byte(last), &rec); err != nil {
		t.Fatal(err)
	}
	body := last[:len(last)-len(`,"hash":"`)-64-len(`"}`)] + "}"
	prefix := fmt.Sprintf(`{"index":%d,"prev":"`, rec.Index)
	body = fmt.Sprintf(`{"index":%d,"prev":"%s`, rec.Index+1, rec.Hash) + body[len(prefix)+64:]
	body = strings.Replace(body, `"message":"`, `"message":"nothing happened; `, 1)
	sum := sha256.Sum256([]byte(body))
	forged := body[:len(body)-1] + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}` + "\n"
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(forged)
	f.Close()
	forgedLog, _ := os.ReadFile(logPath)

	if out, err := cli(t, nil, "audit", "verify", "--file", logPath, "--head", head); err != nil {
		t.Fatalf("the key-less check was expected to accept the re-chained forgery (that is hole 1): %v\n%s", err, out)
	}
	want := fmt.Sprintf("record index %d", rec.Index+1)
	out, err := cli(t, nil, "audit", "verify", "--file", logPath, "--key", keyFile)
	if err == nil || !containsAll(out, "NOT intact", want, "seal does not verify") {
		t.Fatalf("audit verify --key must name the forged record: %v\n%s", err, out)
	}

	d = startDaemon(t, cfg)
	line := d.waitLine(t, `"level":"error"`, "audit sink halted", "audit log refused", want)
	if !strings.Contains(line, "godwit audit verify") {
		t.Errorf("the error should say what to run: %s", line)
	}
	grpcAddr := d.addr(t, "gRPC API listening")
	httpAddr := d.addr(t, "http listener")
	d.waitLine(t, "godwit running")

	out, err = cli(t, nil, "status", "--json", "--addr", grpcAddr)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		Sinks []struct {
			ID        string `json:"id"`
			Halted    bool   `json:"halted"`
			LastError string `json:"last_error"`
		} `json:"sinks"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Sinks) != 1 || !st.Sinks[0].Halted || !strings.Contains(st.Sinks[0].LastError, want) {
		t.Fatalf("status must show the audit sink halted naming %s: %s", want, out)
	}
	res, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready, _ := io.ReadAll(res.Body)
	res.Body.Close()
	// /readyz names the halted component, never the reason (it may be read
	// without a token): the reason is in status, checked above.
	if res.StatusCode != http.StatusServiceUnavailable || !containsAll(string(ready), "sink audit: halted") {
		t.Fatalf("/readyz = %d %s", res.StatusCode, ready)
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, d.logs())
	}
	if after, _ := os.ReadFile(logPath); !bytes.Equal(after, forgedLog) {
		t.Fatal("the daemon wrote to a log it refused")
	}
}

// TestAudit_QueryRefusesInvalidUTF8 is issue 16, hole 2: a correctly
// chained record with invalid UTF-8 fails verify and is not printed raw by
// `audit query --json`.
func TestAudit_QueryRefusesInvalidUTF8(t *testing.T) {
	body := `{"index":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","class":"daemon_start","severity":"low","time":"2026-05-01T10:00:00Z","recorded_at":"2026-05-01T10:00:00Z","x":"` + "\xff\xfe\xc0\xaf" + `"}`
	sum := sha256.Sum256([]byte(body))
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeFile(t, path, body[:len(body)-1]+`,"hash":"`+hex.EncodeToString(sum[:])+`"}`+"\n")
	out, err := cli(t, nil, "audit", "verify", "--file", path)
	if err == nil || !containsAll(out, "line 1", "not valid UTF-8") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	out, err = cli(t, nil, "audit", "query", "--file", path, "--json")
	if err == nil || !containsAll(out, "line 1", "not valid UTF-8") || strings.Contains(out, "\xff") {
		t.Fatalf("audit query --json: %v\n%q", err, out)
	}
}

// TestAudit_InitAndRotate: `godwit audit init` writes the verification key
// before the first start, and `--rotate` starts a new one; verify needs
// both, and names the first record of the new key when it lacks it.
func TestAudit_InitAndRotate(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "godwit.yaml")
	writeFile(t, cfg, `
data_dir: data
sources: [{id: local, uri: "lungo:source.lungo"}]
sinks: [{id: audit, type: audit, audit: {path: audit.jsonl}}]
`)
	logPath := filepath.Join(dir, "data", "audit.jsonl")
	os.MkdirAll(filepath.Dir(logPath), 0o755)
	out, err := cli(t, nil, "audit", "init", "--file", logPath)
	if err != nil || !containsAll(out, "sealed from record 1", logPath+".key", "move it off this machine") {
		t.Fatalf("audit init: %v\n%s", err, out)
	}
	if fi, err := os.Stat(logPath + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	runOnce := func() {
		d := startDaemon(t, cfg)
		d.waitLine(t, "godwit running")
		if err := d.stop(t); err != nil {
			t.Fatalf("serve: %v\n%s", err, d.logs())
		}
	}
	runOnce() // daemon_start, daemon_stop: records 1 and 2
	out, err = cli(t, nil, "audit", "init", "--file", logPath, "--rotate")
	if err != nil || !containsAll(out, "sealed from record 3", logPath+".key.3") {
		t.Fatalf("audit init --rotate: %v\n%s", err, out)
	}
	runOnce() // records 3 and 4, with the new key
	out, err = cli(t, nil, "audit", "verify", "--file", logPath, "--key", logPath+".key")
	if err == nil || !containsAll(out, "NOT intact", "record index 3") {
		t.Fatalf("verify with the first key only must stop at record 3: %v\n%s", err, out)
	}
	out, err = cli(t, nil, "audit", "verify", "--file", logPath, "--key", logPath+".key", "--key", logPath+".key.3")
	if err != nil || !containsAll(out, "intact: 4 records", "records 1..2 with key", "records 3..4 with key", "every seal valid") {
		t.Fatalf("verify with both keys: %v\n%s", err, out)
	}
}
