package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/envelope"
	"github.com/godwit-dev/godwit/sink/internal/brokers"
	"github.com/godwit-dev/godwit/sink/internal/brokertest"
	"github.com/godwit-dev/godwit/sink/kafka"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

func TestMain(m *testing.M) {
	if brokertest.IsChild() {
		brokertest.RunChild(func() (sink.Sink, error) {
			var cfg kafka.Config
			if err := json.Unmarshal(brokertest.ChildConfig(), &cfg); err != nil {
				return nil, err
			}
			return kafka.Open(cfg)
		})
	}
	os.Exit(m.Run())
}

// cluster starts franz-go's in-process Kafka-protocol cluster (kfake):
// the real client code runs against the real protocol.
func cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func open(t testing.TB, cfg kafka.Config) *kafka.Sink {
	t.Helper()
	s, err := kafka.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// consumed is one record read back, with its godwit headers.
type consumed struct {
	*kgo.Record
	seq uint64
	h   map[string]string
}

// readAll reads every record of topic, up to the end offsets at call time.
func readAll(t testing.TB, addrs []string, topic string) []consumed {
	t.Helper()
	ctx := testwait.Context(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	var out []consumed
	if len(want) == 0 {
		return out
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s: %v (%d partitions not read to the end)", topic, err, len(want))
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch %s: %v", topic, err) })
		fs.EachRecord(func(r *kgo.Record) {
			c := consumed{Record: r, h: map[string]string{}}
			for _, h := range r.Headers {
				c.h[h.Key] = string(h.Value)
			}
			c.seq, _ = strconv.ParseUint(c.h[envelope.HeaderSeq], 10, 64)
			out = append(out, c)
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return out
}

// checkDelivered asserts that recs hold every event of want at least once,
// nothing else, at most maxDup duplicates (same source and seq), and that
// per document the first copies are in outbox order on one partition.
func checkDelivered(t testing.TB, recs []consumed, want []outbox.Record, maxDup int) {
	t.Helper()
	wanted := map[uint64]outbox.Record{}
	for _, r := range want {
		wanted[r.Seq] = r
	}
	seen := map[uint64]bool{}
	type docState struct {
		partition int32
		last      uint64
	}
	docs := map[string]*docState{}
	dups := 0
	for _, r := range recs {
		if r.h[envelope.HeaderOperation] == "tombstone" {
			continue
		}
		w, ok := wanted[r.seq]
		if !ok {
			t.Fatalf("record with seq %q is not an event of the outbox", r.h[envelope.HeaderSeq])
		}
		if r.h[envelope.HeaderSource] != w.Source {
			t.Errorf("seq %d: source header %q, want %q", r.seq, r.h[envelope.HeaderSource], w.Source)
		}
		if seen[r.seq] {
			dups++
			continue
		}
		seen[r.seq] = true
		var d bson.D
		if err := bson.UnmarshalExtJSON(r.Value, false, &d); err != nil {
			t.Fatalf("seq %d: value is not Extended JSON: %v", r.seq, err)
		}
		ev, _ := change.Parse(w.Raw)
		if id, _ := ev.DocumentID(); d.Map()["operationType"] != ev.OperationType || id.Int64() != mustDocID(t, d) {
			t.Fatalf("seq %d: value %s is not event %d", r.seq, r.Value, w.Seq)
		}
		ds := docs[string(r.Key)]
		switch {
		case ds == nil:
			docs[string(r.Key)] = &docState{partition: r.Partition, last: r.seq}
		case ds.partition != r.Partition:
			t.Fatalf("document %s is on partitions %d and %d", r.Key, ds.partition, r.Partition)
		case r.seq < ds.last:
			t.Fatalf("document %s: event %d after %d", r.Key, r.seq, ds.last)
		default:
			ds.last = r.seq
		}
	}
	if len(seen) != len(wanted) {
		t.Fatalf("%d of %d events delivered", len(seen), len(wanted))
	}
	if dups > maxDup {
		t.Fatalf("%d duplicates, want at most %d", dups, maxDup)
	}
	t.Logf("%d events, %d duplicates (identified by %s)", len(seen), dups, envelope.HeaderSeq)
}

func mustDocID(t testing.TB, ev bson.D) int64 {
	t.Helper()
	for _, e := range ev {
		if e.Key == "documentKey" {
			for _, k := range e.Value.(bson.D) {
				if k.Key == "_id" {
					switch v := k.Value.(type) {
					case int64:
						return v
					case int32:
						return int64(v)
					}
				}
			}
		}
	}
	t.Fatalf("no documentKey._id in %v", ev)
	return 0
}

func TestSink_Conformance(t *testing.T) {
	c := cluster(t)
	var mu sync.Mutex
	topics := map[string]string{}
	topicOf := func(dir string) string {
		mu.Lock()
		defer mu.Unlock()
		if topics[dir] == "" {
			topics[dir] = fmt.Sprintf("conf-%d", len(topics))
		}
		return topics[dir]
	}
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			s, err := kafka.Open(kafka.Config{Brokers: c.ListenAddrs(), Topic: topicOf(dir), CreateTopics: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			// A restarted sink produces its first replay again: one
			// suite batch (7 events) at most.
			checkDelivered(t, readAll(t, c.ListenAddrs(), topicOf(dir)), want, 7)
		},
	})
}

func TestSink_Deliver(t *testing.T) {
	c := cluster(t)
	ctx := testwait.Context(t)
	events := brokertest.Events(60, 4, 300)
	recs := make([]outbox.Record, len(events))
	for i, ev := range events {
		recs[i] = outbox.Record{Seq: uint64(i + 1), Source: "shop", CapturedAt: time.Now(), Raw: ev}
	}

	t.Run("TopicTemplateKeysAndHeaders", func(t *testing.T) {
		s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Prefix: "app", CreateTopics: true, Compression: "zstd"})
		if err := s.Deliver(ctx, recs); err != nil {
			t.Fatal(err)
		}
		topic := s.TopicOf("shop", "shop", "orders")
		if topic != "app.shop.orders" {
			t.Fatalf("topic %q, want app.shop.orders", topic)
		}
		got := readAll(t, c.ListenAddrs(), topic)
		checkDelivered(t, got, recs, 0)
		if h := got[0].h; h[envelope.HeaderNamespace] != "shop.orders" || h[envelope.HeaderClusterTime] == "" ||
			h[envelope.HeaderOperation] == "" || h[envelope.HeaderSource] != "shop" {
			t.Errorf("headers %v", h)
		}
	})
	t.Run("TombstoneAfterDelete", func(t *testing.T) {
		s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "tomb", CreateTopics: true, Tombstones: true})
		if err := s.Deliver(ctx, recs); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, c.ListenAddrs(), "tomb")
		deletes, tombs := 0, 0
		for i, r := range got {
			switch r.h[envelope.HeaderOperation] {
			case "delete":
				deletes++
			case "tombstone":
				tombs++
				prev := got[i-1]
				if r.Value != nil || !bytes.Equal(r.Key, prev.Key) || prev.h[envelope.HeaderOperation] != "delete" || prev.Partition != r.Partition {
					t.Fatalf("tombstone %s (value %q) does not follow the delete of its document", r.Key, r.Value)
				}
			}
		}
		if deletes == 0 || tombs != deletes {
			t.Fatalf("%d deletes, %d tombstones", deletes, tombs)
		}
	})
	t.Run("DebeziumEnvelope", func(t *testing.T) {
		s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "dbz.{db}.{coll}", CreateTopics: true,
			Envelope: envelope.Config{Format: "debezium", Name: "fulfillment"}})
		if err := s.Deliver(ctx, recs[:10]); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, c.ListenAddrs(), "dbz.shop.orders")
		if len(got) != 10 {
			t.Fatalf("%d records, want 10", len(got))
		}
		first := got[0]
		for _, r := range got {
			if r.seq == 1 {
				first = r
			}
		}
		var v struct {
			Op     string
			After  *string
			Source struct{ Name, Collection string }
		}
		if err := json.Unmarshal(first.Value, &v); err != nil || v.Op != "c" || v.After == nil || v.Source.Name != "fulfillment" {
			t.Fatalf("first event %s: %+v %v", first.Value, v, err)
		}
		var key struct{ ID string }
		if err := json.Unmarshal(first.Key, &key); err != nil || key.ID != "0" {
			t.Fatalf("key %s, want {\"id\":\"0\"}", first.Key)
		}
	})
	t.Run("MalformedEventIsPermanentAfterItsPrefix", func(t *testing.T) {
		s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "bad", CreateTopics: true})
		batch := []outbox.Record{recs[0], recs[1], {Seq: 3, Source: "shop", Raw: []byte{9, 9}}, recs[3]}
		batch[0].Seq, batch[1].Seq, batch[3].Seq = 1, 2, 4
		err := s.Deliver(ctx, batch)
		var pe *sink.PartialError
		if !sink.IsPermanent(err) || !asPartial(err, &pe) || pe.Delivered != 2 {
			t.Fatalf("got %v, want a permanent error after 2 delivered", err)
		}
		if got := readAll(t, c.ListenAddrs(), "bad"); len(got) != 2 {
			t.Fatalf("%d records in the topic, want the 2 before the bad event", len(got))
		}
	})
}

func asPartial(err error, pe **sink.PartialError) bool {
	for err != nil {
		if p, ok := err.(*sink.PartialError); ok {
			*pe = p
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestSink_SASL(t *testing.T) {
	for _, mech := range []string{kafka.MechanismPlain, kafka.MechanismScramSHA256, kafka.MechanismScramSHA512} {
		t.Run(strings.ReplaceAll(mech, "-", ""), func(t *testing.T) {
			c := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "godwit", "s3cret-pw"))
			ctx := testwait.Context(t)
			recs := []outbox.Record{{Seq: 1, Source: "shop", Raw: brokertest.Events(1, 1, 100)[0]}}
			good := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "auth", CreateTopics: true,
				SASL: &kafka.SASL{Mechanism: mech, Username: "godwit", Password: "s3cret-pw"}})
			if err := good.Deliver(ctx, recs); err != nil {
				t.Fatal(err)
			}
			bad := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "auth", CreateTopics: true, DeliveryTimeout: 2 * time.Second,
				SASL: &kafka.SASL{Mechanism: mech, Username: "godwit", Password: "wrong-pw-123"}})
			err := bad.Deliver(ctx, recs)
			if err == nil {
				t.Fatal("a wrong password delivered")
			}
			if strings.Contains(err.Error(), "wrong-pw-123") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		cfg   kafka.Config
		field string
	}{
		{kafka.Config{}, "brokers:"},
		{kafka.Config{Brokers: []string{"kafka://h:9092"}}, "brokers[0]:"},
		{kafka.Config{Brokers: []string{"h:9092"}, Topic: "{prefix}.{database}"}, "topic:"},
		{kafka.Config{Brokers: []string{"h:9092"}, Topic: "a b"}, "topic:"},
		{kafka.Config{Brokers: []string{"h:9092"}, Compression: "brotli"}, "compression:"},
		{kafka.Config{Brokers: []string{"h:9092"}, SASL: &kafka.SASL{Mechanism: "GSSAPI"}}, "sasl.mechanism:"},
		{kafka.Config{Brokers: []string{"h:9092"}, SASL: &kafka.SASL{Mechanism: "PLAIN", Username: "u"}}, "sasl.password:"},
		{kafka.Config{Brokers: []string{"h:9092"}, DeliveryTimeout: time.Millisecond}, "delivery_timeout:"},
		{kafka.Config{Brokers: []string{"h:9092"}, Envelope: envelope.Config{Format: "avro"}}, "envelope.format:"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	cfg := kafka.Config{Brokers: []string{"h:9092"}, SASL: &kafka.SASL{Mechanism: "PLAIN", Username: "u", Password: "hunter2-secret"}}
	dump, _ := json.Marshal(cfg)
	if s := fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, dump); strings.Contains(s, "hunter2-secret") {
		t.Fatalf("the password prints: %s", s)
	}
}

// TestSink_BrokerDown: the brokers refuse writes; the runner retries, the
// outbox fills to its bound and capture pauses; nothing is parked; once the
// brokers accept writes again everything is delivered.
func TestSink_BrokerDown(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(3, "down"))
	s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "down", DeliveryTimeout: time.Second})
	var fault *kfake.FaultHandle
	want := brokertest.BackPressure(t, s, func() {
		fault = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	}, func() { fault.Remove() })
	if fault.Hits() == 0 {
		t.Fatal("no produce request reached the broker while it was down")
	}
	// Records that timed out in the client may still have been written
	// by a broker: a bounded number of duplicates is allowed.
	checkDelivered(t, readAll(t, c.ListenAddrs(), "down"), want, len(want))
}

// TestSink_SurvivesSIGKILL kills a child running outbox + runner + kafka
// sink three times while it publishes, then lets it finish: every event is
// in Kafka, duplicates are at most one runner batch per kill and carry the
// same sequence header.
func TestSink_SurvivesSIGKILL(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(3, "crash"))
	cfg, _ := json.Marshal(kafka.Config{Brokers: c.ListenAddrs(), Topic: "crash"})
	kills := []int{400, 700, 900}
	midway := brokertest.Crash(t, cfg, kills...)
	t.Logf("%d of %d kills hit while events were undelivered", midway, len(kills))
	want := make([]outbox.Record, brokertest.CrashEvents)
	for i, ev := range brokertest.Events(brokertest.CrashEvents, 100, 256) {
		want[i] = outbox.Record{Seq: uint64(i + 1), Source: "src", Raw: ev}
	}
	checkDelivered(t, readAll(t, c.ListenAddrs(), "crash"), want, len(kills)*brokertest.CrashBatch)
}

// TestSink_RealCluster runs the conformance suite against a real Kafka.
func TestSink_RealCluster(t *testing.T) {
	addrs := os.Getenv("GODWIT_TEST_KAFKA_BROKERS")
	if addrs == "" {
		t.Skip("GODWIT_TEST_KAFKA_BROKERS (host:port,...) is not set")
	}
	brokers := strings.Split(addrs, ",")
	run := time.Now().UnixNano()
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			s, err := kafka.Open(kafka.Config{Brokers: brokers, Topic: fmt.Sprintf("godwit-test-%d-%x", run, hash(dir)), CreateTopics: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			checkDelivered(t, readAll(t, brokers, fmt.Sprintf("godwit-test-%d-%x", run, hash(dir))), want, 7)
		},
	})
}

func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

func TestSink_TLS(t *testing.T) {
	files := brokertest.NewTLS(t)
	c := cluster(t, kfake.TLS(files.Server(false)))
	ctx := testwait.Context(t)
	recs := []outbox.Record{{Seq: 1, Source: "shop", Raw: brokertest.Events(1, 1, 100)[0]}}
	s := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "tls", CreateTopics: true, TLS: &brokers.TLS{CA: files.CA}})
	if err := s.Deliver(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// Without the CA the broker's certificate is not trusted.
	untrusted := open(t, kafka.Config{Brokers: c.ListenAddrs(), Topic: "tls", CreateTopics: true, TLS: &brokers.TLS{}, DeliveryTimeout: 2 * time.Second})
	if err := untrusted.Deliver(ctx, recs); err == nil {
		t.Fatal("delivered to a broker whose certificate no trusted CA signed")
	}
}
