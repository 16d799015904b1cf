package client_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit-dev/godwit/client"
	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/events/api"
	"github.com/godwit-dev/godwit/outbox"
	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
	"github.com/godwit-dev/godwit/rpc"
)

type benchOrder struct {
	ID     int64    `bson:"_id"`
	Status string   `bson:"status"`
	Total  float64  `bson:"total"`
	Items  []string `bson:"items"`
}

// BenchmarkClient_Subscribe measures the events per second one consumer
// gets from godwit over gRPC on loopback, replaying b.N insert events
// already in the outbox, three ways in the same run:
//
//   - raw-grpc: the generated EventService stub, Recv only (BSON
//     encoding): the floor any client pays;
//   - raw-grpc+decode: the same, plus bson.Unmarshal of each event's
//     document into a struct: what an application hand-writes;
//   - client+decode: this package, Typed[benchOrder] (Next decodes).
//
// The three read the same outbox from the same daemon in turns, for
// several rounds, so that load on the machine hits them alike; client/raw
// is client+decode's rate over raw-grpc+decode's (goal ≥ 0.9).
//
//	go test -run '^$' -bench Client_Subscribe -benchtime 20000x ./client
func BenchmarkClient_Subscribe(b *testing.B) {
	raw, err := bson.Marshal(bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: "8266"}}},
		{Key: "operationType", Value: "insert"},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: 1}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int64(42)}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int64(42)}, {Key: "status", Value: "paid"},
			{Key: "total", Value: 129.5}, {Key: "items", Value: bson.A{"a", "b", "c"}}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	addr := benchServer(b, raw, b.N)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kinds := []string{"raw-grpc", "raw-grpc+decode", "client+decode"}
	spent := map[string]time.Duration{}
	const rounds = 5
	b.ResetTimer()
	for r := range rounds {
		for i := range kinds {
			kind := kinds[(i+r)%len(kinds)] // each goes first in turn
			start := time.Now()
			var got int
			if kind == "client+decode" {
				got = readClient(ctx, b, addr)
			} else {
				got = readRaw(ctx, b, addr, kind == "raw-grpc+decode")
			}
			spent[kind] += time.Since(start)
			if got != b.N {
				b.Fatalf("%s read %d events, want %d", kind, got, b.N)
			}
		}
	}
	b.StopTimer()
	rate := func(kind string) float64 { return float64(rounds*b.N) / spent[kind].Seconds() }
	b.ReportMetric(rate("raw-grpc"), "raw-grpc-events/s")
	b.ReportMetric(rate("raw-grpc+decode"), "raw-grpc+decode-events/s")
	b.ReportMetric(rate("client+decode"), "client+decode-events/s")
	b.ReportMetric(rate("client+decode")/rate("raw-grpc+decode"), "client/raw")
	b.ReportMetric(0, "ns/op") // one op reads b.N events 15 times: not a useful figure
}

func readRaw(ctx context.Context, b *testing.B, addr string, decode bool) int {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx, &pb.SubscribeRequest{
		Start: &pb.SubscribeRequest_FromSequence{FromSequence: 1}, Encoding: pb.Encoding_ENCODING_BSON})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < b.N {
		m, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if e := m.GetEvent(); e != nil {
			if decode {
				var o benchOrder
				if err := bson.Unmarshal(e.GetFullDocument().GetBson(), &o); err != nil || o.ID != 42 {
					b.Fatal(o, err)
				}
			}
			got++
		}
	}
	return got
}

func readClient(ctx context.Context, b *testing.B, addr string) int {
	c, err := client.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(ctx, client.Filter{}, client.FromSequence(1))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	orders := client.Typed[benchOrder](s)
	got := 0
	for got < b.N && orders.Next(ctx) {
		if orders.Event().Doc.ID != 42 {
			b.Fatal(orders.Event())
		}
		got++
	}
	if err := orders.Err(); err != nil {
		b.Fatal(err)
	}
	return got
}

// benchServer serves an outbox holding n copies of raw over gRPC.
func benchServer(b *testing.B, raw []byte, n int) string {
	ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ob.Close(context.Background()) })
	evs := make([][]byte, 1000)
	for i := range evs {
		evs[i] = raw
	}
	for done := 0; done < n; done += len(evs) {
		if _, err := ob.Append(context.Background(), "shop", evs[:min(len(evs), n-done)], outbox.Checkpoint{Token: []byte("t")}); err != nil {
			b.Fatal(err)
		}
	}
	e, err := events.Open(ob, events.Config{}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	srv, err := rpc.New(rpc.Config{Addr: "127.0.0.1:0"}, zerolog.Nop(), api.New(e))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() { e.Close(context.Background()); cancel(); <-served })
	return srv.Addr()
}
