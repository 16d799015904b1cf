package devdb

import (
	"context"
	"errors"
	"testing"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// FuzzDecodeMessage feeds arbitrary bytes to the decoder of wire messages
// read from sockets: it must return a message or ErrBadMessage, never
// panic, and a decoded command must be valid BSON.
func FuzzDecodeMessage(f *testing.F) {
	cmd, _ := bson.Marshal(bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	doc, _ := bson.Marshal(bson.D{{Key: "_id", Value: 1}})
	msg := appendMsgReply(nil, 1, cmd)
	f.Add(msg)
	// OP_MSG with a document sequence.
	idx, seq := wiremessage.AppendHeaderStart(nil, 2, 0, wiremessage.OpMsg)
	seq = wiremessage.AppendMsgFlags(seq, 0)
	seq = wiremessage.AppendMsgSectionType(seq, wiremessage.SingleDocument)
	seq = append(seq, cmd...)
	seq = wiremessage.AppendMsgSectionType(seq, wiremessage.DocumentSequence)
	sidx, seq := bsoncore.ReserveLength(seq)
	seq = append(seq, "documents\x00"...)
	seq = append(seq, doc...)
	seq = bsoncore.UpdateLength(seq, sidx, int32(len(seq[sidx:])))
	seq = bsoncore.UpdateLength(seq, idx, int32(len(seq[idx:])))
	f.Add(seq)
	// OP_QUERY hello.
	qidx, q := wiremessage.AppendHeaderStart(nil, 3, 0, wiremessage.OpQuery)
	q = wiremessage.AppendQueryFlags(q, 0)
	q = wiremessage.AppendQueryFullCollectionName(q, "admin.$cmd")
	q = wiremessage.AppendQueryNumberToSkip(q, 0)
	q = wiremessage.AppendQueryNumberToReturn(q, -1)
	q = append(q, cmd...)
	q = bsoncore.UpdateLength(q, qidx, int32(len(q[qidx:])))
	f.Add(q)
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v is not ErrBadMessage", err)
			}
			return
		}
		if err := m.command.Validate(); err != nil {
			t.Fatalf("decoded an invalid command: %v", err)
		}
	})
}

// TestServer_HandlerPanic checks that a panic while serving a command
// becomes an error reply and the connection keeps serving. No command
// known to panic exists, so the test registers one.
func TestServer_HandlerPanic(t *testing.T) {
	handlers["devdbTestPanic"] = func(*Server, *request) (bson.D, error) { panic("boom") }
	t.Cleanup(func() { delete(handlers, "devdbTestPanic") })
	_, engine, err := lungo.Open(context.Background(), lungo.Options{Store: lungo.NewMemoryStore(), ExpireErrors: func(error) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	srv, err := Open(engine, Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	ctx := context.Background()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()+"&maxPoolSize=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	err = client.Database("admin").RunCommand(ctx, bson.D{{Key: "devdbTestPanic", Value: 1}}).Err()
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != codeInternalError {
		t.Fatalf("panicking command = %v, want an InternalError reply", err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("ping on the same connection after the panic: %v", err)
	}
}
