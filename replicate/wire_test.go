package replicate_test

import (
	"context"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/internal/wiretest"
	"github.com/godwit-dev/godwit/mongodb"
)

// wireServer answers each command with a scripted reply over the MongoDB
// wire protocol (internal/wiretest), so the official driver's code
// (handshake, sessions, transactions, snapshot reads, cursors, write
// concern) runs against replies written from the server's documentation,
// and a test sees the exact commands the driver sent. No real mongod can
// run here.
type wireServer struct {
	srv *wiretest.Server
	// reply answers a command (its name is the first key); nil means the
	// default reply (see defaultReply).
	reply func(name string, cmd bson.Raw) bson.D

	mu   sync.Mutex
	cmds []bson.Raw
}

// newWireServer starts a server that plays a replica-set primary, unless
// hello replaces its hello reply.
func newWireServer(t testing.TB, reply func(name string, cmd bson.Raw) bson.D, hello bson.D) *wireServer {
	t.Helper()
	w := &wireServer{reply: reply}
	var opts wiretest.Options
	if hello != nil {
		opts.Hello = raw(t, hello)
	}
	w.srv = wiretest.StartWith(t, func(_ context.Context, req wiretest.Request) bson.Raw {
		w.mu.Lock()
		w.cmds = append(w.cmds, append(bson.Raw(nil), req.Body...))
		w.mu.Unlock()
		var r bson.D
		if w.reply != nil {
			r = w.reply(req.Command, req.Body)
		}
		if r == nil {
			r = defaultReply(req.Command, req.Body)
		}
		b, err := bson.Marshal(r)
		if err != nil {
			return wiretest.Error(1, "InternalError", err.Error())
		}
		return b
	}, opts)
	return w
}

func (w *wireServer) uri() string {
	return "mongodb://" + w.srv.Addr() + "/?directConnection=true&retryWrites=false&heartbeatFrequencyMS=60000"
}

// connect opens the server through godwit's real-deployment path (the
// official driver).
func (w *wireServer) connect(t testing.TB) *mongodb.Conn {
	t.Helper()
	c, err := mongodb.Open(context.Background(), w.uri(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// commands returns the commands received with the given name, in order.
func (w *wireServer) commands(name string) []bson.Raw {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []bson.Raw
	for _, c := range w.cmds {
		if cmdName(c) == name {
			out = append(out, c)
		}
	}
	return out
}

// reset forgets the commands received so far.
func (w *wireServer) reset() {
	w.mu.Lock()
	w.cmds = nil
	w.mu.Unlock()
}

func cmdName(c bson.Raw) string {
	elems, err := c.Elements()
	if err != nil || len(elems) == 0 {
		return ""
	}
	return elems[0].Key()
}

// defaultReply answers like a server with empty collections that accepts
// every write.
func defaultReply(name string, cmd bson.Raw) bson.D {
	db, _ := cmd.Lookup("$db").StringValueOK()
	switch name {
	case "find", "aggregate", "listIndexes", "listCollections":
		coll, _ := cmd.Lookup(name).StringValueOK()
		return cursorReply(db+"."+coll, 0, nil, nil)
	case "listDatabases":
		return bson.D{{Key: "databases", Value: bson.A{}}, {Key: "ok", Value: 1.0}}
	case "count":
		return bson.D{{Key: "n", Value: int32(0)}, {Key: "ok", Value: 1.0}}
	case "insert", "delete":
		arr := name + "s"
		if name == "insert" {
			arr = "documents"
		}
		docs, _ := cmd.Lookup(arr).Array().Values()
		return bson.D{{Key: "n", Value: int32(len(docs))}, {Key: "ok", Value: 1.0}}
	case "update":
		ups, _ := cmd.Lookup("updates").Array().Values()
		return bson.D{{Key: "n", Value: int32(len(ups))}, {Key: "nModified", Value: int32(len(ups))}, {Key: "ok", Value: 1.0}}
	}
	return bson.D{{Key: "ok", Value: 1.0}}
}

// cursorReply is a find/aggregate/getMore reply. at, when set, is the
// snapshot's cluster time (snapshot reads report it in the cursor).
func cursorReply(ns string, id int64, docs []bson.Raw, at *primitive.Timestamp) bson.D {
	batch := bson.A{}
	for _, d := range docs {
		batch = append(batch, d)
	}
	key := "firstBatch"
	cur := bson.D{{Key: "id", Value: id}, {Key: "ns", Value: ns}, {Key: key, Value: batch}}
	if at != nil {
		cur = append(cur, bson.E{Key: "atClusterTime", Value: *at})
	}
	return bson.D{{Key: "cursor", Value: cur}, {Key: "ok", Value: 1.0}}
}

// nextBatchReply is a getMore reply.
func nextBatchReply(ns string, id int64, docs []bson.Raw) bson.D {
	batch := bson.A{}
	for _, d := range docs {
		batch = append(batch, d)
	}
	return bson.D{{Key: "cursor", Value: bson.D{{Key: "id", Value: id}, {Key: "ns", Value: ns}, {Key: "nextBatch", Value: batch}}}, {Key: "ok", Value: 1.0}}
}

// errorReply is a command error as a server sends it.
func errorReply(code int32, codeName, msg string) bson.D {
	return bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: msg}, {Key: "code", Value: code}, {Key: "codeName", Value: codeName}}
}

func raw(t testing.TB, d bson.D) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
