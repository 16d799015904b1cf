package outbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
)

// waitCtx bounds a wait that must end for the test to pass; the bound only
// turns a hang into a failure.
func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Long)
	t.Cleanup(cancel)
	return ctx
}

func TestOutbox_Append(t *testing.T) {
	t.Run("DenseSequencesAcrossSources", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		a1 := events(1, 3, 40)
		b1 := events(10, 2, 50)
		a2 := events(20, 1, 60)
		if got := mustAppend(t, ob, "a", a1, "ta1"); got != 3 {
			t.Fatalf("first append returned %d, want 3", got)
		}
		if got := mustAppend(t, ob, "b", b1, "tb1"); got != 5 {
			t.Fatalf("second append returned %d, want 5", got)
		}
		if got := mustAppend(t, ob, "a", nil, "ta2"); got != 5 {
			t.Fatalf("checkpoint-only append returned %d, want the current last 5", got)
		}
		if got := mustAppend(t, ob, "a", a2, "ta3"); got != 6 {
			t.Fatalf("third append returned %d, want 6", got)
		}
		if got := ob.LastSeq(); got != 6 {
			t.Fatalf("LastSeq = %d, want 6", got)
		}
		recs := mustRead(t, ob, 0, 100, 0)
		if !slices.Equal(seqs(recs), seqRange(1, 6)) {
			t.Fatalf("read sequences %v, want 1..6", seqs(recs))
		}
		want := slices.Concat(a1, b1, a2)
		wantSrc := []string{"a", "a", "a", "b", "b", "a"}
		for i, r := range recs {
			if r.Source != wantSrc[i] || !bytes.Equal(r.Raw, want[i]) {
				t.Errorf("record %d: source %q raw %x, want %q %x", r.Seq, r.Source, r.Raw, wantSrc[i], want[i])
			}
			if r.CapturedAt.IsZero() || r.CapturedAt.Location() != time.UTC {
				t.Errorf("record %d: captured at %v, want a UTC time", r.Seq, r.CapturedAt)
			}
		}
	})

	t.Run("StoresCheckpointWithEvents", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		if _, ok, err := ob.Source("a"); err != nil || ok {
			t.Fatalf("Source before any append: ok=%v err=%v", ok, err)
		}
		ctx := context.Background()
		if _, err := ob.Append(ctx, "a", events(1, 3, 30), outbox.Checkpoint{Token: []byte("t1"), Fingerprint: "fp1", LastClusterTime: 7}); err != nil {
			t.Fatal(err)
		}
		if _, err := ob.Append(ctx, "b", events(4, 2, 30), outbox.Checkpoint{Token: []byte("u1"), Fingerprint: "fpb"}); err != nil {
			t.Fatal(err)
		}
		// A checkpoint without a fingerprint or cluster time keeps the stored ones.
		if _, err := ob.Append(ctx, "a", events(6, 1, 30), outbox.Checkpoint{Token: []byte("t2")}); err != nil {
			t.Fatal(err)
		}
		a, ok, err := ob.Source("a")
		if err != nil || !ok {
			t.Fatalf("Source(a): ok=%v err=%v", ok, err)
		}
		if string(a.Token) != "t2" || a.Fingerprint != "fp1" || a.Captured != 4 || a.LastClusterTime != 7 || a.State != outbox.StateRunning {
			t.Errorf("source a = %+v, want token t2, fingerprint fp1, captured 4, cluster time 7, running", a)
		}
		b, _, _ := ob.Source("b")
		if string(b.Token) != "u1" || b.Captured != 2 {
			t.Errorf("source b = %+v, want token u1, captured 2", b)
		}
		all, err := ob.Sources()
		if err != nil || len(all) != 2 || all["a"].Captured != 4 || all["b"].Captured != 2 {
			t.Errorf("Sources() = %+v, %v", all, err)
		}
	})

	t.Run("RejectsBadSourceID", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		for _, id := range []string{"", strings.Repeat("s", 256)} {
			if _, err := ob.Append(context.Background(), id, events(1, 1, 30), outbox.Checkpoint{}); err == nil {
				t.Errorf("append with a %d-byte source id succeeded", len(id))
			}
		}
		if ob.LastSeq() != 0 {
			t.Errorf("LastSeq = %d after rejected appends", ob.LastSeq())
		}
	})

	t.Run("RejectsEventThatIsNotBSON", func(t *testing.T) {
		// An accepted event that Read cannot decode would stop every sink
		// at it for good: the whole batch is refused instead, checkpoint
		// included.
		ob, _ := newOutbox(t, outbox.Options{})
		mustAppend(t, ob, "a", events(1, 1, 30), "t1")
		bad := [][]byte{event(2, 30), []byte("not bson"), event(3, 30)}
		if _, err := ob.Append(context.Background(), "a", bad, outbox.Checkpoint{Token: []byte("t2")}); err == nil {
			t.Fatal("append of a non-BSON event succeeded")
		}
		if ob.LastSeq() != 1 {
			t.Errorf("LastSeq = %d, want 1", ob.LastSeq())
		}
		st, _, _ := ob.Source("a")
		if string(st.Token) != "t1" || st.Captured != 1 {
			t.Errorf("checkpoint moved by a refused append: %+v", st)
		}
		mustRead(t, ob, 0, 10, 0)
	})

	t.Run("BlocksUntilRetentionFreesSpace", func(t *testing.T) {
		size := 100 - int(recordBytes("s", 0)) // 100 bytes per record
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 350})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 3, size), "t3")
		if got := ob.Stats().Bytes; got != 300 {
			t.Fatalf("Bytes = %d, want 300", got)
		}
		if !ob.Blocked(100) || ob.Blocked(50) {
			t.Fatalf("Blocked(100)=%v Blocked(50)=%v at 300 of 350 bytes", ob.Blocked(100), ob.Blocked(50))
		}
		ctx := waitCtx(t)
		res := appendAsync(ctx, ob, "s", events(4, 1, size), "t4")
		if err := ob.WaitPaused(ctx); err != nil {
			t.Fatalf("WaitPaused: %v", err)
		}
		if ob.Paused() != 1 || ob.LastSeq() != 3 || ob.Stats().Bytes != 300 {
			t.Fatalf("while paused: Paused=%d LastSeq=%d Bytes=%d", ob.Paused(), ob.LastSeq(), ob.Stats().Bytes)
		}
		if st, _, _ := ob.Source("s"); string(st.Token) != "t3" {
			t.Fatalf("checkpoint moved while the append waits: %q", st.Token)
		}
		mustAck(t, ob, "k", 1)
		r := <-res
		if r.err != nil || r.last != 4 {
			t.Fatalf("blocked append returned %d, %v; want 4, nil", r.last, r.err)
		}
		if st := ob.Stats(); st.Bytes != 300 || st.Oldest != 2 || st.Last != 4 {
			t.Fatalf("after append: %+v, want 300 bytes, oldest 2, last 4", st)
		}
		if ob.Paused() != 0 {
			t.Fatalf("Paused = %d after the append returned", ob.Paused())
		}
	})

	t.Run("ConcurrentAppendsNeverExceedBound", func(t *testing.T) {
		// Two appends wake on the same retention; only one of them fits.
		size := 100 - int(recordBytes("s", 0))
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 350})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 3, size), "t")
		ctx := waitCtx(t)
		r1 := appendAsync(ctx, ob, "s", events(10, 1, size), "x")
		r2 := appendAsync(ctx, ob, "s", events(20, 1, size), "y")
		spinUntil(t, ctx, func() bool { return ob.Paused() == 2 })
		mustAck(t, ob, "k", 1)

		var first appendResult
		var other <-chan appendResult
		select {
		case first = <-r1:
			other = r2
		case first = <-r2:
			other = r1
		case <-ctx.Done():
			t.Fatal("no append completed after retention freed space")
		}
		if first.err != nil {
			t.Fatal(first.err)
		}
		// The other append must go back to waiting, not squeeze in.
		var second appendResult
		done := false
		spinUntil(t, ctx, func() bool {
			select {
			case second = <-other:
				done = true
				return true
			default:
				return ob.Paused() == 1
			}
		})
		if done || ob.Stats().Bytes > 350 {
			t.Fatalf("both appends went through: Bytes = %d of 350 (second: %v)", ob.Stats().Bytes, second.err)
		}
		mustAck(t, ob, "k", 2)
		if second = <-other; second.err != nil {
			t.Fatal(second.err)
		}
		if st := ob.Stats(); st.Bytes != 300 || st.Last != 5 {
			t.Fatalf("after both appends: %+v, want 300 bytes, last 5", st)
		}
	})

	t.Run("ManyWritersRespectBound", func(t *testing.T) {
		const maxBytes = 1000
		size := 100 - int(recordBytes("w", 0))
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: maxBytes})
		mustRegister(t, ob, "k")
		ctx := waitCtx(t)

		// A consumer acks whatever exists until the writers are done.
		cctx, stopConsumer := context.WithCancel(ctx)
		consumed := make(chan error, 1)
		go func() {
			var acked uint64
			for {
				if err := ob.Wait(cctx, acked); err != nil {
					consumed <- nil
					return
				}
				last := ob.LastSeq()
				if err := ob.Ack(outbox.SinkCursor("k"), last, last-acked); err != nil {
					consumed <- err
					return
				}
				acked = last
			}
		}()

		const writers, perWriter = 3, 15
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					if _, err := ob.Append(ctx, "w", events(w*100+i, 2, size), outbox.Checkpoint{Token: []byte("t")}); err != nil {
						errs <- err
						return
					}
					if b := ob.Stats().Bytes; b > maxBytes {
						errs <- fmt.Errorf("Bytes = %d after an append returned, bound %d", b, maxBytes)
						return
					}
				}
			})
		}
		wg.Wait()
		stopConsumer()
		if err := <-consumed; err != nil {
			t.Fatal(err)
		}
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got, want := ob.LastSeq(), uint64(writers*perWriter*2); got != want {
			t.Errorf("LastSeq = %d, want %d", got, want)
		}
	})

	t.Run("AcceptsOneOversizedBatchWhenEmpty", func(t *testing.T) {
		size := 100 - int(recordBytes("s", 0))
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 350})
		mustRegister(t, ob, "k")
		if got := mustAppend(t, ob, "s", events(1, 5, size), "big"); got != 5 {
			t.Fatalf("oversized batch returned %d, want 5", got)
		}
		if b := ob.Stats().Bytes; b != 500 {
			t.Fatalf("Bytes = %d, want 500", b)
		}
		// Nothing more is accepted until the oversized batch is gone.
		ctx := waitCtx(t)
		res := appendAsync(ctx, ob, "s", events(6, 1, size), "t6")
		if err := ob.WaitPaused(ctx); err != nil {
			t.Fatal(err)
		}
		mustAck(t, ob, "k", 2) // 300 bytes left: 100 more do not fit
		if err := ob.WaitPaused(ctx); err != nil {
			t.Fatal(err)
		}
		if ob.LastSeq() != 5 {
			t.Fatalf("append went through at %d bytes", ob.Stats().Bytes)
		}
		mustAck(t, ob, "k", 4)
		if r := <-res; r.err != nil || r.last != 6 {
			t.Fatalf("append after retention: %d, %v", r.last, r.err)
		}
	})

	t.Run("CancelledWhileBlockedWritesNothing", func(t *testing.T) {
		size := 100 - int(recordBytes("s", 0))
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 350})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 3, size), "t3")
		before := ob.Stats()
		ctx, cancel := context.WithCancel(waitCtx(t))
		res := appendAsync(ctx, ob, "s", events(4, 1, size), "t4")
		if err := ob.WaitPaused(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		r := <-res
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled append returned %d, %v; want context.Canceled", r.last, r.err)
		}
		after := ob.Stats()
		if after.Last != before.Last || after.Bytes != before.Bytes {
			t.Fatalf("cancelled append changed the outbox: %+v → %+v", before, after)
		}
		if st, _, _ := ob.Source("s"); string(st.Token) != "t3" || st.Captured != 3 {
			t.Fatalf("cancelled append moved the checkpoint: %+v", st)
		}
		if ob.Paused() != 0 {
			t.Fatalf("Paused = %d after the append gave up", ob.Paused())
		}
	})
}

// spinUntil yields until cond holds. It is for states the outbox has no
// notification for, such as a second append starting to wait.
func spinUntil(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("condition not reached: %v", ctx.Err())
		}
		runtime.Gosched()
	}
}

func TestOutbox_Read(t *testing.T) {
	size := 100
	ob, _ := newOutbox(t, outbox.Options{})
	mustAppend(t, ob, "s", events(1, 10, size), "t")

	t.Run("InOrderAfterCursor", func(t *testing.T) {
		if got := seqs(mustRead(t, ob, 3, 100, 0)); !slices.Equal(got, seqRange(4, 10)) {
			t.Fatalf("read after 3 = %v, want 4..10", got)
		}
	})
	t.Run("RespectsMax", func(t *testing.T) {
		if got := seqs(mustRead(t, ob, 0, 4, 0)); !slices.Equal(got, seqRange(1, 4)) {
			t.Fatalf("read max 4 = %v, want 1..4", got)
		}
	})
	t.Run("StopsOnceMaxBytesReached", func(t *testing.T) {
		if got := seqs(mustRead(t, ob, 0, 100, 250)); !slices.Equal(got, seqRange(1, 3)) {
			t.Fatalf("read maxBytes 250 of 100-byte events = %v, want 1..3", got)
		}
		if got := seqs(mustRead(t, ob, 0, 100, 300)); !slices.Equal(got, seqRange(1, 3)) {
			t.Fatalf("read maxBytes 300 of 100-byte events = %v, want 1..3", got)
		}
	})
	t.Run("AtLeastOneRecord", func(t *testing.T) {
		if got := seqs(mustRead(t, ob, 5, 100, 1)); !slices.Equal(got, []uint64{6}) {
			t.Fatalf("read maxBytes 1 = %v, want [6]", got)
		}
	})
	t.Run("NothingAfterLast", func(t *testing.T) {
		if got := mustRead(t, ob, 10, 100, 0); len(got) != 0 {
			t.Fatalf("read after last = %v, want none", seqs(got))
		}
	})
	t.Run("RecordsDoNotAlias", func(t *testing.T) {
		a := mustRead(t, ob, 0, 1, 0)
		a[0].Raw[10] ^= 0xff
		b := mustRead(t, ob, 0, 1, 0)
		if bytes.Equal(a[0].Raw, b[0].Raw) {
			t.Fatal("changing a read record changed the stored one")
		}
	})
	t.Run("GetReturnsOneRecord", func(t *testing.T) {
		r, ok, err := ob.Get(7)
		if err != nil || !ok || r.Seq != 7 || !bytes.Equal(r.Raw, event(7, size)) {
			t.Fatalf("Get(7) = %d %v %v", r.Seq, ok, err)
		}
		if _, ok, err := ob.Get(11); ok || err != nil {
			t.Fatalf("Get(11) = %v, %v; want not found", ok, err)
		}
	})
}

func TestOutbox_Wait(t *testing.T) {
	ob, _ := newOutbox(t, outbox.Options{})
	ctx := waitCtx(t)
	done := make(chan error, 1)
	go func() { done <- ob.Wait(ctx, 0) }()
	mustAppend(t, ob, "s", events(1, 1, 30), "t")
	if err := <-done; err != nil {
		t.Fatalf("Wait after an append: %v", err)
	}
	if err := ob.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait for an existing event: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := ob.Wait(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with an ended ctx = %v", err)
	}
}

func TestOutbox_Ack(t *testing.T) {
	t.Run("RetentionDeletesPrefixAckedByEveryRegisteredSink", func(t *testing.T) {
		size := 100 - int(recordBytes("s", 0))
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "fast")
		mustRegister(t, ob, "slow")
		mustAppend(t, ob, "s", events(1, 10, size), "t")
		mustAck(t, ob, "fast", 7)
		if st := ob.Stats(); st.Oldest != 1 || st.Bytes != 1000 {
			t.Fatalf("after the fast sink acked: %+v, want everything retained", st)
		}
		mustAck(t, ob, "slow", 3)
		if st := ob.Stats(); st.Oldest != 4 || st.Bytes != 700 || st.Last != 10 {
			t.Fatalf("after the slow sink acked 3: %+v, want oldest 4, 700 bytes", st)
		}
		if _, ok, _ := ob.Get(3); ok {
			t.Fatal("event 3 was acked by every sink and is still there")
		}
		if got := seqs(mustRead(t, ob, 3, 100, 0)); !slices.Equal(got, seqRange(4, 10)) {
			t.Fatalf("slow sink reads %v, want 4..10", got)
		}
		if _, err := ob.Read(2, 100, 0); !errors.Is(err, outbox.ErrBehindRetention) {
			t.Fatalf("read behind retention = %v, want ErrBehindRetention", err)
		}
		mustAck(t, ob, "slow", 10)
		if st := ob.Stats(); st.Oldest != 8 || st.Bytes != 300 {
			t.Fatalf("after the slow sink caught up: %+v, want oldest 8", st)
		}
		mustAck(t, ob, "fast", 10)
		if st := ob.Stats(); st.Oldest != 0 || st.Bytes != 0 || st.Last != 10 {
			t.Fatalf("after everything acked: %+v, want empty with last 10", st)
		}
		sinks, err := ob.Sinks()
		if err != nil {
			t.Fatal(err)
		}
		if sinks["fast"].Acked != 10 || sinks["slow"].Acked != 10 || sinks["fast"].Delivered != 2 {
			t.Fatalf("cursors = %+v", sinks)
		}
		if got := mustAppend(t, ob, "s", events(11, 1, size), "t"); got != 11 {
			t.Fatalf("append after the outbox emptied returned %d, want 11", got)
		}
		if st := ob.Stats(); st.Oldest != 11 || st.Bytes != 100 {
			t.Fatalf("after appending to an empty outbox: %+v", st)
		}
	})

	t.Run("DeletesLongPrefixInOneAck", func(t *testing.T) {
		// Thousands of records over many pages, deleted in one transaction.
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "k")
		for i := range 3 {
			mustAppend(t, ob, "s", events(i*1000+1, 1000, 300), "t")
		}
		mustAck(t, ob, "k", 2500)
		if st := ob.Stats(); st.Oldest != 2501 || st.Bytes != 500*recordBytes("s", 300) {
			t.Fatalf("after acking 2500 of 3000: %+v", st)
		}
		if got := seqs(mustRead(t, ob, 2500, 1000, 0)); !slices.Equal(got, seqRange(2501, 3000)) {
			t.Fatalf("retained %d records from %d, want 2501..3000", len(got), got[0])
		}
		mustAck(t, ob, "k", 3000)
		if st := ob.Stats(); st.Oldest != 0 || st.Bytes != 0 {
			t.Fatalf("after acking everything: %+v", st)
		}
	})

	t.Run("BackwardsIsNoOp", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 10, 30), "t")
		mustAck(t, ob, "k", 7)
		mustAck(t, ob, "k", 5)
		sinks, _ := ob.Sinks()
		if sinks["k"].Acked != 7 || ob.Stats().Oldest != 8 {
			t.Fatalf("cursor %d, oldest %d after acking backwards; want 7, 8", sinks["k"].Acked, ob.Stats().Oldest)
		}
	})

	t.Run("KeepAckedKeepsEverything", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{KeepAcked: true})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 5, 30), "t")
		before := ob.Stats()
		mustAck(t, ob, "k", 5)
		if after := ob.Stats(); after.Oldest != 1 || after.Bytes != before.Bytes {
			t.Fatalf("KeepAcked: %+v → %+v", before, after)
		}
		if got := seqs(mustRead(t, ob, 0, 100, 0)); !slices.Equal(got, seqRange(1, 5)) {
			t.Fatalf("read = %v, want 1..5", got)
		}
	})

	t.Run("UnregisteredCursorDoesNotHoldRetention", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		ob := openOutbox(t, path, outbox.Options{})
		mustRegister(t, ob, "live")
		mustRegister(t, ob, "gone")
		mustAppend(t, ob, "s", events(1, 5, 30), "t")
		mustAck(t, ob, "gone", 2)
		mustAck(t, ob, "live", 5)
		if ob.Stats().Oldest != 3 {
			t.Fatalf("oldest = %d, want 3 while both are registered", ob.Stats().Oldest)
		}
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The sink "gone" was removed from the configuration.
		ob = openOutbox(t, path, outbox.Options{})
		mustRegister(t, ob, "live")
		mustAppend(t, ob, "s", events(6, 5, 30), "t")
		mustAck(t, ob, "live", 10)
		if st := ob.Stats(); st.Oldest != 0 || st.Bytes != 0 {
			t.Fatalf("unregistered cursor held retention: %+v", st)
		}
		st := mustRegister(t, ob, "gone")
		if st.Acked != 2 {
			t.Fatalf("re-registered cursor at %d, want its stored 2", st.Acked)
		}
		if _, err := ob.Read(st.Acked, 100, 0); !errors.Is(err, outbox.ErrBehindRetention) {
			t.Fatalf("read of a cursor behind retention = %v, want ErrBehindRetention", err)
		}
	})

	t.Run("ClosedReturnsErrClosed", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 2, 30), "t")
		ob.Close(context.Background())
		if err := ob.Ack(outbox.SinkCursor("k"), 1, 1); !errors.Is(err, outbox.ErrClosed) {
			t.Fatalf("Ack after Close = %v, want ErrClosed", err)
		}
	})
}

func TestOutbox_RegisterSink(t *testing.T) {
	t.Run("NewSinkStartsAtOldestRetained", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "a")
		mustAppend(t, ob, "s", events(1, 10, 30), "t")
		mustAck(t, ob, "a", 6)
		st := mustRegister(t, ob, "b")
		if st.Acked != 6 {
			t.Fatalf("new sink starts after %d, want 6 (oldest retained is 7)", st.Acked)
		}
		if got := seqs(mustRead(t, ob, st.Acked, 100, 0)); !slices.Equal(got, seqRange(7, 10)) {
			t.Fatalf("new sink reads %v, want 7..10", got)
		}
		// From now on it holds retention.
		mustAck(t, ob, "a", 10)
		if ob.Stats().Oldest != 7 {
			t.Fatalf("oldest = %d, want 7 held by the new sink", ob.Stats().Oldest)
		}
		if !slices.Equal(ob.SinkIDs(), []outbox.CursorID{outbox.SinkCursor("a"), outbox.SinkCursor("b")}) {
			t.Fatalf("SinkIDs = %v", ob.SinkIDs())
		}
	})

	t.Run("EmptyOutbox", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		if st := mustRegister(t, ob, "a"); st.Acked != 0 {
			t.Fatalf("sink of a new outbox starts after %d, want 0", st.Acked)
		}
		mustAppend(t, ob, "s", events(1, 5, 30), "t")
		mustAck(t, ob, "a", 5)
		st := mustRegister(t, ob, "b")
		if st.Acked != 5 {
			t.Fatalf("sink of an emptied outbox starts after %d, want 5", st.Acked)
		}
		if got := mustRead(t, ob, st.Acked, 100, 0); len(got) != 0 {
			t.Fatalf("read = %v, want nothing", seqs(got))
		}
	})

	t.Run("KnownSinkKeepsItsCursor", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "a")
		mustAppend(t, ob, "s", events(1, 5, 30), "t")
		mustAck(t, ob, "a", 3)
		if st := mustRegister(t, ob, "a"); st.Acked != 3 || st.Delivered != 1 {
			t.Fatalf("re-registered sink = %+v, want acked 3, delivered 1", st)
		}
	})

	t.Run("EmptyIDIsRefused", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		if _, err := ob.RegisterSink(outbox.SinkCursor("")); err == nil {
			t.Fatal("registered a sink with an empty id")
		}
	})
}

func TestOutbox_Park(t *testing.T) {
	ob, _ := newOutbox(t, outbox.Options{})
	mustRegister(t, ob, "a")
	mustRegister(t, ob, "b")
	evs := events(1, 5, 40)
	mustAppend(t, ob, "src", evs, "t")
	recs := mustRead(t, ob, 0, 100, 0)
	bad := recs[2]
	want := bad
	want.Raw = bytes.Clone(bad.Raw)
	if err := ob.Park(outbox.SinkCursor("a"), bad, "boom: document too large", 4); err != nil {
		t.Fatal(err)
	}
	bad.Raw[5] ^= 0xff // the dead letter is a copy

	sinks, _ := ob.Sinks()
	if sinks["a"].Acked != 3 || sinks["a"].Parked != 1 || sinks["a"].Delivered != 0 {
		t.Fatalf("cursor after park = %+v, want acked 3, parked 1", sinks["a"])
	}
	if one, ok, err := ob.Sink(outbox.SinkCursor("a")); err != nil || !ok || one != sinks["a"] {
		t.Fatalf("Sink(a) = %+v %v %v, want %+v", one, ok, err, sinks["a"])
	}
	if _, ok, err := ob.Sink(outbox.SinkCursor("nobody")); ok || err != nil {
		t.Fatalf("Sink(nobody) found one (%v)", err)
	}
	// Retention deletes the original; the dead letter keeps its copy.
	mustAck(t, ob, "a", 5)
	mustAck(t, ob, "b", 5)
	if _, ok, _ := ob.Get(3); ok {
		t.Fatal("event 3 still retained")
	}
	dead, err := ob.DeadLetters(outbox.SinkCursor("a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	d := dead[0]
	if d.Record.Seq != want.Seq || d.Record.Source != want.Source || !d.Record.CapturedAt.Equal(want.CapturedAt) || !bytes.Equal(d.Record.Raw, want.Raw) {
		t.Errorf("dead letter record = %+v, want %+v", d.Record, want)
	}
	if d.Error != "boom: document too large" || d.Attempts != 4 || d.At.IsZero() {
		t.Errorf("dead letter = error %q attempts %d at %v", d.Error, d.Attempts, d.At)
	}
	if other, err := ob.DeadLetters(outbox.SinkCursor("b")); err != nil || len(other) != 0 {
		t.Errorf("sink b dead letters = %v, %v", other, err)
	}

	t.Run("LookUpOne", func(t *testing.T) {
		got, ok, err := ob.DeadLetter(outbox.SinkCursor("a"), want.Seq)
		if err != nil || !ok || !bytes.Equal(got.Record.Raw, want.Raw) || got.Error != d.Error {
			t.Fatalf("DeadLetter(a, %d) = %+v %v %v", want.Seq, got, ok, err)
		}
		for _, c := range []struct {
			sink string
			seq  uint64
		}{{"a", want.Seq + 1}, {"b", want.Seq}, {"none", 1}} {
			if _, ok, err := ob.DeadLetter(outbox.SinkCursor(c.sink), c.seq); ok || err != nil {
				t.Errorf("DeadLetter(%s, %d) found one (%v)", c.sink, c.seq, err)
			}
		}
	})
	t.Run("Retried", func(t *testing.T) {
		// Failing again keeps it with the new error and one more attempt.
		if found, err := ob.RetriedDeadLetter(outbox.SinkCursor("a"), want.Seq, "still broken"); !found || err != nil {
			t.Fatalf("failed retry: %v %v", found, err)
		}
		got, ok, _ := ob.DeadLetter(outbox.SinkCursor("a"), want.Seq)
		if !ok || got.Error != "still broken" || got.Attempts != 5 {
			t.Fatalf("after a failed retry: %+v", got)
		}
		// Succeeding removes it and counts it, Parked stays a total.
		if found, err := ob.RetriedDeadLetter(outbox.SinkCursor("a"), want.Seq, ""); !found || err != nil {
			t.Fatalf("successful retry: %v %v", found, err)
		}
		if dead, _ := ob.DeadLetters(outbox.SinkCursor("a")); len(dead) != 0 {
			t.Fatalf("dead letters after a successful retry: %v", dead)
		}
		sinks, _ := ob.Sinks()
		if sinks["a"].Parked != 1 || sinks["a"].Retried != 1 {
			t.Fatalf("cursor after retry = %+v, want parked 1, retried 1", sinks["a"])
		}
		if found, err := ob.RetriedDeadLetter(outbox.SinkCursor("a"), want.Seq, ""); found || err != nil {
			t.Fatalf("retrying a removed dead letter: %v %v", found, err)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Run("ReopenKeepsState", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		ob := openOutbox(t, path, outbox.Options{})
		mustRegister(t, ob, "a")
		mustRegister(t, ob, "b")
		mustAppend(t, ob, "s1", events(1, 6, 50), "t1")
		mustAppend(t, ob, "s2", events(7, 4, 70), "t2")
		if err := ob.UpdateSource("s2", func(st *outbox.SourceState) {
			st.State, st.Reason = outbox.StateHalted, "history lost: run godwit resync s2"
		}); err != nil {
			t.Fatal(err)
		}
		mustAck(t, ob, "a", 8)
		mustAck(t, ob, "b", 3)
		recs := mustRead(t, ob, 3, 1, 0)
		if err := ob.Park(outbox.SinkCursor("b"), recs[0], "bad", 2); err != nil {
			t.Fatal(err)
		}
		stats := ob.Stats()
		sinks, _ := ob.Sinks()
		sources, _ := ob.Sources()
		dead, _ := ob.DeadLetters(outbox.SinkCursor("b"))
		retained := mustRead(t, ob, stats.Oldest-1, 100, 0)
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}

		ob = openOutbox(t, path, outbox.Options{})
		got := ob.Stats()
		stats.FileBytes, got.FileBytes = 0, 0
		if got != stats {
			t.Errorf("stats after reopen = %+v, want %+v", got, stats)
		}
		if got, _ := ob.Sinks(); !equalJSON(t, got, sinks) {
			t.Errorf("sinks after reopen = %+v, want %+v", got, sinks)
		}
		if got, _ := ob.Sources(); !equalJSON(t, got, sources) {
			t.Errorf("sources after reopen = %+v, want %+v", got, sources)
		}
		if got, _ := ob.DeadLetters(outbox.SinkCursor("b")); !equalJSON(t, got, dead) || got[0].Record.Seq != dead[0].Record.Seq {
			t.Errorf("dead letters after reopen = %+v, want %+v", got, dead)
		}
		if got := mustRead(t, ob, got.Oldest-1, 100, 0); !equalJSON(t, got, retained) {
			t.Errorf("records after reopen differ")
		}
		if st := mustRegister(t, ob, "b"); st.Acked != 4 || st.Parked != 1 {
			t.Errorf("sink b after reopen = %+v, want acked 4, parked 1", st)
		}
		if last := mustAppend(t, ob, "s1", events(11, 1, 50), "t3"); last != 11 {
			t.Errorf("first append after reopen got %d, want 11", last)
		}
	})

	t.Run("SecondOpenFailsFast", func(t *testing.T) {
		_, path := newOutbox(t, outbox.Options{})
		_, err := outbox.Open(path, outbox.Options{})
		if !errors.Is(err, outbox.ErrLocked) {
			t.Fatalf("second open = %v, want ErrLocked", err)
		}
		for _, want := range []string{path, "stop the other godwit", "--data"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})

	t.Run("OtherFormatVersion", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		writeBolt(t, path, func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("meta"))
			if err != nil {
				return err
			}
			return b.Put([]byte("format"), binary.BigEndian.AppendUint64(nil, outbox.FormatVersion+1))
		})
		_, err := outbox.Open(path, outbox.Options{})
		if !errors.Is(err, outbox.ErrFormat) {
			t.Fatalf("open of a format %d file = %v, want ErrFormat", outbox.FormatVersion+1, err)
		}
		if !strings.Contains(err.Error(), "godwit version that wrote it") {
			t.Errorf("error %q does not say what to do", err)
		}
	})

	t.Run("NotAnOutbox", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		writeBolt(t, path, func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("events"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte("v"))
		})
		if _, err := outbox.Open(path, outbox.Options{}); !errors.Is(err, outbox.ErrFormat) {
			t.Fatalf("open of a foreign bbolt file = %v, want ErrFormat", err)
		}
	})

	t.Run("NotABboltFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		if err := os.WriteFile(path, bytes.Repeat([]byte("godwit"), 2000), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := outbox.Open(path, outbox.Options{}); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("open of a garbage file = %v, want an error naming the file", err)
		}
	})
}

func TestOutbox_Close(t *testing.T) {
	t.Run("EndsWaiters", func(t *testing.T) {
		size := 100 - int(recordBytes("s", 0))
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 250})
		mustRegister(t, ob, "k")
		mustAppend(t, ob, "s", events(1, 2, size), "t")
		ctx := waitCtx(t)
		blocked := appendAsync(ctx, ob, "s", events(3, 1, size), "t3")
		if err := ob.WaitPaused(ctx); err != nil {
			t.Fatal(err)
		}
		waiting := make(chan error, 1)
		go func() { waiting <- ob.Wait(ctx, 2) }()

		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r := <-blocked; !errors.Is(r.err, outbox.ErrClosed) {
			t.Errorf("blocked Append after Close = %v, want ErrClosed", r.err)
		}
		if err := <-waiting; !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("Wait after Close = %v, want ErrClosed", err)
		}
		if err := ob.WaitPaused(ctx); !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("WaitPaused after Close = %v, want ErrClosed", err)
		}
		if _, err := ob.Append(ctx, "s", events(4, 1, 30), outbox.Checkpoint{}); !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("Append after Close = %v, want ErrClosed", err)
		}
		if _, err := ob.Read(0, 10, 0); !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
		if err := ob.Close(context.Background()); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})

	// Close waits for a read in flight before it closes the files, as
	// long as its context allows; then the files close when the read ends.
	t.Run("WaitsForReaders", func(t *testing.T) {
		ob, path := newOutbox(t, outbox.Options{})
		mustAppend(t, ob, "s", events(1, 2, 30), "t")
		reading, release := make(chan struct{}), make(chan struct{})
		read := make(chan error, 1)
		go func() {
			read <- ob.View(func(v outbox.View) error {
				close(reading)
				<-release
				if _, _, err := v.Source("s"); err != nil {
					return err
				}
				return nil
			})
		}()
		<-reading
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		if err := ob.Close(cancelled); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "in flight") {
			t.Fatalf("Close with a read in flight = %v, want context.Canceled saying why", err)
		}
		if _, err := ob.Read(0, 10, 0); !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
		if _, err := outbox.Open(path, outbox.Options{LockTimeout: time.Millisecond}); !errors.Is(err, outbox.ErrLocked) {
			t.Fatalf("Open while the read holds the file = %v, want ErrLocked", err)
		}
		close(release)
		if err := <-read; err != nil {
			t.Fatalf("the read in flight failed: %v", err)
		}
		if err := ob.Close(waitCtx(t)); err != nil {
			t.Fatalf("Close after the read ended = %v", err)
		}
		again, err := outbox.Open(path, outbox.Options{LockTimeout: time.Millisecond})
		if err != nil {
			t.Fatalf("Open after Close = %v", err)
		}
		if err := again.Close(waitCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOutbox_Check(t *testing.T) {
	// Check must notice a stored size that does not match the records.
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob, err := outbox.Open(path, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, ob, "s", events(1, 3, 30), "t")
	if err := ob.Check(); err != nil {
		t.Fatalf("check of a sound outbox: %v", err)
	}
	ob.Close(context.Background())
	segs, err := filepath.Glob(filepath.Join(outbox.SegmentDir(path), "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments of a new outbox: %v, %v", segs, err)
	}
	writeBolt(t, segs[0], func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("events")).Put(binary.BigEndian.AppendUint64(nil, 2), []byte{1, 1, 's'})
	})
	ob, err = outbox.Open(path, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	err = ob.Check()
	if !errors.Is(err, outbox.ErrCorruptRecord) || !strings.Contains(err.Error(), "stored size") {
		t.Fatalf("check of a damaged outbox = %v, want a corrupt record and a size mismatch", err)
	}
}

func writeBolt(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestOutbox_UnregisterSink(t *testing.T) {
	ob, _ := newOutbox(t, outbox.Options{})
	mustAppend(t, ob, "src", events(1, 10, 100), "t1")
	mustRegister(t, ob, "fast")
	mustRegister(t, ob, "paused")
	mustAck(t, ob, "fast", 10)
	if s := ob.Stats(); s.Oldest != 1 {
		t.Fatalf("the paused sink holds retention: oldest = %d", s.Oldest)
	}
	if err := ob.UnregisterSink(outbox.SinkCursor("paused")); err != nil {
		t.Fatal(err)
	}
	mustAck(t, ob, "fast", 10)
	if s := ob.Stats(); s.Oldest != 0 || s.Bytes != 0 {
		t.Fatalf("after unregistering, retention should empty the outbox: %+v", s)
	}
	sinks, _ := ob.Sinks()
	if _, kept := sinks["paused"]; !kept {
		t.Fatal("UnregisterSink must keep the cursor")
	}
	if _, err := ob.Read(sinks["paused"].Acked, 10, 0); !errors.Is(err, outbox.ErrBehindRetention) {
		t.Fatalf("the unregistered cursor's events were deleted: Read = %v, want ErrBehindRetention", err)
	}
	if err := ob.RemoveSink(outbox.SinkCursor("paused")); err != nil {
		t.Fatal(err)
	}
	sinks, _ = ob.Sinks()
	if _, kept := sinks["paused"]; kept {
		t.Fatal("RemoveSink must delete the cursor")
	}
}

// TestOutbox_RemoveSink checks that removing the one cursor holding
// retention frees its events at once: with capture paused at the bound and
// every other sink caught up, nothing else would ever ack again.
func TestOutbox_RemoveSink(t *testing.T) {
	ob, _ := newOutbox(t, outbox.Options{MaxBytes: 10 * recordBytes("src", 100)})
	mustRegister(t, ob, "fast")
	mustRegister(t, ob, "held")
	mustAppend(t, ob, "src", events(1, 10, 100), "t1")
	mustAck(t, ob, "fast", 10)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	blocked := appendAsync(ctx, ob, "src", events(11, 1, 100), "t2")
	if err := ob.WaitPaused(ctx); err != nil {
		t.Fatalf("the append did not wait for space: %v", err)
	}
	if err := ob.RemoveSink(outbox.SinkCursor("held")); err != nil {
		t.Fatal(err)
	}
	res := <-blocked
	if res.err != nil || res.last != 11 {
		t.Fatalf("paused append after RemoveSink = %d, %v; want 11, nil", res.last, res.err)
	}
	if s := ob.Stats(); s.Oldest != 11 || s.Bytes != recordBytes("src", 100) {
		t.Fatalf("after RemoveSink retention should keep only event 11: %+v", s)
	}
}

func TestOutbox_Hold(t *testing.T) {
	t.Run("KeepsEventsFromRetention", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "fast")
		mustAppend(t, ob, "src", events(1, 10, 100), "t1")
		ob.Hold("reader", 4)
		mustAck(t, ob, "fast", 10)
		if s := ob.Stats(); s.Oldest != 5 {
			t.Fatalf("oldest = %d, want 5: the hold keeps what the reader has not read", s.Oldest)
		}
		ob.Hold("reader", 7)
		mustAck(t, ob, "fast", 10)
		if s := ob.Stats(); s.Oldest != 8 {
			t.Fatalf("after moving the hold oldest = %d, want 8", s.Oldest)
		}
		ob.Release("reader")
		mustAck(t, ob, "fast", 10)
		if s := ob.Stats(); s.Oldest != 0 {
			t.Fatalf("after Release the outbox should be empty: %+v", s)
		}
	})

	t.Run("HoldLast", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "fast")
		mustAppend(t, ob, "src", events(1, 3, 100), "t1")
		if got := ob.HoldLast("reader"); got != 3 {
			t.Fatalf("HoldLast = %d, want 3", got)
		}
		mustAppend(t, ob, "src", events(4, 2, 100), "t2")
		mustAck(t, ob, "fast", 5)
		if recs := mustRead(t, ob, 3, 10, 0); !equalJSON(t, seqs(recs), []uint64{4, 5}) {
			t.Fatalf("the reader holding after 3 reads %v, want 4 and 5", seqs(recs))
		}
	})

	t.Run("WithoutSinksDeletesNothing", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustAppend(t, ob, "src", events(1, 3, 100), "t1")
		ob.Hold("reader", 3)
		// An ack of an unregistered cursor runs retention with no sink.
		mustAck(t, ob, "unregistered", 3)
		if s := ob.Stats(); s.Oldest != 1 {
			t.Fatalf("oldest = %d, want 1", s.Oldest)
		}
	})

	// A reader that stopped reading never pauses capture: an append that
	// needs the space its hold keeps gets it.
	t.Run("YieldsToBackPressure", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: 10 * recordBytes("src", 100)})
		mustRegister(t, ob, "fast")
		mustAppend(t, ob, "src", events(1, 10, 100), "t1")
		ob.Hold("stalled", 0)
		mustAck(t, ob, "fast", 10)
		if s := ob.Stats(); s.Oldest != 1 {
			t.Fatalf("oldest = %d, want 1 while nothing needs the space", s.Oldest)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
		defer cancel()
		if last, err := ob.Append(ctx, "src", events(11, 1, 100), outbox.Checkpoint{Token: []byte("t2")}); err != nil || last != 11 {
			t.Fatalf("append at the bound with only a hold in the way = %d, %v", last, err)
		}
		if _, err := ob.Read(0, 10, 0); !errors.Is(err, outbox.ErrBehindRetention) {
			t.Fatalf("the stalled reader's next read = %v, want ErrBehindRetention", err)
		}
	})
}
