package jsonl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/jsonl"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

const fileName = "events.jsonl"

func TestSink_Conformance(t *testing.T) {
	for _, canonical := range []bool{false, true} {
		name := "Relaxed"
		if canonical {
			name = "Canonical"
		}
		t.Run(name, func(t *testing.T) {
			sinktest.Run(t, sinktest.Harness{
				Open: func(t *testing.T, dir string) sink.Sink {
					return openSink(t, filepath.Join(dir, fileName), canonical)
				},
				Check: func(t *testing.T, dir string, want []outbox.Record) {
					checkFile(t, filepath.Join(dir, fileName), want, canonical)
				},
			})
		})
	}
}

func openSink(t *testing.T, path string, canonical bool) *jsonl.Sink {
	t.Helper()
	s, err := jsonl.Open(jsonl.Config{Path: path, Canonical: canonical})
	if err != nil {
		t.Fatalf("open jsonl sink: %v", err)
	}
	return s
}

// checkFile asserts that the file holds exactly want, one line per event in
// order, each line a faithful copy of its record.
func checkFile(t *testing.T, path string, want []outbox.Record, canonical bool) {
	t.Helper()
	lines, err := jsonl.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	got := make([]uint64, len(lines))
	for i, l := range lines {
		got[i] = l.Seq
	}
	wantSeqs := make([]uint64, len(want))
	for i, r := range want {
		wantSeqs[i] = r.Seq
	}
	if !slices.Equal(got, wantSeqs) {
		t.Fatalf("file holds sequences %v, want %v", got, wantSeqs)
	}
	for i, l := range lines {
		r := want[i]
		if l.Source != r.Source || !l.CapturedAt.Equal(r.CapturedAt) {
			t.Errorf("line %d: source %q captured %v, want %q %v", l.Seq, l.Source, l.CapturedAt, r.Source, r.CapturedAt)
		}
		if canonical {
			// Canonical Extended JSON keeps every BSON type: it converts
			// back to the very bytes the server sent.
			var d bson.D
			if err := bson.UnmarshalExtJSON(l.Event, true, &d); err != nil {
				t.Fatalf("line %d: %v", l.Seq, err)
			}
			back, err := bson.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, r.Raw) {
				t.Errorf("line %d: event does not convert back to the stored BSON", l.Seq)
			}
			continue
		}
		wantJSON, err := bson.MarshalExtJSON(bson.Raw(r.Raw), false, false)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(l.Event, wantJSON) {
			t.Errorf("line %d: event %s, want %s", l.Seq, l.Event, wantJSON)
		}
	}
}

func newOutbox(t *testing.T) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ob.Check(); err != nil {
			t.Errorf("outbox check: %v", err)
		}
		ob.Close(context.Background())
	})
	return ob
}

func appendEvents(t *testing.T, ob *outbox.Outbox, evs [][]byte) []outbox.Record {
	t.Helper()
	after := ob.LastSeq()
	if _, err := ob.Append(context.Background(), "shop", evs, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	recs, err := ob.Read(after, len(evs), 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// drain runs a runner for s until upTo is acked and returns its status.
func drain(t *testing.T, ob *outbox.Outbox, s sink.Sink, upTo uint64) sink.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	r := sink.NewRunner(outbox.SinkCursor("file"), ob, s, sink.RunnerConfig{BatchSize: 4, MaxAttempts: 3,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := r.WaitAcked(ctx, upTo); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return r.Status()
}

func closeSink(t *testing.T, s *jsonl.Sink) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func appendToFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpen(t *testing.T) {
	t.Run("CutsTornLastLine", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileName)
		ob := newOutbox(t)
		all := sinktest.Inserts(20)
		recs := appendEvents(t, ob, all[:10])
		s := openSink(t, path, false)
		drain(t, ob, s, 10)
		// Events 11 and 12 reach the file, then godwit dies before acking
		// them and in the middle of writing event 13.
		recs = append(recs, appendEvents(t, ob, all[10:])...)
		if err := s.Deliver(context.Background(), recs[10:12]); err != nil {
			t.Fatal(err)
		}
		closeSink(t, s)
		durable := readBytes(t, path)
		appendToFile(t, path, `{"seq":13,"source":"shop","captured_at":"2026-11-2`)

		s = openSink(t, path, false)
		if got := readBytes(t, path); !bytes.Equal(got, durable) {
			t.Fatalf("after reopen the file ends %q, want the torn line cut", got[max(0, len(got)-60):])
		}
		drain(t, ob, s, 20)
		closeSink(t, s)
		checkFile(t, path, recs, false)
	})

	t.Run("CutsTornFirstLine", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileName)
		if err := os.WriteFile(path, []byte(`{"seq":1,"sou`), 0o644); err != nil {
			t.Fatal(err)
		}
		ob := newOutbox(t)
		recs := appendEvents(t, ob, sinktest.Inserts(3))
		s := openSink(t, path, false)
		drain(t, ob, s, 3)
		closeSink(t, s)
		checkFile(t, path, recs, false)
	})

	t.Run("RefusesForeignFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "notes.txt")
		content := []byte("shopping list\nmilk\n")
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := jsonl.Open(jsonl.Config{Path: path}); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("open of a file that is not a jsonl sink = %v, want an error naming it", err)
		}
		if got := readBytes(t, path); !bytes.Equal(got, content) {
			t.Fatalf("refused file was changed to %q", got)
		}
	})

	t.Run("RequiresPath", func(t *testing.T) {
		if _, err := jsonl.Open(jsonl.Config{}); err == nil || !strings.HasPrefix(err.Error(), "path") {
			t.Fatalf("open without a path = %v, want an error naming path", err)
		}
	})
}

func TestSink_Deliver(t *testing.T) {
	rec := outbox.Record{Seq: 1, Source: `sh"op`, CapturedAt: time.Date(2026, 11, 22, 9, 35, 16, 123000000, time.UTC), Raw: sinktest.Inserts(1)[0]}

	t.Run("RelaxedAndCanonical", func(t *testing.T) {
		for _, tc := range []struct {
			canonical bool
			want      []string
			notWant   []string
		}{
			{false, []string{`"n":10`, `"documentKey":{"_id":1}`}, []string{`$numberLong`}},
			{true, []string{`"n":{"$numberLong":"10"}`, `"clusterTime":{"$timestamp":{"t":1700000000,"i":1}}`}, []string{`"n":10`}},
		} {
			path := filepath.Join(t.TempDir(), fileName)
			s := openSink(t, path, tc.canonical)
			if err := s.Deliver(context.Background(), []outbox.Record{rec}); err != nil {
				t.Fatal(err)
			}
			closeSink(t, s)
			line := string(readBytes(t, path))
			if !strings.HasPrefix(line, `{"seq":1,"source":"sh\"op","captured_at":"2026-11-22T09:35:16.123Z","event":{`) || !strings.HasSuffix(line, "}\n") {
				t.Errorf("canonical=%v: line %q", tc.canonical, line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("canonical=%v: line %q lacks %s", tc.canonical, line, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(line, w) {
					t.Errorf("canonical=%v: line %q has %s", tc.canonical, line, w)
				}
			}
			checkFile(t, path, []outbox.Record{rec}, tc.canonical)
		}
	})

	t.Run("NotBSONIsPermanent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileName)
		s := openSink(t, path, false)
		good := sinktest.Inserts(3)
		batch := []outbox.Record{
			{Seq: 1, Source: "shop", Raw: good[0]},
			{Seq: 2, Source: "shop", Raw: []byte{8, 0, 0, 0, 0x99, 'a', 0, 0}},
			{Seq: 3, Source: "shop", Raw: good[2]},
		}
		err := s.Deliver(context.Background(), batch)
		if !sink.IsPermanent(err) || !strings.Contains(err.Error(), "event 2") {
			t.Fatalf("deliver of a non-BSON event = %v, want a permanent error naming event 2", err)
		}
		// The failed batch left nothing behind; the next one lands cleanly.
		if err := s.Deliver(context.Background(), batch[:1]); err != nil {
			t.Fatal(err)
		}
		closeSink(t, s)
		checkFile(t, path, batch[:1], false)
	})

	t.Run("RunnerParksNotBSON", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileName)
		ob := newOutbox(t)
		good := sinktest.Inserts(6)
		recs := appendEvents(t, ob, [][]byte{good[0], good[1], {8, 0, 0, 0, 0x99, 'a', 0, 0}, good[3], good[4]})
		s := openSink(t, path, false)
		st := drain(t, ob, s, 5)
		closeSink(t, s)
		if st.Parked != 1 || st.Delivered != 4 {
			t.Fatalf("status = %+v, want 4 delivered and 1 parked", st)
		}
		dead, err := ob.DeadLetters(outbox.SinkCursor("file"))
		if err != nil || len(dead) != 1 || dead[0].Record.Seq != 3 || dead[0].Attempts != 1 || !strings.Contains(dead[0].Error, "not valid BSON") {
			t.Fatalf("dead letters = %+v, %v; want event 3 after one attempt", dead, err)
		}
		checkFile(t, path, slices.Delete(slices.Clone(recs), 2, 3), false)
	})

	t.Run("SkipsReplay", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileName)
		s := openSink(t, path, false)
		evs := sinktest.Inserts(4)
		recs := make([]outbox.Record, len(evs))
		for i, e := range evs {
			recs[i] = outbox.Record{Seq: uint64(i + 1), Source: "shop", Raw: e}
		}
		for _, b := range [][]outbox.Record{recs[:2], recs[:2], recs[1:4]} {
			if err := s.Deliver(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		closeSink(t, s)
		checkFile(t, path, recs, false)
	})
}

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), fileName)
	if err := os.WriteFile(path, []byte(`{"seq":1,"source":"a","captured_at":"2026-01-01T00:00:00Z","event":{}}`+"\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lines, err := jsonl.ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), "line 2") || len(lines) != 1 {
		t.Fatalf("ReadFile = %d lines, %v; want line 1 and an error naming line 2", len(lines), err)
	}
	var ev map[string]any
	if json.Unmarshal(lines[0].Event, &ev) != nil {
		t.Fatalf("event %s", lines[0].Event)
	}
}
