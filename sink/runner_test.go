package sink_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

func TestRunner_Run(t *testing.T) {
	t.Run("DeliversAndAcks", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 20, 40)
		s := newFakeSink(nil)
		r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{BatchSize: 7}))
		ctx := waitCtx(t)
		if err := r.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		// Events appended while the runner waits are delivered too.
		last = appendEvents(t, ob, 5, 40)
		if err := r.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		if err := r.stop(); err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
		delivered, _, _, batches := s.snapshot()
		if !slices.Equal(delivered, seqRange(1, 25)) {
			t.Fatalf("delivered %v, want 1..25 once each", delivered)
		}
		for _, b := range batches {
			if len(b) > 7 {
				t.Fatalf("batch of %d events, BatchSize is 7", len(b))
			}
		}
		if st := r.Status(); st.Acked != 25 || st.Delivered != 25 || st.Parked != 0 || st.Halted || st.LastError != "" {
			t.Fatalf("status = %+v", st)
		}
		cur, _ := ob.Sinks()
		if cur["k"].Acked != 25 || cur["k"].Delivered != 25 {
			t.Fatalf("stored cursor = %+v", cur["k"])
		}
		if st := ob.Stats(); st.Oldest != 0 {
			t.Fatalf("retention left events from %d; the only sink acked everything", st.Oldest)
		}
	})

	t.Run("StopsBatchAtBatchBytes", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 100)
		s := newFakeSink(nil)
		r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{BatchBytes: 250}))
		if err := r.WaitAcked(waitCtx(t), last); err != nil {
			t.Fatal(err)
		}
		_, _, _, batches := s.snapshot()
		if len(batches[0]) != 3 {
			t.Fatalf("first batch %v, want 3 events of 100 bytes for BatchBytes 250", batches[0])
		}
	})

	t.Run("RetriesTransientFailure", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 40)
		s := newFakeSink(func(seq uint64, n int) error {
			if seq == 5 && n <= 3 {
				return errUnavailable
			}
			return nil
		})
		r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{MaxAttempts: 5}))
		if err := r.WaitAcked(waitCtx(t), last); err != nil {
			t.Fatal(err)
		}
		delivered, offered, _, _ := s.snapshot()
		if !slices.Equal(delivered, seqRange(1, 10)) {
			t.Fatalf("delivered %v, want 1..10 once each", delivered)
		}
		if offered[5] != 4 {
			t.Fatalf("event 5 offered %d times, want 4 (3 failures, then success)", offered[5])
		}
		if st := r.Status(); st.Parked != 0 || st.Delivered != 10 || st.LastError != "" {
			t.Fatalf("status = %+v", st)
		}
		if dead, _ := ob.DeadLetters(outbox.SinkCursor("k")); len(dead) != 0 {
			t.Fatalf("dead letters: %v", dead)
		}
	})

	t.Run("ParksOnlyTheFailingEvent", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 40)
		s := newFakeSink(failAlways(5, errUnavailable))
		r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{MaxAttempts: 3, Policy: sink.PolicyPark}))
		ctx := waitCtx(t)
		if err := r.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		delivered, _, alone, _ := s.snapshot()
		if want := seqRange(1, 10, 5); !slices.Equal(delivered, want) {
			t.Fatalf("delivered %v, want %v", delivered, want)
		}
		if alone[5] != 3 {
			t.Fatalf("event 5 tried alone %d times, want MaxAttempts 3", alone[5])
		}
		dead, err := ob.DeadLetters(outbox.SinkCursor("k"))
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead letters = %+v, %v; want event 5", dead, err)
		}
		if d := dead[0]; d.Record.Seq != 5 || d.Attempts != 3 || !strings.Contains(d.Error, errUnavailable.Error()) {
			t.Fatalf("dead letter = seq %d attempts %d error %q", d.Record.Seq, d.Attempts, d.Error)
		}
		if st := r.Status(); st.Acked != 10 || st.Delivered != 9 || st.Parked != 1 || st.Halted {
			t.Fatalf("status = %+v", st)
		}

		// Past the narrowed range, batches are whole again.
		last = appendEvents(t, ob, 10, 40)
		if err := r.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		_, _, _, batches := s.snapshot()
		if b := batches[len(batches)-1]; !slices.Equal(b, seqRange(11, 20)) {
			t.Fatalf("last batch %v, want 11..20 in one call", b)
		}
	})

	t.Run("HaltPolicyStopsBeforeBadEvent", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 40)
		broken := true
		s := newFakeSink(func(seq uint64, _ int) error {
			if seq == 5 && broken {
				return errUnavailable
			}
			return nil
		})
		cfg := fastRetries(sink.RunnerConfig{MaxAttempts: 2, Policy: sink.PolicyHalt})
		r := start(t, ob, "k", s, cfg)
		ctx := waitCtx(t)
		if err := r.wait(ctx); !errors.Is(err, sink.ErrHalted) || !strings.Contains(err.Error(), errUnavailable.Error()) {
			t.Fatalf("Run = %v, want ErrHalted naming the cause", err)
		}
		if st := r.Status(); !st.Halted || st.Acked != 4 || st.Parked != 0 {
			t.Fatalf("status = %+v, want halted at 4", st)
		}
		if cur, _ := ob.Sinks(); cur["k"].Acked != 4 {
			t.Fatalf("stored cursor at %d, want 4 (before the bad event)", cur["k"].Acked)
		}
		if dead, _ := ob.DeadLetters(outbox.SinkCursor("k")); len(dead) != 0 {
			t.Fatalf("halt policy parked %v", dead)
		}

		// After the cause is fixed, a restart delivers the bad event.
		s.mu.Lock()
		broken = false
		s.mu.Unlock()
		r2 := start(t, ob, "k", s, cfg)
		if err := r2.WaitAcked(ctx, last); err != nil {
			t.Fatal(err)
		}
		delivered, _, _, _ := s.snapshot()
		if !slices.Equal(delivered, seqRange(1, 10)) {
			t.Fatalf("delivered %v, want 1..10 once each", delivered)
		}
	})

	t.Run("PartialErrorAcksDeliveredPrefix", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 40)
		s := newFakeSink(func(seq uint64, n int) error {
			if seq == 5 && n == 1 {
				return errUnavailable
			}
			return nil
		})
		s.partial = true
		r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{}))
		if err := r.WaitAcked(waitCtx(t), last); err != nil {
			t.Fatal(err)
		}
		delivered, offered, _, batches := s.snapshot()
		if !slices.Equal(delivered, seqRange(1, 10)) {
			t.Fatalf("delivered %v, want 1..10 once each", delivered)
		}
		for seq := uint64(1); seq <= 4; seq++ {
			if offered[seq] != 1 {
				t.Fatalf("event %d offered %d times; the acked prefix must not be sent again", seq, offered[seq])
			}
		}
		if len(batches) != 2 || batches[1][0] != 5 {
			t.Fatalf("batches %v, want a retry starting at 5", batches)
		}
		if st := r.Status(); st.Delivered != 10 || st.Parked != 0 {
			t.Fatalf("status = %+v", st)
		}
	})

	permanent := sink.Permanent(fmt.Errorf("event has no _id: %w", errUnavailable))
	for _, tc := range []struct {
		name    string
		partial bool
		err     error
		offered int // times event 5 reaches Deliver
	}{
		// The whole batch fails: narrowing sends the event once more alone.
		{"PermanentParksAtOnce/Batch", false, permanent, 2},
		{"PermanentParksAtOnce/Partial", true, permanent, 1},
		{"PermanentParksAtOnce/PermanentPartialError", false, sink.Permanent(&sink.PartialError{Delivered: 0, Err: errUnavailable}), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := newOutbox(t, outbox.Options{})
			last := appendEvents(t, ob, 10, 40)
			s := newFakeSink(failAlways(5, tc.err))
			s.partial = tc.partial
			r := start(t, ob, "k", s, fastRetries(sink.RunnerConfig{MaxAttempts: 5}))
			if err := r.WaitAcked(waitCtx(t), last); err != nil {
				t.Fatal(err)
			}
			delivered, offered, _, _ := s.snapshot()
			if want := seqRange(1, 10, 5); !slices.Equal(delivered, want) {
				t.Fatalf("delivered %v, want %v", delivered, want)
			}
			if offered[5] != tc.offered {
				t.Fatalf("event 5 offered %d times, want %d", offered[5], tc.offered)
			}
			dead, _ := ob.DeadLetters(outbox.SinkCursor("k"))
			if len(dead) != 1 || dead[0].Record.Seq != 5 || dead[0].Attempts != 1 {
				t.Fatalf("dead letters = %+v, want event 5 after 1 attempt", dead)
			}
		})
	}

	t.Run("PermanentPartialErrorAcksPrefixAndParks", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		last := appendEvents(t, ob, 10, 40)
		s := newFakeSink(nil)
		// A sink that wraps its PartialError in Permanent.
		wrapped := &permanentPartial{fakeSink: s, bad: 5}
		r := start(t, ob, "k", wrapped, fastRetries(sink.RunnerConfig{MaxAttempts: 5}))
		if err := r.WaitAcked(waitCtx(t), last); err != nil {
			t.Fatal(err)
		}
		if wrapped.tries != 1 {
			t.Fatalf("event 5 tried %d times, want 1 (permanent)", wrapped.tries)
		}
		delivered, offered, _, _ := s.snapshot()
		if want := seqRange(1, 10, 5); !slices.Equal(delivered, want) || offered[1] != 1 {
			t.Fatalf("delivered %v (event 1 offered %d times), want %v once each", delivered, offered[1], want)
		}
		dead, _ := ob.DeadLetters(outbox.SinkCursor("k"))
		if len(dead) != 1 || dead[0].Record.Seq != 5 || dead[0].Attempts != 1 {
			t.Fatalf("dead letters = %+v, want event 5 after 1 attempt", dead)
		}
	})

	t.Run("ReturnsNilWhenCtxEnds", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		r := start(t, ob, "k", newFakeSink(nil), fastRetries(sink.RunnerConfig{}))
		if err := r.stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})

	t.Run("ReturnsNilWhenOutboxCloses", func(t *testing.T) {
		ob, err := outbox.Open(t.TempDir()+"/outbox.db", outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := sink.NewRunner(outbox.SinkCursor("k"), ob, newFakeSink(nil), fastRetries(sink.RunnerConfig{}), zerolog.Nop())
		if _, err := r.Register(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background()) }()
		last := appendEvents(t, ob, 1, 40)
		if err := r.WaitAcked(waitCtx(t), last); err != nil {
			t.Fatal(err)
		}
		ob.Close(context.Background())
		if err := <-done; err != nil {
			t.Fatalf("Run after the outbox closed = %v, want nil", err)
		}
	})
}

// permanentPartial fails event bad with Permanent(&PartialError{...}), after
// delivering the events before it.
type permanentPartial struct {
	*fakeSink
	bad   uint64
	tries int
}

func (p *permanentPartial) Deliver(ctx context.Context, batch []outbox.Record) error {
	for i, r := range batch {
		if r.Seq == p.bad {
			p.tries++
			if err := p.fakeSink.Deliver(ctx, batch[:i]); err != nil {
				return err
			}
			return sink.Permanent(&sink.PartialError{Delivered: i, Err: errors.New("rejected by the destination")})
		}
	}
	return p.fakeSink.Deliver(ctx, batch)
}

func TestRunner_WaitAcked(t *testing.T) {
	t.Run("ReturnsOnAck", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		r := start(t, ob, "k", newFakeSink(nil), fastRetries(sink.RunnerConfig{}))
		ctx := waitCtx(t)
		done := make(chan error, 1)
		go func() { done <- r.WaitAcked(ctx, 3) }()
		appendEvents(t, ob, 3, 40)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if st := r.Status(); st.Acked < 3 {
			t.Fatalf("WaitAcked returned at %d", st.Acked)
		}
	})

	t.Run("ReturnsErrorOnHalt", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		appendEvents(t, ob, 3, 40)
		r := start(t, ob, "k", newFakeSink(failAlways(2, sink.Permanent(errUnavailable))),
			fastRetries(sink.RunnerConfig{Policy: sink.PolicyHalt}))
		err := r.WaitAcked(waitCtx(t), 3)
		if !errors.Is(err, sink.ErrHalted) || !strings.Contains(err.Error(), errUnavailable.Error()) {
			t.Fatalf("WaitAcked = %v, want ErrHalted with the cause", err)
		}
	})

	t.Run("ReturnsOnCtxEnd", func(t *testing.T) {
		ob := newOutbox(t, outbox.Options{})
		r := start(t, ob, "k", newFakeSink(nil), fastRetries(sink.RunnerConfig{}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := r.WaitAcked(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitAcked = %v, want context.Canceled", err)
		}
	})
}

func TestRunnerConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   sink.RunnerConfig
		field string // "" when valid
	}{
		{"Zero", sink.RunnerConfig{}, ""},
		{"Halt", sink.RunnerConfig{Policy: sink.PolicyHalt}, ""},
		{"NegativeBatch", sink.RunnerConfig{BatchSize: -1}, "batch_size"},
		{"NegativeAttempts", sink.RunnerConfig{MaxAttempts: -1}, "max_attempts"},
		{"NegativeBackoff", sink.RunnerConfig{MinBackoff: -1}, "backoff"},
		{"UnknownPolicy", sink.RunnerConfig{Policy: "drop"}, "on_failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.field)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	if sink.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	err := fmt.Errorf("deliver: %w", sink.Permanent(errUnavailable))
	if !sink.IsPermanent(err) || !errors.Is(err, errUnavailable) {
		t.Errorf("wrapped permanent error lost its mark or cause: %v", err)
	}
	if sink.IsPermanent(errUnavailable) {
		t.Error("plain error reported permanent")
	}
	pe := &sink.PartialError{Delivered: 3, Err: errUnavailable}
	if !errors.Is(pe, errUnavailable) || !strings.Contains(pe.Error(), "3") {
		t.Errorf("PartialError = %v", pe)
	}
}
