package replicate_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/ferrettest"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/replicate"
)

// BenchmarkFerretDB measures godwit writing into FerretDB (a real wire
// server without transactions, so the plain apply mode) side by side with
// what a user would write by hand with the official driver: the same
// documents with InsertMany for the initial copy, and the same changes with
// an ordered BulkWrite (InsertOne, UpdateOne $set, DeleteOne) for streaming.
//
//	go test ./replicate -run '^$' -bench FerretDB -benchtime 20000x
func BenchmarkFerretDB(b *testing.B) {
	srv := ferrettest.Start(b)
	dst, err := mongodb.Open(context.Background(), srv.URI, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = dst.Close(context.Background()) })
	var run atomic.Int64 // every run writes into databases of its own
	fresh := func() string { return fmt.Sprintf("bench%d", run.Add(1)) }

	b.Run("copy/godwit", func(b *testing.B) {
		db := fresh()
		src := memory(b)
		seedBench(b, src, db, b.N)
		s, err := replicate.Open(context.Background(), replicate.Config{ID: db, Source: "s", Target: srv.URI,
			Include: []string{db + ".*"}}, dst, meta, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		if err := s.InitialSync(context.Background(), src); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := s.Status(); st.Copied != int64(b.N) {
			b.Fatalf("copied %d documents, want %d", st.Copied, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	})
	b.Run("copy/driver-InsertMany", func(b *testing.B) {
		db := fresh()
		docs := benchDocs(b.N)
		coll := dst.Client.Database(db).Collection("orders")
		b.ResetTimer()
		for i := 0; i < len(docs); i += 1000 {
			if _, err := coll.InsertMany(context.Background(), docs[i:min(i+1000, len(docs))], options.InsertMany().SetOrdered(true)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	})

	b.Run("stream/godwit", func(b *testing.B) {
		db := fresh()
		no := false
		s, err := replicate.Open(context.Background(), replicate.Config{ID: db, Source: "s", Target: srv.URI,
			InitialSync: &no, Mapping: map[string]string{"shop": db}}, dst, meta, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		recs := benchEvents(b, b.N)
		b.ResetTimer()
		for i := 0; i < len(recs); i += 1000 {
			if err := s.Deliver(context.Background(), recs[i:min(i+1000, len(recs))]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
	})
	b.Run("stream/driver-BulkWrite", func(b *testing.B) {
		db := fresh()
		recs := benchEvents(b, b.N)
		// One ordered bulk write per collection and batch, as godwit groups
		// them; batches of 64 changes: FerretDB v1 hangs on an update
		// command of 100 statements (it holds a pooled connection per
		// statement, see maxUpdatesPerCommand).
		type bulk struct {
			coll   string
			models []mongo.WriteModel
		}
		var bulks []bulk
		batch := map[string]int{} // collection → index in bulks, for the current batch
		for i, r := range recs {
			if i%64 == 0 {
				clear(batch)
			}
			ev, err := change.Parse(r.Raw)
			if err != nil {
				b.Fatal(err)
			}
			var m mongo.WriteModel
			switch ev.OperationType {
			case change.OpInsert:
				m = mongo.NewInsertOneModel().SetDocument(ev.FullDocument)
			case change.OpUpdate:
				m = mongo.NewUpdateOneModel().SetFilter(ev.DocumentKey).SetUpdate(bson.D{{Key: "$set", Value: ev.UpdateDescription.UpdatedFields}})
			default:
				m = mongo.NewDeleteOneModel().SetFilter(ev.DocumentKey)
			}
			k, ok := batch[ev.NS.Coll]
			if !ok {
				k = len(bulks)
				batch[ev.NS.Coll] = k
				bulks = append(bulks, bulk{coll: ev.NS.Coll})
			}
			bulks[k].models = append(bulks[k].models, m)
		}
		b.ResetTimer()
		for _, bk := range bulks {
			if _, err := dst.Client.Database(db).Collection(bk.coll).BulkWrite(context.Background(), bk.models, options.BulkWrite().SetOrdered(true)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
	})
}

// benchDocs returns n documents of the shape benchEvents writes.
func benchDocs(n int) []any {
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: int32(i)}, {Key: "n", Value: int32(i)}, {Key: "s", Value: "some text of a typical length"}}
	}
	return docs
}

// seedBench inserts n documents into db.orders of an embedded source.
func seedBench(b *testing.B, src *mongodb.Conn, db string, n int) {
	b.Helper()
	docs := benchDocs(n)
	for i := 0; i < len(docs); i += 5000 {
		if _, err := src.Client.Database(db).Collection("orders").InsertMany(context.Background(), docs[i:min(i+5000, len(docs))]); err != nil {
			b.Fatal(err)
		}
	}
}
