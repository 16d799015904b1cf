package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
)

// chains are the two logs compared side by side: the plain hash chain
// godwit wrote before sealing, and the sealed one it writes now.
var chains = []struct {
	name string
	opts []audit.Option
}{
	{"plain", []audit.Option{audit.WithoutSealing()}},
	{"sealed", nil},
}

// BenchmarkSink_Deliver reports records/s for batches of drop events (every
// event is a record) and of deletes (feeding mass-delete detection), with
// the log and state fsync'd per batch as in production, for the plain
// chain and the sealed one.
func BenchmarkSink_Deliver(b *testing.B) {
	for _, kind := range []string{"drops", "deletes"} {
		for _, size := range []int{1, 100, 1000} {
			for _, chain := range chains {
				b.Run(fmt.Sprintf("%s/batch=%d/%s", kind, size, chain.name), func(b *testing.B) {
					benchDeliver(b, kind, size, chain.opts)
				})
			}
		}
	}
}

func benchDeliver(b *testing.B, kind string, size int, opts []audit.Option) {
	s, err := audit.Open(audit.Config{Path: logPath(b)}, zerolog.Nop(), opts...)
	if err != nil {
		b.Fatal(err)
	}
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
}

// BenchmarkVerify reports records/s for verifying a log: the plain chain
// without a key, and a sealed log with and without its key.
func BenchmarkVerify(b *testing.B) {
	for _, tc := range []struct {
		name  string
		opts  []audit.Option
		keyed bool
	}{
		{"plain", []audit.Option{audit.WithoutSealing()}, false},
		{"sealed/chain-only", nil, false},
		{"sealed/with-key", nil, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			path := logPath(b)
			s, err := audit.Open(audit.Config{Path: path}, zerolog.Nop(), tc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			f := &feed{}
			for i := range 10 {
				var batch []outbox.Record
				for j := range 1000 {
					batch = append(batch, f.evts(evt{op: "drop", db: "shop", coll: fmt.Sprint("c", i*1000+j)})...)
				}
				deliver(b, s, batch)
			}
			closeSink(b, s)
			var keys []string
			if tc.keyed {
				keys = keyFiles(b, path)
			}
			b.ResetTimer()
			for b.Loop() {
				if tc.keyed {
					if rep, err := verifySealed(b, path, keys...); err != nil || rep.Records != 10000 {
						b.Fatal(rep, err)
					}
				} else if n, err := verifyPath(path); err != nil || n != 10000 {
					b.Fatal(n, err)
				}
			}
			b.ReportMetric(float64(b.N*10000)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
