package outbox_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/godwit-dev/godwit/outbox"
)

func TestOutbox_Segments(t *testing.T) {
	t.Run("AppendsMoveToNewSegments", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		opts := outbox.Options{MaxBytes: -1, SegmentBytes: 4 << 10}
		ob := openOutbox(t, path, opts)
		for i := range 40 {
			mustAppend(t, ob, "s", events(1+i*10, 10, 100), "t")
		}
		st := ob.Stats()
		if st.Segments < 5 || st.Last != 400 || st.Oldest != 1 {
			t.Fatalf("after 40 appends of 1,290 bytes into 4 KiB segments: %+v", st)
		}
		if got := seqs(mustRead(t, ob, 0, 1000, 0)); !equalJSON(t, got, seqRange(1, 400)) {
			t.Fatalf("read across segments = %v", got)
		}
		src, _, _ := ob.Source("s")
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		ob = openOutbox(t, path, opts)
		if got, _, _ := ob.Source("s"); !equalJSON(t, got, src) {
			t.Errorf("source after reopen = %+v, want %+v", got, src)
		}
		if last := mustAppend(t, ob, "s", events(401, 1, 100), "t2"); last != 401 {
			t.Errorf("append after reopen = %d, want 401", last)
		}
	})

	t.Run("DrainReturnsSpace", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: -1, SegmentBytes: 64 << 10})
		mustRegister(t, ob, "k")
		for i := range 50 {
			mustAppend(t, ob, "s", events(1+i*20, 20, 1000), "t")
		}
		full := ob.Stats()
		if full.FileBytes < 1<<20 {
			t.Fatalf("1 MB of events in %d bytes of files", full.FileBytes)
		}
		for after := uint64(0); after < full.Last; after += 1000 {
			mustAck(t, ob, "k", min(after+1000, full.Last))
		}
		st := ob.Stats()
		if st.Segments != 1 || st.Bytes != 0 || st.FileBytes > full.FileBytes/4 {
			t.Fatalf("drained: %d segments, %d bytes retained, %d bytes of files (before: %d segments, %d bytes of files)",
				st.Segments, st.Bytes, st.FileBytes, full.Segments, full.FileBytes)
		}
	})

	t.Run("SegmentsMissing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		ob, err := outbox.Open(path, outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ob.Close(context.Background())
		if err := os.RemoveAll(outbox.SegmentDir(path)); err != nil {
			t.Fatal(err)
		}
		if _, err := outbox.Open(path, outbox.Options{}); err == nil {
			t.Fatal("open without the segment directory succeeded")
		}
	})
}

func TestOpen_SingleFileOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	writeLegacy(t, path, 300, 120)
	ob := openOutbox(t, path, outbox.Options{})
	st := ob.Stats()
	if st.Oldest != 121 || st.Last != 300 || st.Bytes != 180*recordBytes("s", killEventSize) {
		t.Fatalf("migrated stats = %+v, want oldest 121, last 300, %d bytes", st, 180*recordBytes("s", killEventSize))
	}
	if src, ok, _ := ob.Source("s"); !ok || string(src.Token) != "300" || src.Captured != 300 || src.Fingerprint != "fp" {
		t.Errorf("migrated source = %+v", src)
	}
	if sink, ok, _ := ob.Sink(outbox.SinkCursor("k")); !ok || sink.Acked != 120 || sink.Parked != 1 {
		t.Errorf("migrated sink = %+v", sink)
	}
	if dead, err := ob.DeadLetters(outbox.SinkCursor("k")); err != nil || len(dead) != 1 || dead[0].Record.Seq != 120 || dead[0].Error != "boom" {
		t.Errorf("migrated dead letters = %+v, %v", dead, err)
	}
	recs := mustRead(t, ob, 120, 1000, 0)
	if got := seqs(recs); !equalJSON(t, got, seqRange(121, 300)) || eventIndex(recs[0].Raw) != 121 {
		t.Fatalf("migrated events = %v", got)
	}
	if last := mustAppend(t, ob, "s", events(301, 1, killEventSize), "301"); last != 301 {
		t.Fatalf("first append after the migration = %d, want 301", last)
	}
	mustRegister(t, ob, "k")
	mustAck(t, ob, "k", 301)
	if st := ob.Stats(); st.Segments != 1 || st.Bytes != 0 {
		t.Fatalf("after draining the migrated outbox: %+v, want the single file gone", st)
	}
}
