// Package wiretest serves the MongoDB wire protocol on 127.0.0.1 with
// replies a test scripts, so the official driver's own code (handshake,
// server selection, cursors, change-stream resume) runs against server
// answers that no server here can produce: a step-down, a server that has
// no change streams, a split event, an error code of a newer version.
//
// # Basics
//
// Start listens and answers the handshake itself, as the primary of a
// one-member replica set (hello/isMaster over OP_QUERY and OP_MSG), plus
// ping, buildInfo and endSessions. Every other command goes to the Handler.
// Connect with URI, which names the server directly.
//
// # Caveats
//
// This is a test helper, not a server: no authentication, compression,
// checksums or exhaust replies; one command at a time per connection. It
// answers what the handler says and checks nothing, so a test asserts on
// what the driver sent (the Request) rather than trusting the script.
package wiretest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// Request is one command the driver sent.
type Request struct {
	// Command is the command's name: the body's first key.
	Command string
	// DB is the database the command runs in ($db).
	DB string
	// Body is the whole command document.
	Body bson.Raw
	// Conn numbers the connection the command came on (from 1).
	Conn int
}

// Handler answers one command with a reply document (see OK and Error).
// A nil reply closes the connection without answering: the driver sees a
// network error. A handler may block until ctx ends (the server closes),
// as a server holds a getMore that has nothing to return.
type Handler func(ctx context.Context, req Request) bson.Raw

// Options change what the server answers by itself.
type Options struct {
	// Hello, when set, is the reply to hello and isMaster instead of a
	// replica-set primary's (a mongos's, say).
	Hello bson.Raw
}

// Server is a scripted wire-protocol server.
type Server struct {
	ln      net.Listener
	handler Handler
	opts    Options
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
	next  int
}

// Start serves h on a free port of 127.0.0.1 until the test ends.
func Start(t testing.TB, h Handler) *Server { return StartWith(t, h, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, h Handler, opts Options) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, handler: h, opts: opts, ctx: ctx, cancel: cancel, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URI is a connection string that names the server directly.
func (s *Server) URI() string {
	return "mongodb://" + s.Addr() + "/?directConnection=true&serverSelectionTimeoutMS=60000"
}

// Close stops the server: handlers' contexts end, connections close, and
// Close waits for every goroutine it started.
func (s *Server) Close() {
	s.cancel()
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.next++
		id := s.next
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c, id)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// Wire-protocol op codes.
const (
	opReply int32 = 1
	opQuery int32 = 2004
	opMsg   int32 = 2013
)

func (s *Server) serve(c net.Conn, id int) {
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		length := int32(binary.LittleEndian.Uint32(hdr[0:]))
		reqID := int32(binary.LittleEndian.Uint32(hdr[4:]))
		op := int32(binary.LittleEndian.Uint32(hdr[12:]))
		if length < 16 || length > 48<<20 {
			return
		}
		body := make([]byte, length-16)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		var (
			cmd bson.Raw
			err error
		)
		switch op {
		case opQuery:
			cmd, err = parseQuery(body)
		case opMsg:
			cmd, err = parseMsg(body)
		default:
			err = fmt.Errorf("op code %d not served", op)
		}
		if err != nil {
			return
		}
		reply := s.answer(cmd, id)
		if reply == nil {
			return // a network error for the driver
		}
		var out []byte
		if op == opQuery {
			out = encodeReply(reqID, reply)
		} else {
			out = encodeMsg(reqID, reply)
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func (s *Server) answer(cmd bson.Raw, conn int) bson.Raw {
	elems, err := cmd.Elements()
	if err != nil || len(elems) == 0 {
		return Error(9, "FailedToParse", "empty command")
	}
	req := Request{Command: elems[0].Key(), Body: cmd, Conn: conn}
	req.DB, _ = cmd.Lookup("$db").StringValueOK()
	switch req.Command {
	case "hello", "isMaster", "ismaster":
		if s.opts.Hello != nil {
			return s.opts.Hello
		}
		return s.hello(conn)
	case "ping", "endSessions":
		return OK()
	case "buildInfo", "buildinfo":
		return OK(bson.E{Key: "version", Value: "7.0.0"}, bson.E{Key: "versionArray", Value: bson.A{7, 0, 0, 0}})
	}
	return s.handler(s.ctx, req)
}

func (s *Server) hello(conn int) bson.Raw {
	me := s.Addr()
	return OK(
		bson.E{Key: "helloOk", Value: true},
		bson.E{Key: "ismaster", Value: true},
		bson.E{Key: "isWritablePrimary", Value: true},
		bson.E{Key: "setName", Value: "rs0"},
		bson.E{Key: "setVersion", Value: 1},
		bson.E{Key: "electionId", Value: primitive.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}},
		bson.E{Key: "hosts", Value: bson.A{me}},
		bson.E{Key: "primary", Value: me},
		bson.E{Key: "me", Value: me},
		bson.E{Key: "maxBsonObjectSize", Value: 16 << 20},
		bson.E{Key: "maxMessageSizeBytes", Value: 48000000},
		bson.E{Key: "maxWriteBatchSize", Value: 100000},
		bson.E{Key: "localTime", Value: primitive.NewDateTimeFromTime(time.Now())},
		bson.E{Key: "logicalSessionTimeoutMinutes", Value: 30},
		bson.E{Key: "connectionId", Value: conn},
		bson.E{Key: "minWireVersion", Value: 0},
		bson.E{Key: "maxWireVersion", Value: 21}, // MongoDB 7.0
		bson.E{Key: "readOnly", Value: false},
	)
}

// OK is a successful reply: {ok: 1} after fields.
func OK(fields ...bson.E) bson.Raw {
	return mustMarshal(append(bson.D(fields), bson.E{Key: "ok", Value: 1.0}))
}

// Error is a server error reply, as MongoDB sends it.
func Error(code int32, name, msg string, labels ...string) bson.Raw {
	d := bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: msg}, {Key: "code", Value: code}, {Key: "codeName", Value: name}}
	if len(labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: labels})
	}
	return mustMarshal(d)
}

func mustMarshal(v any) bson.Raw {
	b, err := bson.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

var errMalformed = errors.New("malformed message")

// parseQuery reads an OP_QUERY (the driver's first handshake message).
func parseQuery(b []byte) (bson.Raw, error) {
	if len(b) < 4 {
		return nil, errMalformed
	}
	b = b[4:] // flags
	i := 0
	for i < len(b) && b[i] != 0 {
		i++
	}
	if i+9 > len(b) {
		return nil, errMalformed
	}
	b = b[i+1+8:] // collection name, skip, return
	return readDoc(b)
}

// parseMsg reads an OP_MSG: its body section, with every document sequence
// (the driver sends a write's documents as one) added to it as an array
// field, which is what the server makes of them too.
func parseMsg(b []byte) (bson.Raw, error) {
	flags, rem, ok := wiremessage.ReadMsgFlags(b)
	if !ok {
		return nil, errMalformed
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		if len(rem) < 4 {
			return nil, errMalformed
		}
		rem = rem[:len(rem)-4]
	}
	var raw bsoncore.Document
	var seqs []bson.E
	for len(rem) > 0 {
		var st wiremessage.SectionType
		if st, rem, ok = wiremessage.ReadMsgSectionType(rem); !ok {
			return nil, errMalformed
		}
		switch st {
		case wiremessage.SingleDocument:
			if raw, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem); !ok {
				return nil, errMalformed
			}
		case wiremessage.DocumentSequence:
			var id string
			var docs []bsoncore.Document
			if id, docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem); !ok {
				return nil, errMalformed
			}
			arr := bson.A{}
			for _, d := range docs {
				arr = append(arr, bson.Raw(d))
			}
			seqs = append(seqs, bson.E{Key: id, Value: arr})
		default:
			return nil, errMalformed
		}
	}
	if raw == nil || raw.Validate() != nil {
		return nil, errMalformed
	}
	if len(seqs) == 0 {
		return bson.Raw(raw), nil
	}
	var body bson.D
	if err := bson.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	return bson.Marshal(append(body, seqs...))
}

func readDoc(b []byte) (bson.Raw, error) {
	if len(b) < 5 {
		return nil, errMalformed
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < 5 || n > len(b) {
		return nil, errMalformed
	}
	doc := bson.Raw(b[:n])
	return doc, doc.Validate()
}

func header(length int, respTo, op int32) []byte {
	h := make([]byte, 16, length)
	binary.LittleEndian.PutUint32(h[0:], uint32(length))
	binary.LittleEndian.PutUint32(h[4:], 0)
	binary.LittleEndian.PutUint32(h[8:], uint32(respTo))
	binary.LittleEndian.PutUint32(h[12:], uint32(op))
	return h
}

func encodeMsg(respTo int32, doc bson.Raw) []byte {
	out := header(16+4+1+len(doc), respTo, opMsg)
	out = binary.LittleEndian.AppendUint32(out, 0) // flags
	out = append(out, 0)                           // section kind: body
	return append(out, doc...)
}

func encodeReply(respTo int32, doc bson.Raw) []byte {
	out := header(16+20+len(doc), respTo, opReply)
	out = binary.LittleEndian.AppendUint32(out, 0) // response flags
	out = binary.LittleEndian.AppendUint64(out, 0) // cursor id
	out = binary.LittleEndian.AppendUint32(out, 0) // starting from
	out = binary.LittleEndian.AppendUint32(out, 1) // number returned
	return append(out, doc...)
}
