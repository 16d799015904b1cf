package replicate_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"

	"github.com/godwit-dev/godwit/mongodb"
)

// wireServer speaks the MongoDB wire protocol (OP_MSG, and OP_QUERY for the
// driver's first hello) on 127.0.0.1 and answers each command with a
// scripted reply. No real mongod can run here: this lets the official
// driver's code (handshake, sessions, transactions, snapshot reads, cursors,
// write concern) run against replies written from the server's
// documentation, and lets a test see the exact commands the driver sent.
type wireServer struct {
	t  testing.TB
	ln net.Listener
	// reply answers a command (its name is the first key); nil means the
	// default reply (see defaultReply).
	reply func(name string, cmd bson.Raw) bson.D
	hello bson.D // replaces the default hello reply's fields when set

	mu    sync.Mutex
	cmds  []bson.Raw
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// newWireServer starts a server that plays a replica-set primary, unless
// hello overrides its hello reply.
func newWireServer(t testing.TB, reply func(name string, cmd bson.Raw) bson.D, hello bson.D) *wireServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireServer{t: t, ln: ln, reply: reply, hello: hello, conns: map[net.Conn]bool{}}
	w.wg.Add(1)
	go w.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		w.mu.Lock()
		for c := range w.conns {
			_ = c.Close()
		}
		w.mu.Unlock()
		w.wg.Wait()
	})
	return w
}

func (w *wireServer) uri() string {
	return "mongodb://" + w.ln.Addr().String() + "/?directConnection=true&retryWrites=false&heartbeatFrequencyMS=60000"
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

func (w *wireServer) accept() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.conns[c] = true
		w.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer c.Close()
			if err := w.serve(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) &&
				!strings.Contains(err.Error(), "connection reset") {
				w.t.Errorf("wire server: %v", err)
			}
		}()
	}
}

func (w *wireServer) serve(c net.Conn) error {
	for {
		var head [4]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return err
		}
		n := int(binary.LittleEndian.Uint32(head[:]))
		if n < 16 || n > 48<<20 {
			return fmt.Errorf("bad message length %d", n)
		}
		msg := make([]byte, n)
		copy(msg, head[:])
		if _, err := io.ReadFull(c, msg[4:]); err != nil {
			return err
		}
		_, reqID, _, op, rem, ok := wiremessage.ReadHeader(msg)
		if !ok {
			return errors.New("bad header")
		}
		var out []byte
		switch op {
		case wiremessage.OpQuery:
			q, err := readQuery(rem)
			if err != nil {
				return err
			}
			out = opReply(reqID, w.answer(q))
		case wiremessage.OpMsg:
			cmd, err := readMsg(rem)
			if err != nil {
				return err
			}
			out = opMsg(reqID, w.answer(cmd))
		default:
			return fmt.Errorf("unexpected opcode %v", op)
		}
		if _, err := c.Write(out); err != nil {
			return err
		}
	}
}

func readQuery(rem []byte) (bson.Raw, error) {
	_, rem, ok := wiremessage.ReadQueryFlags(rem)
	if ok {
		_, rem, ok = wiremessage.ReadQueryFullCollectionName(rem)
	}
	if ok {
		_, rem, ok = wiremessage.ReadQueryNumberToSkip(rem)
	}
	if ok {
		_, rem, ok = wiremessage.ReadQueryNumberToReturn(rem)
	}
	var q bsoncore.Document
	if ok {
		q, _, ok = wiremessage.ReadQueryQuery(rem)
	}
	if !ok {
		return nil, errors.New("bad OP_QUERY")
	}
	return bson.Raw(q), nil
}

// readMsg returns an OP_MSG's body with its document sequences added as
// arrays (as a server sees the command).
func readMsg(rem []byte) (bson.Raw, error) {
	flags, rem, ok := wiremessage.ReadMsgFlags(rem)
	if !ok {
		return nil, errors.New("bad OP_MSG flags")
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		rem = rem[:len(rem)-4]
	}
	var body bson.D
	var seqs []bson.E
	for len(rem) > 0 {
		var st wiremessage.SectionType
		st, rem, ok = wiremessage.ReadMsgSectionType(rem)
		if !ok {
			return nil, errors.New("bad OP_MSG section")
		}
		switch st {
		case wiremessage.SingleDocument:
			var doc bsoncore.Document
			doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok {
				return nil, errors.New("bad OP_MSG body")
			}
			if err := bson.Unmarshal(doc, &body); err != nil {
				return nil, err
			}
		case wiremessage.DocumentSequence:
			var id string
			var docs []bsoncore.Document
			id, docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem)
			if !ok {
				return nil, errors.New("bad OP_MSG document sequence")
			}
			arr := bson.A{}
			for _, d := range docs {
				arr = append(arr, bson.Raw(d))
			}
			seqs = append(seqs, bson.E{Key: id, Value: arr})
		}
	}
	return bson.Marshal(append(body, seqs...))
}

func opMsg(respTo int32, doc bson.D) []byte {
	b, err := bson.Marshal(doc)
	if err != nil {
		panic(err)
	}
	i, out := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), respTo, wiremessage.OpMsg)
	out = wiremessage.AppendMsgFlags(out, 0)
	out = wiremessage.AppendMsgSectionType(out, wiremessage.SingleDocument)
	out = append(out, b...)
	binary.LittleEndian.PutUint32(out[i:], uint32(len(out)))
	return out
}

func opReply(respTo int32, doc bson.D) []byte {
	b, err := bson.Marshal(doc)
	if err != nil {
		panic(err)
	}
	i, out := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), respTo, wiremessage.OpReply)
	out = wiremessage.AppendReplyFlags(out, 0)
	out = wiremessage.AppendReplyCursorID(out, 0)
	out = wiremessage.AppendReplyStartingFrom(out, 0)
	out = wiremessage.AppendReplyNumberReturned(out, 1)
	out = append(out, b...)
	binary.LittleEndian.PutUint32(out[i:], uint32(len(out)))
	return out
}

func (w *wireServer) answer(cmd bson.Raw) bson.D {
	name := cmdName(cmd)
	switch strings.ToLower(name) {
	case "hello", "ismaster":
		if w.hello != nil {
			return w.hello
		}
		addr := w.ln.Addr().String()
		return bson.D{{Key: "isWritablePrimary", Value: true}, {Key: "ismaster", Value: true}, {Key: "helloOk", Value: true},
			{Key: "setName", Value: "rs0"}, {Key: "hosts", Value: bson.A{addr}}, {Key: "primary", Value: addr}, {Key: "me", Value: addr},
			{Key: "maxWireVersion", Value: int32(21)}, {Key: "minWireVersion", Value: int32(0)},
			{Key: "maxBsonObjectSize", Value: int32(16 << 20)}, {Key: "maxMessageSizeBytes", Value: int32(48000000)},
			{Key: "maxWriteBatchSize", Value: int32(100000)}, {Key: "localTime", Value: time.Now()},
			{Key: "logicalSessionTimeoutMinutes", Value: int32(30)}, {Key: "connectionId", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	}
	w.mu.Lock()
	w.cmds = append(w.cmds, append(bson.Raw(nil), cmd...))
	w.mu.Unlock()
	if w.reply != nil {
		if r := w.reply(name, cmd); r != nil {
			return r
		}
	}
	return defaultReply(name, cmd)
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
