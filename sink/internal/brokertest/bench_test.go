package brokertest_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/internal/brokertest"
	"github.com/godwit-dev/godwit/sink/jsonl"
	"github.com/godwit-dev/godwit/sink/kafka"
	"github.com/godwit-dev/godwit/sink/nats"
)

// BenchmarkSinks delivers 1 KiB change events to the jsonl sink (a local
// file, fsync per batch), to Kafka (franz-go's in-process kfake cluster,
// acks=all, idempotent, snappy) and to NATS JetStream (nats-server in
// process, file storage) side by side. One op is one Deliver call as the
// runner makes it: a batch of 1000 events (throughput) or of 1 event
// (publish latency of a lone change). It reports events/s and the p50/p99
// time from Deliver to every acknowledgement.
//
//	go test -run '^$' -bench BenchmarkSinks -benchtime 200x ./sink/internal/brokertest/
func BenchmarkSinks(b *testing.B) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer kc.Close()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(time.Minute) {
		b.Fatal("nats-server did not start")
	}
	sinks := []struct {
		name string
		open func(b *testing.B) sink.Sink
	}{
		{"jsonl", func(b *testing.B) sink.Sink {
			s, err := jsonl.Open(jsonl.Config{Path: filepath.Join(b.TempDir(), "events.jsonl")})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"kafka-kfake", func(b *testing.B) sink.Sink {
			s, err := kafka.Open(kafka.Config{Brokers: kc.ListenAddrs(), Topic: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"nats-jetstream-file", func(b *testing.B) sink.Sink {
			s, err := nats.Open(context.Background(), nats.Config{Servers: []string{ns.ClientURL()}, Prefix: "bench",
				Stream: &nats.Stream{Name: "BENCH", Create: true, MaxBytes: 1 << 30}})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	events := brokertest.Events(1000, 200, 1024)
	for _, batch := range []int{1000, 1} {
		for _, sk := range sinks {
			b.Run(sk.name+"/batch="+strconv.Itoa(batch), func(b *testing.B) {
				s := sk.open(b)
				defer func() {
					if c, ok := s.(sink.Closer); ok {
						_ = c.Close(context.Background())
					}
				}()
				seq := uint64(time.Now().UnixNano()) // fresh ids for every run (NATS dedupes)
				recs := make([]outbox.Record, batch)
				lat := make([]time.Duration, 0, b.N)
				bytes := 0
				for i := range recs {
					bytes += len(events[i])
				}
				b.SetBytes(int64(bytes))
				b.ResetTimer()
				for range b.N {
					for i := range recs {
						seq++
						recs[i] = outbox.Record{Seq: seq, Source: "src", CapturedAt: time.Now(), Raw: events[i]}
					}
					began := time.Now()
					if err := s.Deliver(context.Background(), recs); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(began))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
			})
		}
	}
}
