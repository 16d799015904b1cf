package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/godwit-dev/godwit/outbox"
)

func TestOutbox_WaitUntil(t *testing.T) {
	// Waiters of the kind every test helper and the demo use: "wait until
	// source X stored N events". Each read must be one consistent state (the
	// sources' counts add up to the last sequence), and no append may be
	// missed between a read and the wait that follows it.
	t.Run("SeesEveryAppendConsistently", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{MaxBytes: -1})
		ctx := waitCtx(t)
		const writers, appends = 3, 150
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src := fmt.Sprintf("s%d", w)
				for i := range appends {
					if _, err := ob.Append(ctx, src, events(i, 1+i%3, 30), outbox.Checkpoint{Token: []byte("t")}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		var want uint64
		for i := range appends {
			want += uint64(1 + i%3)
		}
		errs := make(chan error, writers)
		for w := range writers {
			go func() {
				src := fmt.Sprintf("s%d", w)
				// Wait for every intermediate count, as a test waiting for
				// one step of its workload after another does.
				for n := uint64(1); n <= want; n += 7 {
					err := ob.WaitUntil(ctx, func(v outbox.View) (bool, error) {
						var sum uint64
						for i := range writers {
							st, _, err := v.Source(fmt.Sprintf("s%d", i))
							if err != nil {
								return false, err
							}
							sum += st.Captured
						}
						if sum != v.Last() {
							return false, fmt.Errorf("inconsistent view: sources captured %d events, last sequence %d", sum, v.Last())
						}
						st, _, err := v.Source(src)
						return st.Captured >= n, err
					})
					if err != nil {
						errs <- fmt.Errorf("wait for %d events of %s: %w", n, src, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		wg.Wait()
	})

	t.Run("WakesOnStateChangeWithoutEvents", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustAppend(t, ob, "s", events(1, 1, 30), "t1")
		done := make(chan error, 1)
		go func() {
			done <- ob.WaitUntil(waitCtx(t), func(v outbox.View) (bool, error) {
				st, _, err := v.Source("s")
				return st.State == outbox.StateHalted, err
			})
		}()
		if err := ob.UpdateSource("s", func(st *outbox.SourceState) { st.State = outbox.StateHalted }); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("WaitUntil for a halted source: %v", err)
		}
	})

	t.Run("WakesOnAck", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		mustRegister(t, ob, "k")
		last := mustAppend(t, ob, "s", events(1, 3, 30), "t1")
		done := make(chan error, 1)
		go func() {
			done <- ob.WaitUntil(waitCtx(t), func(v outbox.View) (bool, error) {
				st, _, err := v.Sink(outbox.SinkCursor("k"))
				return st.Acked >= v.Last(), err
			})
		}()
		mustAck(t, ob, "k", last)
		if err := <-done; err != nil {
			t.Fatalf("WaitUntil for a sink that acked everything: %v", err)
		}
	})

	t.Run("EndsWhenClosedOrCancelled", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		never := func(outbox.View) (bool, error) { return false, nil }
		cctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := ob.WaitUntil(cctx, never); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitUntil with an ended ctx = %v, want context.Canceled", err)
		}
		done := make(chan error, 1)
		go func() { done <- ob.WaitUntil(waitCtx(t), never) }()
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, outbox.ErrClosed) {
			t.Fatalf("WaitUntil on a closed outbox = %v, want ErrClosed", err)
		}
	})

	t.Run("CondErrorEndsTheWait", func(t *testing.T) {
		ob, _ := newOutbox(t, outbox.Options{})
		bad := errors.New("bad")
		if err := ob.WaitUntil(waitCtx(t), func(outbox.View) (bool, error) { return false, bad }); !errors.Is(err, bad) {
			t.Fatalf("WaitUntil = %v, want the condition's error", err)
		}
	})
}
