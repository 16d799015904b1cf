// Package test holds end-to-end tests that drive the built godwit binary as
// a user would: subprocesses, signals, kill -9 and restarts.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

var godwit string // path of the binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "godwit-e2e-")
	if err != nil {
		panic(err)
	}
	godwit = filepath.Join(dir, "godwit")
	build := exec.Command("go", "build", "-o", godwit, "../cmd/godwit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building godwit:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type demoSummary struct {
	Ops        int               `json:"ops"`
	Written    int               `json:"written"`
	Captured   uint64            `json:"captured"`
	Delivered  map[string]uint64 `json:"delivered"`
	Verified   bool              `json:"verified"`
	Problems   []string          `json:"problems"`
	Outbox     string            `json:"outbox"`
	Audited    uint64            `json:"audited"`
	AuditLog   string            `json:"audit_log"`
	AuditKey   string            `json:"audit_key"`
	Replicated uint64            `json:"replicated"`
	Triggered  uint64            `json:"triggered"`
}

// runDemo runs the demo to completion and decodes its last output line.
func runDemo(t *testing.T, args ...string) (demoSummary, string) {
	t.Helper()
	cmd := exec.Command(godwit, append([]string{"demo", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var s demoSummary
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &s); jerr != nil {
		t.Fatalf("demo's last line is not JSON (%v): %q\nstderr:\n%s", jerr, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("demo exited with %v: %+v\nstderr:\n%s", err, s, stderr.String())
	}
	return s, stderr.String()
}

func TestDemo_VerifiesEndToEnd(t *testing.T) {
	s, _ := runDemo(t, "--ops", "300", "--data", t.TempDir())
	if !s.Verified || s.Ops != 300 || s.Written != 300 || s.Captured != 300 ||
		s.Delivered["events"] != 300 || s.Delivered["audit"] != 300 || s.Replicated != 300 || s.Triggered == 0 {
		t.Fatalf("summary = %+v", s)
	}
	// The workload's drop and delete burst are in the audit log, which
	// verifies.
	out, err := exec.Command(godwit, "audit", "verify", "--file", s.AuditLog, "--key", s.AuditKey).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d records", s.Audited)) || !strings.Contains(string(out), "every seal valid") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	out, err = exec.Command(godwit, "audit", "query", "--file", s.AuditLog, "--class", "drop,mass_delete", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var classes []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct{ Class string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("query line %q: %v", line, err)
		}
		classes = append(classes, r.Class)
	}
	slices.Sort(classes)
	if !slices.Equal(classes, []string{"drop", "mass_delete"}) {
		t.Fatalf("audited classes = %v, want one drop and one mass delete", classes)
	}
}

func TestDemo_ContinuesWhereItStopped(t *testing.T) {
	dir := t.TempDir()
	if s, _ := runDemo(t, "--ops", "100", "--data", dir); !s.Verified || s.Written != 100 {
		t.Fatalf("first run: %+v", s)
	}
	s, _ := runDemo(t, "--ops", "250", "--data", dir)
	if !s.Verified || s.Written != 150 || s.Captured != 250 {
		t.Fatalf("second run must write only the remaining 150 and verify all 250: %+v", s)
	}
}

// TestDemo_SurvivesKill9 kills the demo with SIGKILL at random moments, many
// times, restarting it each time; in the end the outbox must equal the
// source's history (the demo's own check) and pass bbolt's consistency
// check. Set GODWIT_CRASH_SEED to replay a failing run.
//
// Every run is asked for more operations than the one before, so each run
// has writes to do and a kill can land in them however fast the machine
// is. The kill moment is drawn from [20ms, longest], where longest starts
// at 600ms and shrinks to the length of any run that finished before its
// kill: the draws follow the machine's real pace, never a guess of it.
func TestDemo_SurvivesKill9(t *testing.T) {
	rng := crashRNG(t, 1)

	const kills, step = 20, 100
	ops := 1000
	dir := t.TempDir()
	longest := 600 * time.Millisecond
	killed, finished := 0, 0
	for attempt := 0; killed < kills; attempt++ {
		if attempt == 10*kills {
			t.Fatalf("only %d of %d runs were killed before they finished (the kill moment never fell inside a run)", killed, attempt)
		}
		ops += step
		cmd := exec.Command(godwit, "demo", "--json", "--ops", strconv.Itoa(ops), "--data", dir)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		started := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := 20*time.Millisecond + time.Duration(rng.Int64N(int64(longest-20*time.Millisecond)+1))
		timer := time.NewTimer(delay)
		select {
		case err := <-done:
			timer.Stop()
			if err != nil {
				t.Fatalf("demo failed on its own before the kill (run %d, %d ops): %v", attempt, ops, err)
			}
			// It finished before the kill: later kills are drawn
			// within the length of this run.
			finished++
			if took := time.Since(started); took > 40*time.Millisecond && took < longest {
				longest = took
			}
		case <-timer.C:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
			killed++
		}
	}
	t.Logf("killed the demo %d times; %d runs finished before their kill; %d operations", killed, finished, ops)

	s, _ := runDemo(t, "--ops", strconv.Itoa(ops), "--data", dir)
	if want := uint64(ops); !s.Verified || s.Captured != want || s.Delivered["events"] != want || s.Replicated != want {
		t.Fatalf("after %d kills: %+v", killed, s)
	}
	ob, err := outbox.Open(s.Outbox, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	if err := ob.Check(); err != nil {
		t.Fatalf("outbox consistency after kills: %v", err)
	}
}

// crashRNG returns the random source choosing a crash test's kill moments,
// seeded from the clock or GODWIT_CRASH_SEED, and logs the seed to replay.
func crashRNG(t *testing.T, stream uint64) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("GODWIT_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("crash seed %d (GODWIT_CRASH_SEED=%d to replay)", seed, seed)
	return rand.New(rand.NewPCG(seed, stream))
}

func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "godwit.yaml")
	cfg := `
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources:
  - id: local
    uri: lungo:source.lungo
sinks:
  - id: events
    type: jsonl
    jsonl: {path: events.jsonl}
`
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// serve starts `godwit serve` and returns once it logged that it runs.
func serve(t *testing.T, cfg string) (*exec.Cmd, *bytes.Buffer, chan error) {
	t.Helper()
	cmd := exec.Command(godwit, "serve", "--config", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	running := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !signalled && strings.Contains(sc.Text(), "change stream open") {
				signalled = true
				close(running)
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("serve exited early (%v):\n%s", err, log.String())
	case <-time.After(testwait.Long):
		t.Fatalf("serve did not start:\n%s", log.String())
	}
	return cmd, &log, done
}

func TestServe_SIGTERMStopsCleanly(t *testing.T) {
	cmd, log, done := serve(t, writeConfig(t, t.TempDir()))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM, want 0:\n%s", err, log)
		}
	case <-time.After(testwait.Long):
		t.Fatal("serve did not exit within 30s of SIGTERM")
	}
	if !strings.Contains(log.String(), "godwit stopped") {
		t.Fatalf("no shutdown message:\n%s", log)
	}
}

func TestServe_SecondProcessFailsFast(t *testing.T) {
	cfg := writeConfig(t, t.TempDir())
	serve(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	out, err := exec.CommandContext(ctx, godwit, "serve", "--config", cfg).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatal("the second serve did not fail fast")
	}
	if err == nil || !strings.Contains(string(out), "in use by another process") ||
		!strings.Contains(string(out), "stop the other godwit") {
		t.Fatalf("second serve: err=%v output:\n%s", err, out)
	}
}

func TestServe_BadConfigNamesTheField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("sources: [{id: a, uri: 'mysql://root:topsecret@h/db'}]\n"), 0o644)
	out, err := exec.Command(godwit, "serve", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "sources[0].uri") || strings.Contains(string(out), "topsecret") {
		t.Fatalf("err=%v output:\n%s", err, out)
	}
}

// TestServe_LogsNeverContainPasswords points a source at a closed port with
// a sentinel password and reads every log line through several reconnects.
func TestServe_LogsNeverContainPasswords(t *testing.T) {
	const sentinel = "S3ntinel-Pa55word"
	dir := t.TempDir()
	path := filepath.Join(dir, "godwit.yaml")
	cfg := fmt.Sprintf(`
data_dir: data
api: {http_addr: "127.0.0.1:0", grpc_addr: "127.0.0.1:0"}
sources:
  - id: remote
    uri: "mongodb://godwit:%s@127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
`, sentinel)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(godwit, "serve", "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var log bytes.Buffer
	failures := 0
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "change stream failed") {
			if failures++; failures == 3 {
				_ = cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, log.String())
	}
	if failures < 3 {
		t.Fatalf("expected reconnect attempts to be logged:\n%s", log.String())
	}
	if strings.Contains(log.String(), sentinel) {
		t.Fatalf("a log line contains the password:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "godwit:xxxxx@127.0.0.1:1") {
		t.Fatalf("the redacted URI should still say where godwit connects:\n%s", log.String())
	}
}

// TestVerify_ComparesTwoDeployments runs `godwit verify` on two embedded
// deployments: equal, then with one document changed on the target.
func TestVerify_ComparesTwoDeployments(t *testing.T) {
	dir := t.TempDir()
	write := func(file string, docs ...bson.D) {
		t.Helper()
		conn, err := mongodb.Open(context.Background(), "lungo:"+filepath.Join(dir, file), "")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		for _, d := range docs {
			if _, err := conn.Client.Database("shop").Collection("orders").ReplaceOne(context.Background(),
				bson.D{d[0]}, d, options.Replace().SetUpsert(true)); err != nil {
				t.Fatal(err)
			}
		}
	}
	doc := func(id, qty int) bson.D { return bson.D{{Key: "_id", Value: id}, {Key: "qty", Value: qty}} }
	docs := []bson.D{doc(1, 2), doc(2, 5), doc(3, 7)}
	write("a.lungo", docs...)
	write("b.lungo", docs...)
	cfg := filepath.Join(dir, "godwit.yaml")
	os.WriteFile(cfg, []byte(`
sources: [{id: a, uri: "lungo:a.lungo"}]
sinks: [{id: a2b, type: replicate, replicate: {source: a, target: "lungo:b.lungo"}}]
`), 0o644)

	out, err := exec.Command(godwit, "verify", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "equal") {
		t.Fatalf("equal deployments: %v\n%s", err, string(out))
	}
	write("b.lungo", doc(2, 6))
	out, err = exec.Command(godwit, "verify", "--config", cfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "shop.orders") || !strings.Contains(string(out), "2") {
		t.Fatalf("a changed document must exit 1 and name the namespace and _id: %v\n%s", err, out)
	}
}
