package outbox_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
)

// The crash tests run a capture-and-drain workload in a child process (this
// test binary, re-executed) over an outbox with tiny segments, so that
// nearly every append rotates and nearly every ack deletes a segment. The
// child stops at a failpoint (a step of rotation, retention or migration
// where a crash leaves more than one file changed) and the parent kills it
// there with SIGKILL, or kills it at a random moment; then it reopens the
// outbox and checks it.
const (
	childEnv      = "GODWIT_OUTBOX_CHILD"
	failpointEnv  = "GODWIT_OUTBOX_FAILPOINT"
	failpointHits = "GODWIT_OUTBOX_FAILPOINT_HIT"

	killEvents    = 2000 // events the workload appends in all
	killBatch     = 40   // events per append
	killPage      = 55   // events per ack
	killEventSize = 200
	killSegment   = 8 << 10
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		if err := runChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func killOptions() outbox.Options {
	return outbox.Options{MaxBytes: -1, SegmentBytes: killSegment, LockTimeout: 10 * time.Second}
}

// runChild appends event i at sequence i, for i from the source's
// checkpoint on, and drains and acks as sink k would, until all killEvents
// are appended and acknowledged.
func runChild(dir string) error {
	if name := os.Getenv(failpointEnv); name != "" {
		want, _ := strconv.Atoi(os.Getenv(failpointHits))
		hits := 0
		outbox.SetFailpoint(func(n string) {
			if n != name {
				return
			}
			if hits++; hits == want {
				fmt.Println("failpoint", n)
				select {} // the parent kills us here
			}
		})
	}
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), killOptions())
	if err != nil {
		return err
	}
	defer ob.Close(context.Background())
	sink, err := ob.RegisterSink(outbox.SinkCursor("k"))
	if err != nil {
		return err
	}
	src, _, err := ob.Source("s")
	if err != nil {
		return err
	}
	next := 1
	if len(src.Token) > 0 {
		if next, err = strconv.Atoi(string(src.Token)); err != nil {
			return err
		}
		next++
	}
	acked := sink.Acked
	ctx := context.Background()
	for round := 0; next <= killEvents || acked < uint64(killEvents); round++ {
		if next <= killEvents {
			n := min(killBatch, killEvents-next+1)
			token := strconv.Itoa(next + n - 1)
			if _, err := ob.Append(ctx, "s", events(next, n, killEventSize), outbox.Checkpoint{Token: []byte(token)}); err != nil {
				return err
			}
			next += n
		}
		recs, err := ob.Read(acked, killPage, 0)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			acked = recs[len(recs)-1].Seq
			if err := ob.Ack(outbox.SinkCursor("k"), acked, uint64(len(recs))); err != nil {
				return err
			}
		}
		fmt.Println("progress", round)
	}
	return nil
}

// startChild runs the workload until it prints a line for which stop
// reports true (then kills it with SIGKILL) or ends by itself.
func startChild(t *testing.T, dir string, env []string, stop func(line string) bool) (killed bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+dir), env...)
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
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if stop(sc.Text()) {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
			break
		}
	}
	_, _ = io.Copy(io.Discard, out) // the rest, so Wait can return
	err = cmd.Wait()
	if !killed && err != nil {
		t.Fatalf("child failed: %v\n%s", err, stderr.String())
	}
	return killed
}

// checkAfterCrash reopens the outbox as a restarted godwit would and checks
// what the crash may not break: bbolt's and the outbox's consistency
// checks pass; the source's checkpoint is exactly the last appended event
// (nothing appended without its checkpoint, no checkpoint without its
// events); every retained event sits at its own sequence (nothing lost,
// nothing appended twice); retention keeps exactly what the sink has not
// acknowledged; and no file is left behind that retention or a rotation
// should have removed.
func checkAfterCrash(t *testing.T, dir string) (last, acked uint64) {
	t.Helper()
	path := filepath.Join(dir, "outbox.db")
	ob, err := outbox.Open(path, killOptions())
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer ob.Close(context.Background())
	if err := ob.Check(); err != nil {
		t.Fatalf("check after the crash: %v", err)
	}
	st := ob.Stats()
	src, _, err := ob.Source("s")
	if err != nil {
		t.Fatal(err)
	}
	if token := strconv.FormatUint(st.Last, 10); st.Last > 0 && string(src.Token) != token {
		t.Fatalf("checkpoint %q, last sequence %d: the checkpoint must cover exactly the appended events", src.Token, st.Last)
	}
	sink, ok, err := ob.Sink(outbox.SinkCursor("k"))
	if err != nil || (!ok && st.Last > 0) {
		t.Fatalf("cursor of sink k: %v, %v", ok, err)
	}
	if sink.Acked > st.Last {
		t.Fatalf("sink acked %d past the last sequence %d", sink.Acked, st.Last)
	}
	wantOldest := sink.Acked + 1
	if sink.Acked == st.Last {
		wantOldest = 0
	}
	if st.Oldest != wantOldest {
		t.Fatalf("oldest retained %d, want %d (sink acked %d, last %d)", st.Oldest, wantOldest, sink.Acked, st.Last)
	}
	for after := sink.Acked; after < st.Last; {
		recs, err := ob.Read(after, 500, 0)
		if err != nil || len(recs) == 0 {
			t.Fatalf("read after %d of %d: %d records, %v", after, st.Last, len(recs), err)
		}
		for _, r := range recs {
			if got := eventIndex(r.Raw); r.Seq != after+1 || got != r.Seq {
				t.Fatalf("after %d: record %d holds event %d", after, r.Seq, got)
			}
			after = r.Seq
		}
	}
	files, err := os.ReadDir(outbox.SegmentDir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != st.Segments {
		var names []string
		for _, f := range files {
			names = append(names, f.Name())
		}
		t.Fatalf("segment directory holds %v, the outbox uses %d segments", names, st.Segments)
	}
	// Segments are named after their first sequence: one whose successor
	// starts at or before the first unacknowledged event holds nothing
	// retention keeps, and its space must have been returned.
	for i := 0; i+1 < len(files); i++ {
		next, err := strconv.ParseUint(strings.TrimSuffix(files[i+1].Name(), ".seg"), 10, 64)
		if err != nil {
			t.Fatalf("segment name %s: %v", files[i+1].Name(), err)
		}
		if next <= sink.Acked+1 {
			t.Fatalf("segment %s holds only acknowledged events (sink acked %d) and was not deleted", files[i].Name(), sink.Acked)
		}
	}
	return st.Last, sink.Acked
}

func eventIndex(raw []byte) uint64 { return binary.LittleEndian.Uint64(raw[7:15]) }

func TestOutbox_SurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	at := func(name string, hit int) []string {
		return []string{failpointEnv + "=" + name, failpointHits + "=" + strconv.Itoa(hit)}
	}
	atFailpoint := func(line string) bool { return strings.HasPrefix(line, "failpoint ") }
	cases := []struct {
		name   string
		legacy bool // start from a single-file outbox
		runs   [][]string
	}{
		{name: "DuringRotation", runs: [][]string{
			at("rotate-written", 1), at("rotate-renamed", 1), at("rotate-written", 7), at("rotate-renamed", 5),
		}},
		{name: "DuringRetentionOfASegment", runs: [][]string{
			at("retain-remove", 1), at("retain-remove", 2), at("retain-remove", 9),
		}},
		{name: "DuringMigration", legacy: true, runs: [][]string{at("migrate-linked", 1)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.legacy {
				writeLegacy(t, filepath.Join(dir, "outbox.db"), 300, 120)
			}
			var prevLast uint64
			for _, env := range c.runs {
				if !startChild(t, dir, env, atFailpoint) {
					t.Fatalf("the child finished without reaching %v", env)
				}
				last, _ := checkAfterCrash(t, dir)
				if last < prevLast {
					t.Fatalf("last sequence went back from %d to %d", prevLast, last)
				}
				prevLast = last
			}
			finish(t, dir)
		})
	}
	t.Run("AtRandomMoments", func(t *testing.T) {
		dir := t.TempDir()
		for i := range 6 {
			stopAt := fmt.Sprintf("progress %d", 3+i*4)
			startChild(t, dir, nil, func(line string) bool { return line == stopAt })
			checkAfterCrash(t, dir)
		}
		finish(t, dir)
	})
}

// finish runs the workload to its end and checks that everything was
// appended once, acknowledged, and its space returned.
func finish(t *testing.T, dir string) {
	t.Helper()
	startChild(t, dir, nil, func(string) bool { return false })
	last, acked := checkAfterCrash(t, dir)
	if last != killEvents || acked != killEvents {
		t.Fatalf("after the last run: last %d, acked %d; want %d and %d", last, acked, killEvents, killEvents)
	}
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), killOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	if st := ob.Stats(); st.Segments != 1 || st.Bytes != 0 {
		t.Fatalf("drained outbox keeps %d segments, %d bytes; want 1 and 0", st.Segments, st.Bytes)
	}
}

// writeLegacy writes a single-file (format 1) outbox as godwit wrote it
// before segments: events 1..n of source s at their own sequences, of
// which sink k acknowledged (and retention deleted) the first acked, and one
// dead letter of sink k.
func writeLegacy(t testing.TB, path string, n, acked int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err = db.Update(func(tx *bolt.Tx) error {
		var size int64
		ev, err := tx.CreateBucket([]byte("events"))
		if err != nil {
			return err
		}
		for i := acked + 1; i <= n; i++ {
			v := outbox.EncodeRecord(nil, "s", at, event(i, killEventSize))
			size += int64(len(v) + 8)
			if err := ev.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), v); err != nil {
				return err
			}
		}
		if err := ev.SetSequence(uint64(n)); err != nil {
			return err
		}
		put := func(bucket, key string, v any) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			data, ok := v.([]byte)
			if !ok {
				if data, err = json.Marshal(v); err != nil {
					return err
				}
			}
			return b.Put([]byte(key), data)
		}
		if err := put("meta", "format", binary.BigEndian.AppendUint64(nil, 1)); err != nil {
			return err
		}
		if err := put("meta", "bytes", binary.BigEndian.AppendUint64(nil, uint64(size))); err != nil {
			return err
		}
		if err := put("sources", "s", outbox.SourceState{Token: []byte(strconv.Itoa(n)), Fingerprint: "fp", State: outbox.StateRunning, Captured: uint64(n), UpdatedAt: at}); err != nil {
			return err
		}
		if err := put("sinks", "k", outbox.SinkState{Acked: uint64(acked), Delivered: uint64(acked) - 1, Parked: 1, UpdatedAt: at}); err != nil {
			return err
		}
		dl := outbox.DeadLetter{Error: "boom", Attempts: 3, At: at, RawValue: outbox.EncodeRecord(nil, "s", at, event(acked, killEventSize))}
		return put("dead/k", string(binary.BigEndian.AppendUint64(nil, uint64(acked))), dl)
	})
	if err != nil {
		t.Fatal(err)
	}
}
