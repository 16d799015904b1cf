package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// helperEnv makes the test binary act as a godwit daemon for
// TestSink_killed: see TestMain.
const helperEnv = "GODWIT_AUDIT_KILL_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		if err := killHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killEvents is the event stream of the kill test: drops, bursts above and
// below the threshold in two namespaces, and a burst still open at the end.
func killEvents() [][]byte {
	var ev []evt
	for g := range 40 {
		at := time.Duration(g) * time.Minute
		ev = append(ev, evt{op: "drop", db: "shop", coll: fmt.Sprint("t", g), at: at})
		ev = append(ev, deletes("orders", g*100, 4+g%5*2, at+time.Second, 200*time.Millisecond)...) // 4..12 deletes
		ev = append(ev, deletes("users", g*100, 7, at+2*time.Second, time.Second)...)
		ev = append(ev, evt{op: "insert", db: "shop", coll: "orders", id: g, at: at + 20*time.Second})
	}
	ev = append(ev, deletes("orders", 5000, 9, time.Hour, 10*time.Millisecond)...) // open at the end
	out := make([][]byte, len(ev))
	for i, e := range ev {
		out[i] = e.raw()
	}
	return out
}

// killHelper is one run of a daemon: outbox, runner, audit sink. It appends
// the events on its first run, drains them into the sink, and closes.
func killHelper(dir string) error {
	ctx := context.Background()
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer ob.Close(context.Background())
	if ob.LastSeq() == 0 {
		if _, err := ob.Append(ctx, "src", killEvents(), outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
			return err
		}
	}
	s, err := audit.Open(mdConfig(filepath.Join(dir, "audit.jsonl")), zerolog.Nop())
	if err != nil {
		return err
	}
	r := sink.NewRunner(outbox.SinkCursor("audit"), ob, s, sink.RunnerConfig{BatchSize: 5, MaxAttempts: 1000, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, zerolog.Nop())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	err = r.WaitAcked(ctx, ob.LastSeq())
	cancel()
	if e := <-done; err == nil {
		err = e
	}
	if e := s.Close(ctx); err == nil {
		err = e
	}
	return err
}

// TestSink_killed kills a daemon with SIGKILL at random points while it
// drains into the audit sink, restarts it, and checks that the log holds
// exactly the records of an uninterrupted run: no gap, no duplicate.
func TestSink_killed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	refPath := logPath(t)
	s := open(t, mdConfig(refPath))
	deliver(t, s, (&feed{}).records(killEvents()...))
	closeSink(t, s)
	want := summarize(readLog(t, refPath))

	// Time one uninterrupted run, to kill the others anywhere within it.
	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	full := time.Since(start)
	t.Logf("an uninterrupted run takes %v", full)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	midRun := false
	for round := range 3 {
		t.Run(fmt.Sprint("Round", round), func(t *testing.T) {
			dir := t.TempDir()
			kills := 0
			var progress []int // records in the log after each kill
			for run := 0; ; run++ {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), helperEnv+"="+dir)
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				var err error
				if kills < 8 && run < 50 {
					select {
					case err = <-exited:
					case <-time.After(time.Duration(rng.Int64N(int64(full) / 3))):
						cmd.Process.Kill() // SIGKILL
						<-exited
						kills++
						progress = append(progress, countLines(t, filepath.Join(dir, "audit.jsonl")))
						continue
					}
				} else {
					err = <-exited
				}
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("helper run %d failed: %v", run, err)
				} else if err != nil {
					t.Fatal(err)
				}
				break
			}
			t.Logf("%d kills; records in the log after each: %v", kills, progress)
			recs := readLog(t, filepath.Join(dir, "audit.jsonl"))
			if got := summarize(recs); got != want {
				t.Fatalf("after %d kills:\n%s\nwant:\n%s", kills, got, want)
			}
			// Every seal verifies with the key written on the first start
			// (a kill between writing a key file and saving the state
			// leaves an unused one beside it).
			if rep := checkSealed(t, filepath.Join(dir, "audit.jsonl"), keyFiles(t, filepath.Join(dir, "audit.jsonl"))...); rep.SealedFrom() != 1 || len(rep.Segments) != 1 {
				t.Fatalf("after %d kills: segments %+v, want one from record 1", kills, rep.Segments)
			}
			midRun = midRun || slices.ContainsFunc(progress, func(n int) bool { return n > 0 && n < len(recs) })
		})
	}
	if !midRun {
		t.Log("no kill landed while records were being written; rerun to exercise that")
	}
}

// countLines counts the complete lines of the file at path (0 if missing).
func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{'\n'})
}
