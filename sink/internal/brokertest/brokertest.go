// Package brokertest holds the scenarios the broker sinks' tests share: a
// workload of change events, the broker-down back-pressure scenario, and
// the SIGKILL crash test that re-executes the test binary as a child
// running outbox + runner + sink.
package brokertest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// Events returns n change events on docs documents of shop.orders (insert
// first, then updates, every 7th change of a document a delete followed by
// a re-insert), each with a payload of about size bytes.
func Events(n, docs, size int) [][]byte {
	out := make([][]byte, n)
	seen := map[int]int{}
	pad := strings.Repeat("x", max(size-200, 0))
	for i := range out {
		id := i % docs
		k := seen[id]
		seen[id]++
		op := "update"
		switch {
		case k == 0 || k%7 == 0:
			op = "insert"
		case k%7 == 6:
			op = "delete"
		}
		doc := bson.D{{Key: "_id", Value: int64(id)}, {Key: "v", Value: int64(i)}, {Key: "pad", Value: pad}}
		ev := bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%016X", i+1)}}},
			{Key: "operationType", Value: op},
			{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000 + uint32(i/1000), I: uint32(i%1000 + 1)}},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int64(id)}}},
		}
		switch op {
		case "insert":
			ev = append(ev, bson.E{Key: "fullDocument", Value: doc})
		case "update":
			ev = append(ev, bson.E{Key: "updateDescription", Value: bson.D{
				{Key: "updatedFields", Value: bson.D{{Key: "v", Value: int64(i)}, {Key: "pad", Value: pad}}},
				{Key: "removedFields", Value: bson.A{}}}})
		}
		raw, err := bson.Marshal(ev)
		if err != nil {
			panic(err)
		}
		out[i] = raw
	}
	return out
}

// Opener opens the sink under test.
type Opener func() (sink.Sink, error)

// BackPressure checks what a broker outage does: down is called, then
// events are appended to an outbox bounded to a few of them until the
// append pauses (capture would pause there; nothing is dropped); up is
// called and every event must be acknowledged. It returns the records.
func BackPressure(t *testing.T, s sink.Sink, down, up func()) []outbox.Record {
	t.Helper()
	ctx := testwait.Context(t)
	events := Events(40, 5, 1024)
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{MaxBytes: 10 * 1300})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	failures := make(chan error, 100)
	r := sink.NewRunner(outbox.SinkCursor("broker"), ob, s, sink.RunnerConfig{BatchSize: 4, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxAttempts: 1 << 30, OnDeliver: func(_ time.Duration, _ int, err error) {
			if err != nil {
				select {
				case failures <- err:
				default:
				}
			}
		}}, zerolog.Nop())
	if _, err := r.Register(); err != nil {
		t.Fatal(err)
	}
	down()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	defer func() { stop(); <-ran }()

	appended := make(chan error, 1)
	go func() {
		for _, ev := range events {
			if _, err := ob.Append(ctx, "src", [][]byte{ev}, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	if err := ob.WaitPaused(ctx); err != nil {
		t.Fatalf("capture never paused while the broker was down: %v", err)
	}
	select {
	case err := <-failures:
		t.Logf("while down, delivery failed as it should: %v", err)
	case <-ctx.Done():
		t.Fatal("no delivery failed while the broker was down")
	}
	if st := r.Status(); st.Parked != 0 || st.Halted {
		t.Fatalf("an event was given up while the broker was down: %+v", st)
	}
	up()
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	last := ob.LastSeq()
	if last != uint64(len(events)) {
		t.Fatalf("outbox holds %d events, want %d", last, len(events))
	}
	if err := r.WaitAcked(ctx, last); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Parked != 0 || st.Delivered < last {
		t.Fatalf("after the broker came back: %+v", st)
	}
	out := make([]outbox.Record, 0, len(events))
	for i, ev := range events {
		out = append(out, outbox.Record{Seq: uint64(i + 1), Source: "src", Raw: ev})
	}
	return out
}

// Crash settings.
const (
	childEnv = "GODWIT_BROKER_CHILD"
	// CrashEvents is how many events the crash test delivers.
	CrashEvents = 3000
	// CrashBatch is the runner's batch size in the child: the most events
	// one kill can make the broker see twice.
	CrashBatch = 50
)

// IsChild reports whether this process is a crash-test child. TestMain
// calls RunChild then.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ChildConfig is the sink configuration the parent passed (JSON).
func ChildConfig() []byte { return []byte(os.Getenv(childEnv + "_CONFIG")) }

// RunChild is the child process: it appends CrashEvents events to the
// outbox in dir unless they are there, then delivers them with a runner,
// printing one line per delivered batch, and exits once all are acked.
func RunChild(open Opener) {
	if err := runChild(os.Getenv(childEnv), open); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(dir string, open Opener) error {
	ctx := context.Background()
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		return err
	}
	defer ob.Close(context.Background())
	if ob.LastSeq() == 0 {
		// One transaction: a kill leaves all of them or none.
		if _, err := ob.Append(ctx, "src", Events(CrashEvents, 100, 256), outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
			return err
		}
	}
	s, err := open()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	r := sink.NewRunner(outbox.SinkCursor("broker"), ob, s, sink.RunnerConfig{BatchSize: CrashBatch, MinBackoff: 10 * time.Millisecond,
		MaxAttempts: 1 << 30, OnDeliver: func(_ time.Duration, n int, err error) {
			if err == nil {
				fmt.Fprintf(out, "{\"delivered\":%d}\n", n)
				out.Flush()
			}
		}}, zerolog.New(os.Stderr))
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	err = r.WaitAcked(ctx, ob.LastSeq())
	stop()
	if rerr := <-ran; err == nil {
		err = rerr
	}
	if c, ok := s.(sink.Closer); ok {
		if cerr := c.Close(ctx); err == nil {
			err = cerr
		}
	}
	return err
}

// Crash runs the child in a fresh directory, kills it with SIGKILL after
// it reported each of the delivered counts in killAt (one run per count),
// then runs it to the end. config is passed to the child (ChildConfig). It
// returns how many runs were killed while events were still undelivered.
func Crash(t *testing.T, config []byte, killAt ...int) int {
	t.Helper()
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	midway := 0
	for _, at := range killAt {
		killed, finished := runChild1(t, dir, config, at)
		if !killed {
			t.Fatalf("the child finished before it delivered %d events: raise CrashEvents", at)
		}
		if !finished {
			midway++
		}
	}
	runChild1(t, dir, config, -1)
	return midway
}

// runChild1 runs one child; with killAt >= 0 it kills the child once the
// child reported that many delivered events in this run.
func runChild1(t *testing.T, dir string, config []byte, killAt int) (killed, finished bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childEnv+"_CONFIG="+string(config))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(testwait.Long, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	delivered := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var l struct{ Delivered int }
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		delivered += l.Delivered
		if !killed && killAt >= 0 && delivered >= killAt {
			_ = cmd.Process.Kill() // SIGKILL, while the child goes on publishing
			killed = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case killed && err != nil && !errors.As(err, &ee):
		t.Fatal(err)
	case killed:
		// A child killed after its last batch exited 0 first.
		return true, err == nil
	case err != nil:
		t.Fatalf("child failed: %v\n%s", err, stderr.String())
	}
	return false, true
}
