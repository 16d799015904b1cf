package sink_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

type nopSink struct{}

func (nopSink) Deliver(context.Context, []outbox.Record) error { return nil }

// BenchmarkRunnerDrain measures a real Runner draining 1 KiB events from a
// durable outbox to a sink that does nothing: one op appends drainEvents
// events (not timed), then drains them (timed), retention included.
func BenchmarkRunnerDrain(b *testing.B) {
	const drainEvents, batch, size = 50_000, 1000, 1 << 10
	ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close(context.Background())
	if _, err := ob.RegisterSink(outbox.SinkCursor("nop")); err != nil {
		b.Fatal(err)
	}
	evs := make([][]byte, batch)
	for i := range evs {
		evs[i] = event(i, size)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(drainEvents * size)
	for range b.N {
		b.StopTimer()
		var last uint64
		for range drainEvents / batch {
			if last, err = ob.Append(ctx, "src", evs, outbox.Checkpoint{Token: []byte("t")}); err != nil {
				b.Fatal(err)
			}
		}
		r := sink.NewRunner(outbox.SinkCursor("nop"), ob, nopSink{}, sink.RunnerConfig{}, zerolog.Nop())
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		go func() { done <- r.Run(rctx) }()
		if err := r.WaitAcked(ctx, last); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*drainEvents)/b.Elapsed().Seconds(), "events/s")
}
