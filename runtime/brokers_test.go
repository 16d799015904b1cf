package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/runtime"
)

// TestGodwit_BrokerSinks configures a kafka sink (Debezium envelope) and a
// nats sink as a user would, writes to the source, and reads both brokers
// back as their consumers would.
func TestGodwit_BrokerSinks(t *testing.T) {
	dir := t.TempDir()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(testwait.Long) {
		t.Fatal("nats-server did not start")
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
api: {http_addr: "off", grpc_addr: "off"}
sources: [{id: shop, uri: "lungo:shop.lungo"}]
sinks:
  - id: kafka
    type: kafka
    kafka: {brokers: [%q], topic: "cdc.{db}.{coll}", create_topics: true, envelope: {format: debezium}}
  - id: nats
    type: nats
    nats: {servers: [%q], stream: {name: CDC, create: true}}
`, kc.ListenAddrs()[0], ns.ClientURL())), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t)
	d, stop := runGodwit(t, ctx, cfg)
	defer stop()
	src := openSide(t, ctx, dir, "shop.lungo")
	orders := src.Client.Database("shop").Collection("orders")
	ops := 0
	for i := range 10 {
		if _, err := orders.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "qty", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		ops++
	}
	for i := range 5 {
		if _, err := orders.UpdateOne(ctx, bson.M{"_id": i}, bson.M{"$inc": bson.M{"qty": 1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := orders.DeleteOne(ctx, bson.M{"_id": 9 - i}); err != nil {
			t.Fatal(err)
		}
		ops += 2
	}
	for _, r := range d.Runners() {
		if err := r.WaitAcked(ctx, uint64(ops)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range d.Status().Sinks {
		if s.Delivered != uint64(ops) || s.Backlog != 0 || s.LastError != "" {
			t.Errorf("sink %s: %+v", s.ID, s)
		}
		// Both brokers just acknowledged every event: status says the
		// sink is connected.
		if !strings.HasPrefix(s.Connection, "connected") {
			t.Errorf("sink %s: connection %q, want connected", s.ID, s.Connection)
		}
	}

	// Kafka: a Debezium consumer's view.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ConsumeTopics("cdc.shop.orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "cdc.shop.orders")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	ops2 := map[string]int{}
	for read := int64(0); read < total; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			var v struct {
				Op     string `json:"op"`
				Source struct {
					DB         string `json:"db"`
					Collection string `json:"collection"`
				} `json:"source"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Source.Collection != "orders" {
				t.Fatalf("record %s: %v", r.Value, err)
			}
			ops2[v.Op]++
		})
	}
	if ops2["c"] != 10 || ops2["u"] != 5 || ops2["d"] != 5 {
		t.Errorf("kafka ops %v, want 10 c, 5 u, 5 d", ops2)
	}

	// NATS: every event once in the stream.
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	str, err := js.Stream(ctx, "CDC")
	if err != nil {
		t.Fatal(err)
	}
	if n := str.CachedInfo().State.Msgs; n != uint64(ops) {
		t.Errorf("nats stream holds %d messages, want %d", n, ops)
	}
}

// TestGodwit_BrokerOutageIsNeverParked: with default settings a kafka sink
// retries a broker outage far past the default five attempts without
// parking anything, and delivers once the broker takes writes again.
func TestGodwit_BrokerOutageIsNeverParked(t *testing.T) {
	dir := t.TempDir()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
api: {http_addr: "off", grpc_addr: "off"}
sources: [{id: shop, uri: "lungo:shop.lungo"}]
sinks:
  - {id: kafka, type: kafka, batch_size: 1, kafka: {brokers: [%q], topic: out, delivery_timeout: 1s}}
`, kc.ListenAddrs()[0])), dir)
	if err != nil {
		t.Fatal(err)
	}
	fault := kc.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	failures := make(chan struct{}, 1000)
	ctx := testwait.Context(t)
	d, err := runtime.Open(ctx, cfg, zerolog.Nop(), runtime.WithDeliveryObserver(func(string) func(time.Duration, int, error) {
		return func(_ time.Duration, _ int, err error) {
			if err != nil {
				failures <- struct{}{}
			}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
		_ = d.Close(context.Background())
	}()
	<-d.Sources()[0].Ready()
	src := openSide(t, ctx, dir, "shop.lungo")
	if _, err := src.Client.Database("shop").Collection("orders").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	// WaitAcked also returns when the event is parked (the cursor passes it).
	acked := make(chan error, 1)
	go func() { acked <- d.Runners()[0].WaitAcked(ctx, 1) }()
	for range 6 { // past the default of 5 attempts
		select {
		case <-failures:
		case err := <-acked:
			t.Fatalf("the event left the outbox while the broker refused writes (%v): %+v", err, d.Runners()[0].Status())
		case <-ctx.Done():
			t.Fatal("deliveries did not fail while the broker refused writes")
		}
	}
	fault.Remove()
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	if st := d.Runners()[0].Status(); st.Parked != 0 || st.Delivered != 1 {
		t.Fatalf("after the outage: %+v", st)
	}
}
