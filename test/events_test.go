package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	adminpb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
	eventpb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// keptDemo is `godwit demo --keep-running` running in the background.
type keptDemo struct {
	cmd     *exec.Cmd
	summary demoSummary
	grpc    string
	http    string
	source  string // mongodb:// URI of the source with --listen
	stderr  *syncBuffer
	done    chan error
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

// keepDemo runs the demo with --keep-running on free ports and returns once
// it says where it listens.
func keepDemo(t *testing.T, args ...string) *keptDemo {
	t.Helper()
	cmd := exec.Command(godwit, append([]string{"demo", "--json", "--keep-running",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &keptDemo{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		d.done <- cmd.Wait()
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended early:\n%s", d.stderr)
			}
			return l
		case <-time.After(testwait.Long):
			t.Fatalf("demo said nothing:\n%s", d.stderr)
		}
		return ""
	}
	if err := json.Unmarshal([]byte(next()), &d.summary); err != nil || !d.summary.Verified {
		t.Fatalf("summary %+v, %v\n%s", d.summary, err, d.stderr)
	}
	var running struct {
		Running   bool   `json:"running"`
		GRPCAddr  string `json:"grpc_addr"`
		HTTPAddr  string `json:"http_addr"`
		SourceURI string `json:"source_uri"`
	}
	if line := next(); json.Unmarshal([]byte(line), &running) != nil || !running.Running {
		t.Fatalf("second line %q, want where the daemon listens", line)
	}
	d.grpc, d.http, d.source = running.GRPCAddr, running.HTTPAddr, running.SourceURI
	return d
}

// stop interrupts the demo as Ctrl-C does and waits for a clean exit.
func (d *keptDemo) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("demo exited with %v after SIGINT:\n%s", err, d.stderr)
		}
	case <-time.After(testwait.Long):
		t.Fatalf("demo did not stop within 30s of SIGINT:\n%s", d.stderr)
	}
}

// cli runs a godwit command against the demo and returns its stdout.
func (d *keptDemo) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(godwit, append(args, "--addr", d.grpc)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("godwit %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestDemo_KeepRunning_Status: `godwit status --json` of the demo's daemon
// agrees with its outbox, read after the daemon stopped (nothing writes in
// between: no --rate).
func TestDemo_KeepRunning_Status(t *testing.T) {
	d := keepDemo(t, "--ops", "120", "--data", t.TempDir())
	var st adminpb.StatusResponse
	if err := protojson.Unmarshal([]byte(d.cli(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	human := d.cli(t, "status")
	for _, want := range []string{"SOURCES", "demo", "running", "SINKS", "replica", "PIPELINES", "streaming", "TRIGGERS", "cache-orders", "OUTBOX"} {
		if !strings.Contains(human, want) {
			t.Errorf("status output lacks %q:\n%s", want, human)
		}
	}
	d.stop(t)
	if !strings.Contains(d.stderr.String(), "--ops 120` verifies them all") {
		t.Errorf("no word on how to verify after stopping:\n%s", d.stderr)
	}

	ob, err := outbox.Open(d.summary.Outbox, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	obs := ob.Stats()
	if o := st.Outbox; o.LastSequence != obs.Last || o.OldestSequence != obs.Oldest || o.Bytes != obs.Bytes || o.MaxBytes != obs.MaxBytes || o.Path != d.summary.Outbox {
		t.Errorf("status outbox %v, outbox %+v", o, obs)
	}
	src, _, _ := ob.Source("demo")
	if len(st.Sources) != 1 || st.Sources[0].Captured != src.Captured || st.Sources[0].Captured != 120 || st.Sources[0].State != "running" {
		t.Errorf("status sources %v, stored %+v", st.Sources, src)
	}
	sinks, _ := ob.Sinks()
	for _, s := range st.Sinks {
		if s.Acked != sinks[s.Id].Acked || s.Delivered != sinks[s.Id].Delivered || s.Backlog != obs.Last-s.Acked {
			t.Errorf("status sink %v, stored %+v", s, sinks[s.Id])
		}
	}
	if p := st.Pipelines; len(p) != 1 || p[0].Id != "replica" || p[0].Phase != "streaming" || p[0].Applied+p[0].LagEvents == 0 || p[0].LastError != "" {
		t.Errorf("status pipelines %v, want the demo's replica streaming", p)
	}
	if len(st.Triggers) != 3 || len(st.Problems) != 0 {
		t.Errorf("triggers %v, problems %q", st.Triggers, st.Problems)
	}
}

// eventSeqs reads `events tail --json` output: the sequences of the events.
func eventSeqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m eventpb.SubscribeResponse
		if err := protojson.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if e := m.GetEvent(); e != nil {
			seqs = append(seqs, e.Sequence)
		}
	}
	return seqs
}

func TestEvents_Tail(t *testing.T) {
	d := keepDemo(t, "--ops", "60", "--data", t.TempDir(), "--rate", "40")
	captured := d.summary.Captured

	t.Run("Live", func(t *testing.T) {
		seqs := eventSeqs(t, d.cli(t, "events", "tail", "--json", "--count", "3"))
		if len(seqs) != 3 || seqs[0] <= captured || !slices.IsSorted(seqs) {
			t.Fatalf("live tail got %v; want 3 new events after %d", seqs, captured)
		}
	})

	t.Run("FromSequenceWithFilters", func(t *testing.T) {
		out := d.cli(t, "events", "tail", "--from", "1", "--ns", "shop.*", "--op", "insert", "--count", "4")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("got %d lines:\n%s", len(lines), out)
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) < 4 || f[2] != "insert" || !strings.HasPrefix(f[3], "shop.") {
				t.Fatalf("line %q is not a shop.* insert", l)
			}
		}
	})

	t.Run("DurableResumes", func(t *testing.T) {
		first := eventSeqs(t, d.cli(t, "events", "tail", "--json", "--durable", "e2e", "--from", "1", "--count", "3"))
		second := eventSeqs(t, d.cli(t, "events", "tail", "--json", "--durable", "e2e", "--count", "3"))
		if !slices.Equal(first, []uint64{1, 2, 3}) || !slices.Equal(second, []uint64{4, 5, 6}) {
			t.Fatalf("durable tail got %v then %v; want 1..3 then 4..6", first, second)
		}
		if out := d.cli(t, "events", "delete", "e2e"); !strings.Contains(out, "deleted") {
			t.Fatalf("delete: %q", out)
		}
	})

	t.Run("BadFlagsNameTheField", func(t *testing.T) {
		out, err := exec.Command(godwit, "events", "tail", "--addr", d.grpc, "--op", "upsert").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "operation_types[0]") {
			t.Fatalf("unknown op: %v\n%s", err, out)
		}
	})

	d.stop(t)
	if total := d.stderr.String(); !strings.Contains(total, "workload has") {
		t.Fatalf("no final count:\n%s", total)
	}
}
