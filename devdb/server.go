package devdb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// Config configures a Server. The zero value (plus Addr) is usable.
type Config struct {
	// Addr is the TCP address to listen on, for example 127.0.0.1:27017
	// (port 0 picks a free port). Required.
	Addr string
	// Advertise is the host:port put in hello's hosts/primary/me and in
	// URI. Default: the listener's address, with an unspecified IP
	// (0.0.0.0, ::) replaced by 127.0.0.1.
	Advertise string
	// ReplicaSet is the replica set name devdb presents. Default "devdb".
	ReplicaSet string
	// TransactionLifetime aborts a transaction that is still open this long
	// after its last command (the real server's
	// transactionLifetimeLimitSeconds). A transaction holds the engine's
	// write lock, so an abandoned one must not hold it forever. Default 60s.
	TransactionLifetime time.Duration
	// CursorTimeout closes cursors idle this long. Default 10 minutes.
	CursorTimeout time.Duration
	// Log receives connection and panic reports. Default: discard.
	Log *zerolog.Logger
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("devdb: Addr is empty: give a listen address such as 127.0.0.1:27017")
	}
	if c.TransactionLifetime < 0 || c.CursorTimeout < 0 {
		return errors.New("devdb: TransactionLifetime and CursorTimeout must not be negative")
	}
	return nil
}

func (c *Config) defaults() {
	if c.ReplicaSet == "" {
		c.ReplicaSet = "devdb"
	}
	if c.TransactionLifetime == 0 {
		c.TransactionLifetime = 60 * time.Second
	}
	if c.CursorTimeout == 0 {
		c.CursorTimeout = 10 * time.Minute
	}
	if c.Log == nil {
		l := zerolog.Nop()
		c.Log = &l
	}
}

// sessionTimeout forgets sessions unused this long (hello's
// logicalSessionTimeoutMinutes).
const sessionTimeout = 30 * time.Minute

// Server serves one embedded engine over the MongoDB wire protocol.
type Server struct {
	cfg    Config
	engine *lungo.Engine
	log    zerolog.Logger
	ln     net.Listener
	addr   string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
	connID  atomic.Int32

	cursorsMu sync.Mutex
	cursors   map[int64]*cursor
	cursorID  atomic.Int64

	sessionsMu sync.Mutex
	sessions   map[string]*session

	wake wakeup
}

// Open validates cfg, listens on cfg.Addr and starts serving engine in the
// background until Close. The engine stays owned by the caller: Close does
// not close it, and other users of the engine in this process (a lungo
// client, godwit's embedded path) see devdb's writes and vice versa.
func Open(engine *lungo.Engine, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if engine == nil {
		return nil, errors.New("devdb: no engine")
	}
	cfg.defaults()
	registerOperators()
	if err := ensureOplog(engine); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devdb: listen on %s: %w (is another server using the port? pick one with --listen)", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, engine: engine, log: *cfg.Log, ln: ln,
		conns: map[net.Conn]struct{}{}, cursors: map[int64]*cursor{}, sessions: map[string]*session{}}
	s.wake.ch = make(chan struct{})
	s.addr = cfg.Advertise
	if s.addr == "" {
		tcp := ln.Addr().(*net.TCPAddr)
		host := tcp.IP.String()
		if tcp.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		s.addr = net.JoinHostPort(host, fmt.Sprint(tcp.Port))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(3)
	go s.acceptLoop()
	go s.watchCommits()
	go s.reap()
	return s, nil
}

// Addr is the advertised host:port.
func (s *Server) Addr() string { return s.addr }

// URI is the connection string for drivers, mongosh and godwit.
func (s *Server) URI() string {
	return "mongodb://" + s.addr + "/?replicaSet=" + s.cfg.ReplicaSet
}

// Close stops accepting, closes every connection, aborts open transactions
// and waits for the server's goroutines. It does not close the engine.
func (s *Server) Close(ctx context.Context) error {
	s.cancel()
	err := s.ln.Close()
	s.connsMu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.connsMu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.sessionsMu.Lock()
	for _, sess := range s.sessions {
		sess.mu.Lock()
		sess.abort(s.engine)
		sess.mu.Unlock()
	}
	s.sessionsMu.Unlock()
	s.cursorsMu.Lock()
	s.cursors = map[int64]*cursor{}
	s.cursorsMu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error().Err(err).Msg("devdb: accept failed; no new connections are served")
			}
			return
		}
		s.connsMu.Lock()
		if s.ctx.Err() != nil {
			s.connsMu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.connsMu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.connsMu.Lock()
			delete(s.conns, c)
			s.connsMu.Unlock()
			_ = c.Close()
		}()
	}
}

// conn is the state of one client connection.
type conn struct {
	id     int32
	remote string
}

func (s *Server) serveConn(nc net.Conn) {
	c := &conn{id: s.connID.Add(1), remote: nc.RemoteAddr().String()}
	r := bufio.NewReaderSize(nc, 64*1024)
	w := bufio.NewWriterSize(nc, 64*1024)
	for {
		wm, err := readMessage(r, nil)
		if err != nil {
			if errors.Is(err, ErrBadMessage) {
				s.log.Warn().Int32("conn", c.id).Str("remote", c.remote).Err(err).Msg("devdb: closing connection after bad bytes")
			}
			return
		}
		m, err := safeDecode(wm)
		if err != nil {
			s.log.Warn().Int32("conn", c.id).Str("remote", c.remote).Err(err).Msg("devdb: closing connection after bad bytes")
			return
		}
		reply := s.handle(c, m)
		if m.moreToCome {
			continue
		}
		var out []byte
		if m.opcode == wiremessage.OpQuery {
			out = appendQueryReply(nil, m.requestID, reply)
		} else {
			out = appendMsgReply(nil, m.requestID, reply)
		}
		if _, err := w.Write(out); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// safeDecode decodes a message; a panic in a parser (devdb's or the
// driver's wire helpers) is a bad message, never a crashed server.
func safeDecode(wm []byte) (m *message, err error) {
	defer func() {
		if p := recover(); p != nil {
			m, err = nil, fmt.Errorf("%w: the message broke the decoder: %v", ErrBadMessage, p)
		}
	}()
	return decodeMessage(wm)
}

// request is one command being served.
type request struct {
	conn *conn
	name string
	db   string
	cmd  bson.D
	// txn is the client transaction the command runs in (nil outside one).
	txn *lungo.Transaction
	// atClusterTime is set by a snapshot read (readConcern level snapshot).
	atClusterTime *primitive.Timestamp
}

// handle runs one command and returns the reply document. A panic in a
// handler becomes an InternalError reply; the connection stays open.
func (s *Server) handle(c *conn, m *message) (reply []byte) {
	var name string
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Int32("conn", c.id).Str("command", name).Interface("panic", p).Str("stack", string(debug.Stack())).Msg("devdb: command panicked; answered with an error")
			reply, _ = bson.Marshal(errorf(codeInternalError, "devdb: command %q failed inside the engine: %v", name, p).reply())
		}
	}()
	var cmd bson.D
	if err := bson.Unmarshal(m.command, &cmd); err != nil || len(cmd) == 0 {
		reply, _ = bson.Marshal(errorf(codeFailedToParse, "empty or unreadable command document").reply())
		return reply
	}
	name = cmd[0].Key
	r := &request{conn: c, name: name, cmd: cmd, db: m.db}
	if db, ok := lookup(cmd, "$db").(string); ok {
		r.db = db
	}
	out, err := s.runInSession(r)
	var d bson.D
	if err != nil {
		var ce *cmdError
		if !errors.As(err, &ce) {
			ce = errorf(codeInternalError, "%v", err)
		}
		d = ce.reply()
	} else {
		if r.atClusterTime != nil {
			out = withAtClusterTime(out, *r.atClusterTime)
		}
		d = append(out, bson.E{Key: "ok", Value: 1.0})
	}
	ts := s.operationTime()
	d = append(d, bson.E{Key: "operationTime", Value: ts},
		bson.E{Key: "$clusterTime", Value: bson.D{{Key: "clusterTime", Value: ts}, {Key: "signature", Value: bson.D{
			{Key: "hash", Value: primitive.Binary{Data: make([]byte, 20)}}, {Key: "keyId", Value: int64(0)}}}}})
	reply, err = bson.Marshal(d)
	if err != nil {
		reply, _ = bson.Marshal(errorf(codeInternalError, "devdb: encoding the reply to %q: %v", name, err).reply())
	}
	return reply
}

// operationTime is the cluster time of the newest oplog entry.
func (s *Server) operationTime() primitive.Timestamp {
	list := s.engine.Catalog().Namespaces[lungo.Oplog].Documents.List()
	if len(list) == 0 {
		return bsonkit.Now()
	}
	ts, _ := bsonkit.Get(list[len(list)-1], "clusterTime").(primitive.Timestamp)
	return ts
}

// wakeup wakes change-stream getMores waiting for new oplog entries.
type wakeup struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next commit. Take it before looking
// at the oplog, so a commit in between is not missed.
func (w *wakeup) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *wakeup) broadcast() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.ch)
	w.ch = make(chan struct{})
}

// watchCommits follows the engine's oplog with one lungo stream and wakes
// waiting change-stream cursors on every new entry, whoever wrote it (devdb
// or another user of the engine in this process).
func (s *Server) watchCommits() {
	defer s.wg.Done()
	for s.ctx.Err() == nil {
		stream, err := s.engine.Watch(lungo.Handle{}, nil, nil, nil, nil)
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, lungo.ErrEngineClosed) {
				s.log.Error().Err(err).Msg("devdb: cannot follow the oplog; change streams wake only on their timeout")
			}
			return
		}
		for stream.Next(s.ctx) {
			s.wake.broadcast()
		}
		_ = stream.Close(context.Background())
		if errors.Is(stream.Err(), lungo.ErrLostOplogPosition) {
			s.wake.broadcast()
			continue // fell behind a burst of writes: follow from now
		}
		if s.ctx.Err() == nil && stream.Err() == nil {
			return // engine closed
		}
	}
}

// reap aborts transactions past their lifetime and closes idle cursors.
func (s *Server) reap() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			s.sessionsMu.Lock()
			var open []*session
			for id, sess := range s.sessions {
				if sess.mu.TryLock() {
					// Sessions expire like a real server's
					// (logicalSessionTimeoutMinutes).
					if sess.txn == nil && now.Sub(sess.lastUse) > sessionTimeout {
						delete(s.sessions, id)
					}
					sess.mu.Unlock()
				}
				open = append(open, sess)
			}
			s.sessionsMu.Unlock()
			for _, sess := range open {
				if !sess.mu.TryLock() {
					continue // a command is running in it
				}
				if sess.txn != nil && now.Sub(sess.lastUse) > s.cfg.TransactionLifetime {
					s.log.Warn().Int64("txnNumber", sess.txnNumber).Msg("devdb: aborted a transaction open longer than its lifetime")
					sess.abort(s.engine)
				}
				sess.mu.Unlock()
			}
			s.cursorsMu.Lock()
			for id, c := range s.cursors {
				if now.Sub(c.lastUse()) > s.cfg.CursorTimeout {
					delete(s.cursors, id)
				}
			}
			s.cursorsMu.Unlock()
		}
	}
}

// ensureOplog writes one entry into config.devdb when the oplog is empty,
// so every resume token devdb hands out names a position the oplog knows
// (an empty oplog gives no way to tell "nothing happened" from "history
// lost"). The config database is never part of a change stream.
func ensureOplog(engine *lungo.Engine) error {
	if engine.Catalog().Namespaces[lungo.Oplog].Documents.Len() > 0 {
		return nil
	}
	txn, err := engine.Begin(context.Background(), true)
	if err != nil {
		return fmt.Errorf("devdb: start the oplog: %w", err)
	}
	defer engine.Abort(txn)
	doc := bsonkit.MustConvert(bson.D{{Key: "_id", Value: "devdb"}, {Key: "started", Value: time.Now().UTC()}})
	if _, err := txn.Replace(lungo.Handle{"config", "devdb"}, bsonkit.MustConvert(bson.D{{Key: "_id", Value: "devdb"}}), nil, doc, true); err != nil {
		return fmt.Errorf("devdb: start the oplog: %w", err)
	}
	if err := engine.Commit(txn); err != nil {
		return fmt.Errorf("devdb: start the oplog: %w", err)
	}
	return nil
}

// lookup returns the value of key in d (nil when absent).
func lookup(d bson.D, key string) any {
	for _, e := range d {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case float64:
		return int64(n), n == float64(int64(n))
	}
	return 0, false
}

func asBool(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case nil:
		return false
	}
	n, ok := asInt(v)
	return ok && n != 0
}

func docField(d bson.D, key string) (bson.D, error) {
	switch v := lookup(d, key).(type) {
	case nil:
		return nil, nil
	case bson.D:
		return v, nil
	default:
		return nil, errorf(codeFailedToParse, "field %q must be a document", key)
	}
}

// collName returns the collection a command names in its first field.
func (r *request) collName() (string, error) {
	name, ok := r.cmd[0].Value.(string)
	if !ok || name == "" {
		return "", errorf(codeInvalidNamespace, "%s: the collection name must be a non-empty string", r.name)
	}
	if strings.ContainsRune(name, 0) || strings.HasPrefix(name, "$") {
		return "", errorf(codeInvalidNamespace, "%s: invalid collection name %q", r.name, name)
	}
	return name, nil
}

func (r *request) handle() (lungo.Handle, error) {
	coll, err := r.collName()
	if err != nil {
		return lungo.Handle{}, err
	}
	if r.db == "" {
		return lungo.Handle{}, errorf(codeInvalidNamespace, "%s: no database ($db) given", r.name)
	}
	return lungo.Handle{r.db, coll}, nil
}

// withAtClusterTime adds atClusterTime where drivers read a snapshot's
// time: in the cursor document of a cursor reply, else at the top level.
func withAtClusterTime(out bson.D, at primitive.Timestamp) bson.D {
	for i, e := range out {
		if cur, ok := e.Value.(bson.D); ok && e.Key == "cursor" {
			out[i].Value = append(cur, bson.E{Key: "atClusterTime", Value: at})
			return out
		}
	}
	return append(out, bson.E{Key: "atClusterTime", Value: at})
}
