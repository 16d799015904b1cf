package api_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/events/api"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
	"github.com/godwit-dev/godwit/rpc"
)

// BenchmarkService_Subscribe measures live subscribers over gRPC on
// loopback: outbox read, parse, filter, Extended JSON encoding, protobuf
// and transport. Events are appended in 1000-event batches (capture's
// default batch) straight into the outbox.
//
//	go test -run '^$' -bench Service_Subscribe -benchtime 50000x ./events/api
//
// events/s is per subscriber; deliveries/s counts all of them.
func BenchmarkService_Subscribe(b *testing.B) {
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
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close(context.Background())
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
			defer func() { _ = e.Close(testwait.Context(b)); cancel(); <-served }()
			conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()

			var ready, finished sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				ready.Add(1)
				finished.Add(1)
				go func() {
					defer finished.Done()
					stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx, &pb.SubscribeRequest{})
					if err != nil {
						errs <- err
						ready.Done()
						return
					}
					got := 0
					for {
						m, err := stream.Recv()
						if err != nil {
							errs <- err
							return
						}
						if m.GetStarted() != nil {
							ready.Done()
						}
						if m.GetEvent() != nil {
							if got++; got == b.N {
								return
							}
						}
					}
				}()
			}
			ready.Wait()
			b.ResetTimer()
			start := time.Now()
			evs := make([][]byte, 1000)
			for i := range evs {
				evs[i] = raw
			}
			for done := 0; done < b.N; done += len(evs) {
				if _, err := ob.Append(ctx, "shop", evs[:min(len(evs), b.N-done)], outbox.Checkpoint{Token: []byte("t")}); err != nil {
					b.Fatal(err)
				}
			}
			finished.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "deliveries/s")
		})
	}
}
