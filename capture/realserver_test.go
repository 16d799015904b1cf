package capture_test

// Real-server code paths: the official driver talks over the wire protocol
// to a scripted server (internal/wiretest) that answers aggregate/getMore
// with recorded real-format events (change/testdata) the way a MongoDB
// server does.

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/internal/wiretest"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// reply is one scripted server answer: to the aggregate that opens a
// cursor (when opening is set) or to a getMore on it.
type reply struct {
	events    []string   // names in change/testdata/real-events.json
	raws      []bson.Raw // events after the named ones
	postBatch string     // _data of the postBatchResumeToken
	err       bson.Raw   // a server error reply (wiretest.Error)
	drop      bool       // close the connection instead: a network error
	closed    bool       // the cursor ends (id 0) with this batch
	// opening marks the answer to the aggregate itself. Without it the
	// aggregate gets an empty first batch and no post-batch token.
	opening bool
}

// watchCall is one aggregate the driver sent: godwit's own opens and the
// driver's resumes alike.
type watchCall struct {
	changeStream bson.Raw // the $changeStream stage's options
	stages       []bson.Raw
	startAfter   bson.Raw
	resumeAfter  bson.Raw
}

// wireServer is a MongoDB wire-protocol server (internal/wiretest) that
// answers change-stream aggregates and getMores from scripts, one script per
// aggregate, so the official driver's change stream and its resume logic run
// between capture and the scripted replies.
type wireServer struct {
	*wiretest.Server
	mu      sync.Mutex
	scripts [][]reply
	calls   []watchCall
	cur     []reply // what the open cursor has left
	last    bool    // the open cursor runs the last script
	cursor  int64
	idle    chan struct{} // closed when the last script is exhausted
	once    sync.Once
	// onAggregate, when set, runs before aggregate n (from 0) is answered.
	onAggregate func(n int)
	// other, when set, answers commands other than the change stream's.
	other func(req wiretest.Request) bson.Raw
}

func newWireServer(t *testing.T, scripts ...[]reply) *wireServer {
	s := &wireServer{scripts: scripts, idle: make(chan struct{})}
	s.Server = wiretest.Start(t, s.handle)
	return s
}

func (s *wireServer) handle(ctx context.Context, req wiretest.Request) bson.Raw {
	switch req.Command {
	case "aggregate":
		return s.aggregate(ctx, req.Body)
	case "getMore":
		s.mu.Lock()
		if len(s.cur) == 0 {
			last := s.last
			s.mu.Unlock()
			if last {
				s.once.Do(func() { close(s.idle) })
			}
			<-ctx.Done() // an idle server holds the getMore
			return nil
		}
		r := s.cur[0]
		s.cur = s.cur[1:]
		id := s.cursor
		s.mu.Unlock()
		return batch(r, id, "nextBatch")
	case "killCursors":
		return wiretest.OK(bson.E{Key: "cursorsKilled", Value: bson.A{req.Body.Lookup("cursors").Array()}})
	}
	s.mu.Lock()
	other := s.other
	s.mu.Unlock()
	if other != nil {
		if r := other(req); r != nil {
			return r
		}
	}
	return wiretest.Error(59, "CommandNotFound", "no such command: '"+req.Command+"'")
}

func (s *wireServer) aggregate(ctx context.Context, body bson.Raw) bson.Raw {
	var call watchCall
	stages, _ := body.Lookup("pipeline").Array().Values()
	for i, st := range stages {
		doc := st.Document()
		if i == 0 {
			call.changeStream = doc.Lookup("$changeStream").Document()
			call.startAfter, _ = call.changeStream.Lookup("startAfter").DocumentOK()
			call.resumeAfter, _ = call.changeStream.Lookup("resumeAfter").DocumentOK()
			continue
		}
		call.stages = append(call.stages, doc)
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	n := len(s.calls) - 1
	hook := s.onAggregate
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	s.mu.Lock()
	if n >= len(s.scripts) {
		s.mu.Unlock()
		s.once.Do(func() { close(s.idle) })
		<-ctx.Done()
		return nil
	}
	script := s.scripts[n]
	open := reply{}
	if len(script) > 0 && script[0].opening {
		open, script = script[0], script[1:]
	}
	s.cursor++
	s.cur, s.last = script, n == len(s.scripts)-1
	id := s.cursor
	s.mu.Unlock()
	return batch(open, id, "firstBatch")
}

// batch answers with r's events as a cursor batch.
func batch(r reply, id int64, field string) bson.Raw {
	if r.err != nil {
		return r.err
	}
	if r.drop {
		return nil
	}
	docs := bson.A{}
	for _, n := range r.events {
		docs = append(docs, changetest.Event(n))
	}
	for _, raw := range r.raws {
		docs = append(docs, raw)
	}
	if r.closed {
		id = 0
	}
	cur := bson.D{{Key: "id", Value: id}, {Key: "ns", Value: "admin.$cmd.aggregate"}, {Key: field, Value: docs}}
	if r.postBatch != "" {
		cur = append(cur, bson.E{Key: "postBatchResumeToken", Value: token(r.postBatch)})
	}
	return wiretest.OK(bson.E{Key: "cursor", Value: cur})
}

// script sets onAggregate and other before the driver connects.
func (s *wireServer) script(onAggregate func(n int), other func(req wiretest.Request) bson.Raw) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAggregate, s.other = onAggregate, other
}

func (s *wireServer) watchCalls() []watchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]watchCall(nil), s.calls...)
}

func token(data string) bson.Raw {
	raw, _ := bson.Marshal(bson.D{{Key: "_data", Value: data}})
	return raw
}

// connect opens a real-driver connection to srv, closed when the test ends.
func connect(t *testing.T, srv *wireServer) *mongodb.Conn {
	t.Helper()
	conn, err := mongodb.Open(context.Background(), srv.URI(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// runFake runs a source against srv until the script is exhausted (or the
// source stops by itself) and returns what Run returned.
func runFake(t *testing.T, srv *wireServer, ob *outbox.Outbox, cfg capture.Config) error {
	t.Helper()
	_, err := runWire(t, srv, ob, cfg)
	return err
}

// runWire is runFake that also returns the source, for its status.
func runWire(t *testing.T, srv *wireServer, ob *outbox.Outbox, cfg capture.Config) (*capture.Source, error) {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "real"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
	}
	cfg.CheckpointInterval = time.Nanosecond
	cfg.MaxAwaitTime = time.Millisecond
	src := capture.New(cfg, connect(t, srv), ob, nil, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	select {
	case <-srv.idle:
		cancel()
		return src, <-done
	case err := <-done:
		return src, err
	case <-time.After(testwait.Long):
		cancel()
		<-done
		t.Fatalf("scripted stream never went idle; %d aggregates, status %+v", len(srv.watchCalls()), src.Status())
		return nil, nil
	}
}

func stored(t *testing.T, ob *outbox.Outbox, id string) outbox.SourceState {
	t.Helper()
	st, ok, err := ob.Source(id)
	if err != nil || !ok {
		t.Fatalf("source %s: ok=%v err=%v", id, ok, err)
	}
	return st
}

func tokenData(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	return bson.Raw(raw).Lookup("_data").StringValue()
}

func TestSource_Real_PersistsPostBatchTokenAfterEmptyBatches(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t, []reply{
		{events: []string{"insert", "unknown_op"}, postBatch: "PB1"},
		{postBatch: "PB2"}, // idle getMore
		{postBatch: "PB3"}, // idle getMore
	})
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, ob)
	if got := summaries(t, recs); len(got) != 2 || !strings.HasPrefix(got[1], "reshardBlockingWrites") {
		t.Fatalf("events = %v; want the insert and the unknown operation type, stored as is", got)
	}
	st := stored(t, ob, "real")
	if tokenData(st.Token) != "PB3" {
		t.Fatalf("stored token = %q, want the last post-batch token PB3", tokenData(st.Token))
	}
	// The token is stored with a fingerprint of the stream it came from.
	src := capture.New(capture.Config{ID: "real"}, nil, nil, nil, zerolog.Nop())
	other := capture.New(capture.Config{ID: "real", OperationTypes: []string{"insert"}}, nil, nil, nil, zerolog.Nop())
	if st.Fingerprint != src.Fingerprint() || st.Fingerprint == other.Fingerprint() {
		t.Fatalf("fingerprint %q: want %q, distinct from a different pipeline's %q", st.Fingerprint, src.Fingerprint(), other.Fingerprint())
	}
}

func TestSource_Real_PushesFiltersDown(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t, []reply{{events: []string{"insert"}}})
	cfg := capture.Config{
		Filter:             change.Filter{Include: []change.Glob{change.MustGlob("shop.*")}},
		OperationTypes:     []string{change.OpInsert},
		FullDocument:       "updateLookup",
		ShowExpandedEvents: true,
		SplitLargeEvents:   true,
	}
	if err := runFake(t, srv, ob, cfg); err != nil {
		t.Fatal(err)
	}
	calls := srv.watchCalls()
	if len(calls) != 1 {
		t.Fatalf("%d aggregates", len(calls))
	}
	c := calls[0]
	want := capture.Pipeline(cfg)
	if len(c.stages) != len(want) || len(want) != 2 {
		t.Fatalf("pipeline sent = %v, want %v", c.stages, want)
	}
	for i, st := range want {
		raw, err := bson.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != string(c.stages[i]) {
			t.Fatalf("stage %d sent = %v, want %v", i, c.stages[i], bson.Raw(raw))
		}
	}
	if _, ok := c.stages[0].Lookup("$match").DocumentOK(); !ok || c.stages[1].Lookup("$changeStreamSplitLargeEvent").Type == 0 {
		t.Fatalf("want $match then $changeStreamSplitLargeEvent, got %v", c.stages)
	}
	if c.changeStream.Lookup("fullDocument").StringValue() != "updateLookup" || !c.changeStream.Lookup("showExpandedEvents").Boolean() {
		t.Fatalf("stream options not passed: %v", c.changeStream)
	}
}

// TestPipeline_MatchesClientSideFilter checks that the $match sent to a real
// server keeps exactly the events the client-side filter (Config.Keep)
// keeps, for every recorded event and a set of configurations, with a small
// evaluator of the query operators the pipeline uses.
func TestPipeline_MatchesClientSideFilter(t *testing.T) {
	configs := []capture.Config{
		{},
		{Filter: change.Filter{Include: []change.Glob{change.MustGlob("shop.*")}}},
		{Filter: change.Filter{Include: []change.Glob{change.MustGlob("shop.orders_2024")}}},
		{Filter: change.Filter{Ignore: []change.Glob{change.MustGlob("*.tmp_*"), change.MustGlob("legacy")}}},
		{Filter: change.Filter{Include: []change.Glob{change.MustGlob("s?op.[a-o]*")}, Ignore: []change.Glob{change.MustGlob("shop.orders")}}},
		{OperationTypes: []string{change.OpInsert, change.OpDrop}},
		{MetadataDatabase: "shop"},
		{Filter: change.Filter{Include: []change.Glob{change.MustGlob("legacy.*")}}, OperationTypes: []string{change.OpDropDatabase}},
	}
	for i, cfg := range configs {
		match := capture.Pipeline(cfg)[0].(bson.D)[0].Value.(bson.D)
		for _, name := range changetest.Names() {
			raw := changetest.Event(name)
			ev, err := change.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			var doc bson.D
			if err := bson.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			if got, want := evalQuery(t, doc, match), cfg.Keep(ev); got != want {
				t.Errorf("config %d, event %s: server-side $match keeps=%v, client-side keeps=%v\n$match: %v", i, name, got, want, match)
			}
		}
		// Origin markers pass the server-side $match whatever the filters
		// (for the echo filter); the rest of the metadata database does not.
		meta := cfg.MetadataDatabase
		if meta == "" {
			meta = "godwit"
		}
		for coll, want := range map[string]bool{capture.MarkersCollection: true, "state": false} {
			doc := bson.D{{Key: "operationType", Value: "insert"}, {Key: "ns", Value: bson.D{{Key: "db", Value: meta}, {Key: "coll", Value: coll}}}}
			if got := evalQuery(t, doc, match); got != want {
				t.Errorf("config %d: %s.%s passes $match = %v, want %v", i, meta, coll, got, want)
			}
		}
	}
}

func TestSource_Real_HistoryLostHalts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scripts [][]reply
		want    string
	}{
		{"ChangeStreamHistoryLost", [][]reply{{{events: []string{"insert"}}, {err: wiretest.Error(286, "ChangeStreamHistoryLost",
			"Resume of change stream was not possible, as the resume point may no longer be in the oplog")}}},
			"history no longer reaches"},
		// A token the server rejects when godwit opens the stream with it.
		{"InvalidResumeToken", [][]reply{{{events: []string{"insert"}}, {err: wiretest.Error(91, "ShutdownInProgress", "shutting down")}},
			{{opening: true, err: wiretest.Error(260, "InvalidResumeToken", "Bad resume token")}}},
			"rejected the stored resume token"},
		// 280 with the message that means the token's event is gone (N4).
		{"ResumeTokenNotFound", [][]reply{{{events: []string{"insert"}}, {err: wiretest.Error(280, "ChangeStreamFatalError",
			"cannot resume stream; the resume token was not found. {_data: \"8263\"}")}}},
			"rolled back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := openOutbox(t, outbox.Options{})
			srv := newWireServer(t, tc.scripts...)
			var audited []string
			err := runFake(t, srv, ob, capture.Config{OnHalt: func(_, reason string) { audited = append(audited, reason) }})
			if !isHalted(err) {
				t.Fatalf("Run = %v, want ErrHalted", err)
			}
			st := stored(t, ob, "real")
			if st.State != outbox.StateHalted || !strings.Contains(st.Reason, tc.want) ||
				!strings.Contains(st.Reason, "godwit resync --config FILE --source real") {
				t.Fatalf("state %q reason %q", st.State, st.Reason)
			}
			if len(audited) != 1 || audited[0] != st.Reason {
				t.Fatalf("audited %q, want the stored reason once", audited)
			}
			if n := len(readAll(t, ob)); n != 1 {
				t.Fatalf("events before the error must be kept: %d stored", n)
			}
		})
	}
}

func TestSource_Real_StartsAfterInvalidate(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t,
		// A real server ends the cursor with the invalidate event.
		[]reply{{events: []string{"insert", "invalidate"}, closed: true}},
		[]reply{{events: []string{"txn_insert_1"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	calls := srv.watchCalls()
	if len(calls) != 2 {
		t.Fatalf("%d aggregates, want a reopen after the invalidate", len(calls))
	}
	inv := changetest.Event("invalidate").Lookup("_id").Document()
	if string(calls[1].startAfter) != string(inv) {
		t.Fatalf("reopened with startAfter %v, want the invalidate's token %v", calls[1].startAfter, inv)
	}
	if got := summaries(t, readAll(t, ob)); len(got) != 3 || got[1] != "invalidate " {
		t.Fatalf("events = %q", got)
	}
}

func TestSource_Real_ReassemblesSplitEvents(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t,
		// The first fragment ends a batch, then the server fails the
		// getMore with an error the driver does not resume (no
		// ResumableChangeStreamError label) but godwit does.
		[]reply{{events: []string{"insert"}}, {events: []string{"split_1"}}, {err: wiretest.Error(91, "ShutdownInProgress", "shutting down")}},
		// After reconnecting the server resends the event whole.
		[]reply{{events: []string{"split_1", "split_2"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{SplitLargeEvents: true}); err != nil {
		t.Fatal(err)
	}
	calls := srv.watchCalls()
	ins := changetest.Event("insert").Lookup("_id").Document()
	if len(calls) != 2 || string(calls[1].startAfter) != string(ins) {
		t.Fatalf("reconnect must resume after the last whole event, not inside the split one: %v", calls)
	}
	recs := readAll(t, ob)
	if len(recs) != 2 {
		t.Fatalf("%d events stored, want the insert and one reassembled event", len(recs))
	}
	ev, err := change.Parse(recs[1].Raw)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Split != nil || ev.UpdateDescription == nil || ev.FullDocumentBeforeChange == nil || ev.OperationType != "update" {
		t.Fatalf("reassembled event lacks fields: %s", ev.Raw)
	}
	last := changetest.Event("split_2").Lookup("_id").Document()
	if string(ev.Token) != string(last) || tokenData(stored(t, ob, "real").Token) != tokenData(last) {
		t.Fatalf("the whole event's token must be its last fragment's")
	}
}

// evalQuery evaluates the subset of MongoDB query operators Pipeline uses:
// $and, $or, $nor, $exists, $ne, $in, $nin, $regex and equality, on dotted
// paths.
func evalQuery(t *testing.T, doc bson.D, q bson.D) bool {
	for _, e := range q {
		switch e.Key {
		case "$and":
			for _, sub := range e.Value.(bson.A) {
				if !evalQuery(t, doc, sub.(bson.D)) {
					return false
				}
			}
		case "$or":
			any := false
			for _, sub := range e.Value.(bson.A) {
				any = any || evalQuery(t, doc, sub.(bson.D))
			}
			if !any {
				return false
			}
		case "$nor":
			for _, sub := range e.Value.(bson.A) {
				if evalQuery(t, doc, sub.(bson.D)) {
					return false
				}
			}
		default:
			v, ok := lookup(doc, e.Key)
			if !evalCond(t, v, ok, e.Value) {
				return false
			}
		}
	}
	return true
}

func evalCond(t *testing.T, v any, present bool, cond any) bool {
	ops, isOps := cond.(bson.D)
	if !isOps || len(ops) == 0 || !strings.HasPrefix(ops[0].Key, "$") {
		return present && fmt.Sprint(v) == fmt.Sprint(cond)
	}
	for _, op := range ops {
		switch op.Key {
		case "$exists":
			if present != op.Value.(bool) {
				return false
			}
		case "$ne":
			if present && fmt.Sprint(v) == fmt.Sprint(op.Value) {
				return false
			}
		case "$in", "$nin":
			in := false
			for _, x := range op.Value.(bson.A) {
				in = in || (present && fmt.Sprint(v) == fmt.Sprint(x))
			}
			if in != (op.Key == "$in") {
				return false
			}
		case "$regex":
			s, isStr := v.(string)
			if !present || !isStr || !compiled(op.Value.(string)).MatchString(s) {
				return false
			}
		default:
			t.Fatalf("evaluator does not know %s", op.Key)
		}
	}
	return true
}

var regexCache sync.Map

func compiled(pattern string) *regexp.Regexp {
	if re, ok := regexCache.Load(pattern); ok {
		return re.(*regexp.Regexp)
	}
	re := regexp.MustCompile(pattern)
	regexCache.Store(pattern, re)
	return re
}

func lookup(doc bson.D, path string) (any, bool) {
	head, rest, more := strings.Cut(path, ".")
	for _, e := range doc {
		if e.Key != head {
			continue
		}
		if !more {
			return e.Value, true
		}
		sub, ok := e.Value.(bson.D)
		if !ok {
			return nil, false
		}
		return lookup(sub, rest)
	}
	return nil, false
}

func TestSource_Real_StoresStartPointBeforeFirstEvent(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t,
		// The stream opens with a resume token, then the connection drops
		// before any event arrived.
		[]reply{{opening: true, postBatch: "OPEN"}, {err: wiretest.Error(91, "ShutdownInProgress", "shutting down")}},
		[]reply{{events: []string{"insert"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	calls := srv.watchCalls()
	if len(calls) != 2 || tokenData(calls[1].startAfter) != "OPEN" {
		t.Fatalf("the reconnect must resume at the stream's opening token, not at a later now: %+v", calls)
	}
}
