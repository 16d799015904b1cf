package audit

// White-box: encodeRecord is the only place the seal is computed, and the
// sink benchmarks (bench_test.go) are dominated by fsync; this isolates the
// CPU cost of sealing a record against the plain chain.

import (
	"testing"
	"time"

	"github.com/godwit-dev/godwit/change"
)

func BenchmarkEncodeRecord(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			var k *sealKey
			if sealed {
				k = &sealKey{key: make([]byte, keyLen)}
			}
			r := &Record{Index: 1, Prev: Genesis, Class: ClassDrop, Severity: SeverityHigh,
				Time: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), RecordedAt: time.Date(2026, 5, 1, 10, 0, 1, 0, time.UTC),
				Source: "shop", Seq: 42, Op: "drop", NS: &change.Namespace{DB: "shop", Coll: "orders"},
				ClusterTime: &ClusterTime{T: 1777629600, I: 1}}
			for b.Loop() {
				if _, err := encodeRecord(r, k); err != nil {
					b.Fatal(err)
				}
				if k != nil {
					k.evolve()
				}
				r.Index++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
