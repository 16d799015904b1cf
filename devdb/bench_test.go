package devdb_test

import (
	"context"
	"strings"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/devdb"
)

// preloaded is a lungo store whose catalog already holds an oplog: writing
// b.N events through the engine costs O(n²) (it clones the oplog on every
// insert), which would make the benchmark's setup take minutes.
type preloaded struct{ c *lungo.Catalog }

func (p *preloaded) Load() (*lungo.Catalog, error) { return p.c, nil }
func (p *preloaded) Store(c *lungo.Catalog) error  { p.c = c; return nil }

// oplogEngine opens an engine whose oplog holds n insert events of 1 KiB
// documents in bench.c, in the format lungo writes them, and returns the
// cluster time of the first.
func oplogEngine(b *testing.B, n int) (*lungo.Engine, primitive.Timestamp) {
	payload := strings.Repeat("x", 1000)
	list := make(bsonkit.List, n)
	var first primitive.Timestamp
	for i := range list {
		ts := bsonkit.Now()
		if i == 0 {
			first = ts
		}
		list[i] = bsonkit.MustConvert(bson.D{
			{Key: "_id", Value: bson.D{{Key: "ts", Value: ts}}},
			{Key: "clusterTime", Value: ts},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(i)}}},
			{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int32(i)}, {Key: "payload", Value: payload}}},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "bench"}, {Key: "coll", Value: "c"}}},
			{Key: "operationType", Value: "insert"},
		})
	}
	c := lungo.NewCatalog()
	c.Namespaces[lungo.Oplog].Documents = bsonkit.NewSet(list)
	engine, err := lungo.CreateEngine(lungo.Options{Store: &preloaded{c: c}, MaxOplogSize: n + 1000, ExpireErrors: func(error) {}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(engine.Close)
	return engine, first
}

// BenchmarkChangeStream reads b.N change events of 1 KiB documents side by
// side: through the official Go driver from devdb (godwit's mongodb://
// capture path), the same with a $match like the one capture pushes down,
// and from the embedded engine directly (godwit's lungo: capture path).
//
//	go test -run XXX -bench BenchmarkChangeStream -benchtime 100000x -count 3 ./devdb/
func BenchmarkChangeStream(b *testing.B) {
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}
	for _, bc := range []struct {
		name     string
		pipeline mongo.Pipeline
	}{
		{"devdb-driver", mongo.Pipeline{}},
		{"devdb-driver-match", mongo.Pipeline{{{Key: "$match", Value: bson.M{"ns.db": bson.M{"$ne": "godwit"}, "operationType": bson.M{"$in": bson.A{"insert", "update", "replace", "delete"}}}}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			engine, first := oplogEngine(b, b.N)
			log := zerolog.Nop()
			srv, err := devdb.Open(engine, devdb.Config{Addr: "127.0.0.1:0", Log: &log})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = srv.Close(context.Background()) })
			ctx := context.Background()
			client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = client.Disconnect(ctx) })
			b.ResetTimer()
			cs, err := client.Database("bench").Watch(ctx, bc.pipeline, options.ChangeStream().SetStartAtOperationTime(&first))
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close(ctx)
			for i := 0; i < b.N; i++ {
				if !cs.Next(ctx) {
					b.Fatalf("stream ended after %d events: %v", i, cs.Err())
				}
				if len(cs.Current) < 1000 {
					b.Fatalf("event %d is %d bytes", i, len(cs.Current))
				}
			}
			b.StopTimer()
			report(b)
		})
	}

	b.Run("lungo-direct", func(b *testing.B) {
		engine, first := oplogEngine(b, b.N)
		ctx := context.Background()
		b.ResetTimer()
		cs, err := lungo.NewClient(engine).Database("bench").Watch(ctx, bson.A{}, options.ChangeStream().SetStartAtOperationTime(&first))
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close(ctx)
		for i := 0; i < b.N; i++ {
			if !cs.Next(ctx) {
				b.Fatalf("stream ended after %d events: %v", i, cs.Err())
			}
			var raw bson.Raw
			if err := cs.Decode(&raw); err != nil || len(raw) < 1000 {
				b.Fatalf("event %d: %d bytes, %v", i, len(raw), err)
			}
		}
		b.StopTimer()
		report(b)
	})
}
