package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
)

// BenchmarkSink_Deliver reports records/s for batches of drop events (every
// event is a record) and of deletes (feeding mass-delete detection), with
// the log and state fsync'd per batch as in production.
func BenchmarkSink_Deliver(b *testing.B) {
	for _, kind := range []string{"drops", "deletes"} {
		for _, size := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/batch=%d", kind, size), func(b *testing.B) {
				s := open(b, audit.Config{Path: logPath(b)})
				defer closeSink(b, s)
				f := &feed{}
				events := make([]evt, size)
				n := 0
				b.ResetTimer()
				for b.Loop() {
					b.StopTimer()
					for i := range events {
						n++
						at := time.Duration(n) * time.Millisecond
						if kind == "drops" {
							events[i] = evt{op: "drop", db: "shop", coll: fmt.Sprint("c", n), at: at}
						} else {
							// 1000 deletes/s: always above the default threshold.
							events[i] = del("orders", n, at)
						}
					}
					batch := f.evts(events...)
					b.StartTimer()
					if err := s.Deliver(context.Background(), batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkVerify reports records/s for verifying a log.
func BenchmarkVerify(b *testing.B) {
	path := logPath(b)
	s := open(b, audit.Config{Path: path})
	f := &feed{}
	for i := range 10 {
		var batch []outbox.Record
		for j := range 1000 {
			batch = append(batch, f.evts(evt{op: "drop", db: "shop", coll: fmt.Sprint("c", i*1000+j)})...)
		}
		deliver(b, s, batch)
	}
	closeSink(b, s)
	b.ResetTimer()
	for b.Loop() {
		if n, err := verifyPath(path); err != nil || n != 10000 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.N*10000)/b.Elapsed().Seconds(), "records/s")
}
