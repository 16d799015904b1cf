package capture_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/internal/cputime"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// BenchmarkCapture prints capture's events/s into a durable outbox, side by
// side:
//
//	go test -run '^$' -bench Capture -benchtime 100000x ./capture/
//
// synthetic is capture's own cost: a change stream replays recorded
// real-format insert events (change/testdata), each about 1 KiB, as fast as
// capture asks; nothing else runs. devdb-driver is end to end: the same
// number of 1 KiB inserts, written to an embedded engine beforehand, read by
// the official driver's change stream from a devdb serving that engine over
// the wire protocol.
//
// cpu-ns/op is the process's CPU time per event (for devdb-driver it
// includes devdb and the engine serving the stream). On a shared machine
// events/s also measures the wait for a CPU after each outbox fsync;
// cpu-ns/op does not.
func BenchmarkCapture(b *testing.B) {
	b.Run("synthetic", func(b *testing.B) {
		events := syntheticEvents(b, b.N)
		conn := &mongodb.Conn{Client: syntheticClient{stream: &syntheticStream{events: events}}, Redacted: "synthetic"}
		runCapture(b, conn, b.N, nil)
	})
	b.Run("devdb-driver", func(b *testing.B) {
		ctx := context.Background()
		oplogSize := mongodb.EmbeddedOplogSize
		mongodb.EmbeddedOplogSize = b.N + 100
		engine, err := mongodb.Open(ctx, "lungo:memory", "")
		mongodb.EmbeddedOplogSize = oplogSize
		if err != nil {
			b.Fatal(err)
		}
		defer engine.Close(ctx)
		writeDocs(b, engine.Client, b.N)
		// Start at the first write, as a source that was running then.
		first := engine.Engine.Catalog().Namespaces[lungo.Oplog].Documents.List()[0]
		start, ok := bsonkit.Get(first, "clusterTime").(primitive.Timestamp)
		if !ok {
			b.Fatalf("oplog entry without clusterTime: %v", *first)
		}
		log := zerolog.Nop()
		srv, err := devdb.Open(engine.Engine, devdb.Config{Addr: "127.0.0.1:0", Log: &log})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close(ctx)
		conn, err := mongodb.Open(ctx, srv.URI(), "")
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		runCapture(b, conn, b.N, &start)
	})
}

// runCapture times one source from its start until n events are in the
// outbox.
func runCapture(b *testing.B, conn *mongodb.Conn, n int, at *primitive.Timestamp) {
	ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close(context.Background())
	if at != nil {
		if err := ob.UpdateSource("src", func(st *outbox.SourceState) {
			st.StartAt = uint64(at.T)<<32 | uint64(at.I)
		}); err != nil {
			b.Fatal(err)
		}
	}
	src := capture.New(capture.Config{ID: "src"}, conn, ob, nil, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Waiting for events ends when capture stops early.
	waitCtx, stopWaiting := context.WithCancel(context.Background())
	defer stopWaiting()
	b.ResetTimer()
	cpu0, err := cputime.Process()
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		done <- src.Run(ctx)
		stopWaiting()
	}()
	for seq := ob.LastSeq(); seq < uint64(n); seq = ob.LastSeq() {
		if err := ob.Wait(waitCtx, seq); err != nil {
			b.Fatalf("capture stopped after %d of %d events: %v (%s)", ob.LastSeq(), n, <-done, src.Status().Reason)
		}
	}
	b.StopTimer()
	cpu1, err := cputime.Process()
	if err != nil {
		b.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if st := src.Status(); st.Captured != uint64(n) {
		b.Fatalf("captured %d events, want %d", st.Captured, n)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(n), "cpu-ns/op")
}

// pad makes a 5-field document about 1 KiB.
var pad = strings.Repeat("godwit ", 130)

func writeDocs(b *testing.B, client lungo.IClient, n int) {
	coll := client.Database("shop").Collection("orders")
	for i := 0; i < n; i += 1000 {
		docs := make([]any, 0, 1000)
		for j := i; j < min(n, i+1000); j++ {
			docs = append(docs, bson.D{{Key: "_id", Value: int64(j)}, {Key: "sku", Value: fmt.Sprintf("A-%d", j)},
				{Key: "qty", Value: int32(j % 7)}, {Key: "status", Value: "new"}, {Key: "note", Value: pad}})
		}
		if _, err := coll.InsertMany(context.Background(), docs); err != nil {
			b.Fatal(err)
		}
	}
}

// syntheticEvents turns the recorded insert event into n events with their
// own resume tokens, cluster times and documents, each about 1 KiB.
func syntheticEvents(b *testing.B, n int) []bson.Raw {
	var base bson.D
	if err := bson.Unmarshal(changetest.Event("insert"), &base); err != nil {
		b.Fatal(err)
	}
	out := make([]bson.Raw, n)
	for i := range out {
		ev := make(bson.D, 0, len(base))
		for _, e := range base {
			switch e.Key {
			case "_id":
				e.Value = bson.D{{Key: "_data", Value: fmt.Sprintf("8265A1B2C3%08X2B022C0100296E5A1004A1B2C3D4E5F60718293A4B5C6D7E8F46645F69640064%016X0004", i/1000, i)}}
			case "clusterTime":
				e.Value = primitive.Timestamp{T: 1705000000 + uint32(i/1000), I: uint32(i%1000 + 1)}
			case "fullDocument":
				e.Value = bson.D{{Key: "_id", Value: int64(i)}, {Key: "sku", Value: fmt.Sprintf("A-%d", i)},
					{Key: "qty", Value: int32(i % 7)}, {Key: "status", Value: "new"}, {Key: "note", Value: pad}}
			case "documentKey":
				e.Value = bson.D{{Key: "_id", Value: int64(i)}}
			}
			ev = append(ev, e)
		}
		raw, err := bson.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = raw
	}
	return out
}

// syntheticClient serves one syntheticStream. It is a hand-written stand-in
// on purpose: the synthetic benchmark measures capture without any server
// or driver. It answers only what capture calls on a real deployment (the
// privilege check and Watch); anything else panics.
type syntheticClient struct {
	lungo.IClient
	stream *syntheticStream
}

func (c syntheticClient) Watch(context.Context, any, ...*options.ChangeStreamOptions) (lungo.IChangeStream, error) {
	return c.stream, nil
}

func (c syntheticClient) Database(string, ...*options.DatabaseOptions) lungo.IDatabase {
	return syntheticDB{}
}

type syntheticDB struct{ lungo.IDatabase }

// RunCommand answers the privilege check: the server cannot tell.
func (syntheticDB) RunCommand(context.Context, any, ...*options.RunCmdOptions) lungo.ISingleResult {
	return mongo.NewSingleResultFromDocument(bson.D{}, errors.New("synthetic stream: no server to ask"), nil)
}

// syntheticStream is a change stream whose getMores return everything left;
// once it is consumed, TryNext waits for ctx like an endless empty getMore.
type syntheticStream struct {
	events []bson.Raw
	i      int // index of the current event + 1
}

func (s *syntheticStream) Next(ctx context.Context) bool { return s.TryNext(ctx) }

func (s *syntheticStream) TryNext(ctx context.Context) bool {
	if s.i < len(s.events) {
		s.i++
		return true
	}
	<-ctx.Done()
	return false
}

func (s *syntheticStream) Decode(v any) error {
	if s.i == 0 {
		return errors.New("no current event")
	}
	if raw, ok := v.(*bson.Raw); ok {
		*raw = s.events[s.i-1]
		return nil
	}
	return bson.Unmarshal(s.events[s.i-1], v)
}

func (s *syntheticStream) ResumeToken() bson.Raw {
	if s.i == 0 {
		return nil
	}
	return s.events[s.i-1].Lookup("_id").Document()
}

func (s *syntheticStream) RemainingBatchLength() int   { return len(s.events) - s.i }
func (s *syntheticStream) ID() int64                   { return 1 }
func (s *syntheticStream) Err() error                  { return nil }
func (s *syntheticStream) Close(context.Context) error { return nil }
func (s *syntheticStream) SetBatchSize(int32)          {}
