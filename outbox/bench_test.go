package outbox_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/godwit-dev/godwit/outbox"
)

const benchEventSize = 1 << 10

var benchBatchSizes = []int{1, 100, 1000}

// BenchmarkAppend measures durable appends (bbolt's default fsync per
// commit) of 1 KiB events: one op is one Append call of a batch.
func BenchmarkAppend(b *testing.B) {
	for _, n := range benchBatchSizes {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close(context.Background())
			batch := events(0, n, benchEventSize)
			cp := outbox.Checkpoint{Token: make([]byte, 64), Fingerprint: "fp"}
			ctx := context.Background()
			b.SetBytes(int64(n * benchEventSize))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ob.Append(ctx, "shop", batch, cp); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPlainBbolt is the baseline for BenchmarkAppend: the same batches
// of 1 KiB values under sequential big-endian keys, one db.Update per batch,
// with nothing else stored.
func BenchmarkPlainBbolt(b *testing.B) {
	for _, n := range benchBatchSizes {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "plain.db"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			name := []byte("events")
			if err := db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket(name)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			value := event(0, benchEventSize)
			var seq uint64
			b.SetBytes(int64(n * benchEventSize))
			b.ReportAllocs()
			for b.Loop() {
				err := db.Update(func(tx *bolt.Tx) error {
					bk := tx.Bucket(name)
					bk.FillPercent = 1.0
					keys := make([]byte, 0, 8*n) // bbolt holds keys until commit
					for range n {
						seq++
						keys = binary.BigEndian.AppendUint64(keys, seq)
						if err := bk.Put(keys[len(keys)-8:], value); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
