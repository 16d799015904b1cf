package replicate_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
)

// BenchmarkSink_Deliver measures apply throughput: into a target adapter
// that discards every write (the cost of godwit's own apply path: parsing,
// planning, grouping, markers) and into the embedded engine. A real
// cluster's throughput depends on the cluster and the network and cannot
// be measured here.
//
//	go test ./replicate -run '^$' -bench Sink_Deliver -benchtime 20000x
func BenchmarkSink_Deliver(b *testing.B) {
	for _, target := range []string{"nop", "embedded"} {
		for _, workers := range []int{1, 4} {
			b.Run(fmt.Sprintf("target=%s/workers=%d", target, workers), func(b *testing.B) {
				var conn *mongodb.Conn
				if target == "nop" {
					conn = &mongodb.Conn{Client: nopClient{}, Redacted: "nop"}
				} else {
					conn = memory(b)
				}
				no := false
				s, err := replicate.Open(context.Background(), replicate.Config{ID: "bench", Source: "s", Target: "lungo:memory",
					InitialSync: &no, Workers: workers}, conn, meta, zerolog.Nop())
				if err != nil {
					b.Fatal(err)
				}
				recs := benchEvents(b, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < len(recs); i += 1000 {
					if err := s.Deliver(context.Background(), recs[i:min(i+1000, len(recs))]); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// benchEvents returns n change events over 2000 documents in two
// collections: inserts, $set updates and deletes, in the embedded engine's
// format (every update carries its post-image).
func benchEvents(b *testing.B, n int) []outbox.Record {
	b.Helper()
	recs := make([]outbox.Record, n)
	for i := range recs {
		ts := primitive.Timestamp{T: 1800000000 + uint32(i/100000), I: uint32(i%100000 + 1)}
		id := int32(i % 2000)
		coll := []string{"orders", "items"}[i%2]
		doc := bson.D{{Key: "_id", Value: id}, {Key: "n", Value: int32(i)}, {Key: "s", Value: "some text of a typical length"}}
		ev := bson.D{{Key: "_id", Value: bson.D{{Key: "ts", Value: ts}}}, {Key: "clusterTime", Value: ts},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: coll}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}}}
		switch i / 2000 % 3 {
		case 0:
			ev = append(ev, bson.E{Key: "operationType", Value: "insert"}, bson.E{Key: "fullDocument", Value: doc})
		case 1:
			ev = append(ev, bson.E{Key: "operationType", Value: "update"}, bson.E{Key: "fullDocument", Value: doc},
				bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "n", Value: int32(i)}}},
					{Key: "removedFields", Value: bson.A{}}, {Key: "truncatedArrays", Value: bson.A{}}}})
		default:
			ev = append(ev, bson.E{Key: "operationType", Value: "delete"})
		}
		raw, err := bson.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = outbox.Record{Seq: uint64(i + 1), Source: "s", Raw: raw}
	}
	return recs
}

// The no-op target: lungo's driver interfaces, every write accepted and
// discarded, every read empty. Methods the apply path does not call panic
// (nil embedded interface).
type nopClient struct{ lungo.IClient }

func (nopClient) Database(string, ...*options.DatabaseOptions) lungo.IDatabase { return nopDB{} }
func (nopClient) UseSession(ctx context.Context, fn func(lungo.ISessionContext) error) error {
	return fn(nopSession{Context: ctx})
}

type nopSession struct {
	context.Context
	lungo.ISession
}

func (s nopSession) WithTransaction(_ context.Context, fn func(lungo.ISessionContext) (any, error), _ ...*options.TransactionOptions) (any, error) {
	return fn(s)
}

type nopDB struct{ lungo.IDatabase }

func (nopDB) Collection(string, ...*options.CollectionOptions) lungo.ICollection { return nopColl{} }

type nopColl struct{ lungo.ICollection }

func (nopColl) InsertOne(context.Context, any, ...*options.InsertOneOptions) (*mongo.InsertOneResult, error) {
	return &mongo.InsertOneResult{}, nil
}
func (nopColl) DeleteOne(context.Context, any, ...*options.DeleteOptions) (*mongo.DeleteResult, error) {
	return &mongo.DeleteResult{}, nil
}
func (nopColl) DeleteMany(context.Context, any, ...*options.DeleteOptions) (*mongo.DeleteResult, error) {
	return &mongo.DeleteResult{}, nil
}
func (nopColl) ReplaceOne(context.Context, any, any, ...*options.ReplaceOptions) (*mongo.UpdateResult, error) {
	return &mongo.UpdateResult{}, nil
}
func (nopColl) BulkWrite(_ context.Context, models []mongo.WriteModel, _ ...*options.BulkWriteOptions) (*mongo.BulkWriteResult, error) {
	return &mongo.BulkWriteResult{}, nil
}
func (nopColl) Find(context.Context, any, ...*options.FindOptions) (lungo.ICursor, error) {
	return nopCursor{}, nil
}
func (nopColl) FindOne(context.Context, any, ...*options.FindOneOptions) lungo.ISingleResult {
	return nopResult{}
}

type nopCursor struct{ lungo.ICursor }

func (nopCursor) All(context.Context, any) error { return nil }
func (nopCursor) Next(context.Context) bool      { return false }
func (nopCursor) Err() error                     { return nil }
func (nopCursor) Close(context.Context) error    { return nil }
func (nopCursor) Decode(any) error               { return mongo.ErrNoDocuments }
func (nopResult) Decode(any) error               { return mongo.ErrNoDocuments }
func (nopResult) Err() error                     { return mongo.ErrNoDocuments }
func (nopResult) Raw() (bson.Raw, error)         { return nil, mongo.ErrNoDocuments }
func (nopResult) DecodeBytes() (bson.Raw, error) { return nil, mongo.ErrNoDocuments }

type nopResult struct{}
