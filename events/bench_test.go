package events_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/outbox"
)

// BenchmarkEngine_Subscribe measures how fast subscribers receive events
// (parsed, filtered, handed to send), for 1 and 10 concurrent subscribers.
//
//	go test -run '^$' -bench Engine_Subscribe -benchtime 100000x ./events
//
// Live: the subscribers follow appends of 1000-event batches (capture's
// default batch), so the figure includes waiting for the outbox's commits.
// Replay: the events are in the outbox before the subscribers start.
// events/s is per subscriber; deliveries/s counts all of them.
func BenchmarkEngine_Subscribe(b *testing.B) {
	const batch = 1000
	ev := change("insert", "shop.orders", 1)
	for _, mode := range []string{"Live", "Replay"} {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/subscribers=%d", mode, n), func(b *testing.B) {
				v := newEnv(b, outbox.Options{MaxBytes: -1})
				appendAll := func() {
					evs := make([][]byte, batch)
					for i := range evs {
						evs[i] = ev
					}
					for done := 0; done < b.N; done += batch {
						if _, err := v.ob.Append(context.Background(), "a", evs[:min(batch, b.N-done)], outbox.Checkpoint{Token: []byte("t")}); err != nil {
							b.Fatal(err)
						}
					}
				}
				req := events.Request{}
				if mode == "Replay" {
					appendAll()
					req = events.Request{Start: events.StartSequence}
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var ready, finished sync.WaitGroup
				var delivered atomic.Int64
				target := uint64(b.N)
				for range n {
					ready.Add(1)
					finished.Add(1)
					go func() {
						var got uint64
						_ = v.e.Subscribe(ctx, req, func(m events.Message) error {
							if m.Started != nil {
								ready.Done()
							}
							if m.Event != nil {
								got++
								if m.Event.Seq == target {
									delivered.Add(int64(got))
									finished.Done()
								}
							}
							return nil
						})
					}()
				}
				ready.Wait()
				b.ResetTimer()
				start := time.Now()
				if mode == "Live" {
					appendAll()
				}
				finished.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if got := delivered.Load(); got != int64(n*b.N) {
					b.Fatalf("delivered %d events, want %d", got, n*b.N)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "deliveries/s")
			})
		}
	}
}
