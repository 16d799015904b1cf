package capture_test

// Real-server code paths, tested against a scripted change stream that
// answers with recorded real-format events (change/testdata) the way a
// MongoDB server's aggregate/getMore replies do.

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// reply is one server reply: a batch of events with its post-batch resume
// token, or an error.
type reply struct {
	events    []string // names in change/testdata/real-events.json
	postBatch string   // _data of the postBatchResumeToken
	err       error
	// opening marks the reply to the aggregate that opens the stream: its
	// postBatch token is the stream's resume token before any getMore.
	opening bool
}

// watchCall records how capture opened a stream.
type watchCall struct {
	pipeline   bson.A
	startAfter bson.Raw
	opts       *options.ChangeStreamOptions
}

// fakeServer answers Watch with scripted streams, one script per Watch call.
type fakeServer struct {
	mu      sync.Mutex
	scripts [][]reply
	calls   []watchCall
	idle    chan struct{} // closed when the last script is exhausted
}

func newFakeServer(scripts ...[]reply) *fakeServer {
	return &fakeServer{scripts: scripts, idle: make(chan struct{})}
}

// fakeClient is a lungo.IClient whose Watch is scripted; capture uses no
// other method when it watches a whole deployment.
type fakeClient struct {
	lungo.IClient
	srv *fakeServer
}

func (c fakeClient) Watch(_ context.Context, pipeline any, opts ...*options.ChangeStreamOptions) (lungo.IChangeStream, error) {
	o := options.MergeChangeStreamOptions(opts...)
	call := watchCall{pipeline: pipeline.(bson.A), opts: o}
	if o.StartAfter != nil {
		call.startAfter = o.StartAfter.(bson.Raw)
	}
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
	n := len(s.calls) - 1
	var script []reply
	if n < len(s.scripts) {
		script = s.scripts[n]
	}
	f := &fakeStream{srv: s, replies: script, last: n >= len(s.scripts)-1}
	if len(script) > 0 && script[0].opening {
		f.token, f.replies = token(script[0].postBatch), script[1:]
	}
	return f, nil
}

func (s *fakeServer) watchCalls() []watchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]watchCall(nil), s.calls...)
}

type fakeStream struct {
	srv     *fakeServer
	replies []reply
	last    bool
	batch   []bson.Raw
	post    bson.Raw
	current bson.Raw
	token   bson.Raw
	err     error
	once    sync.Once
}

func token(data string) bson.Raw {
	raw, _ := bson.Marshal(bson.D{{Key: "_data", Value: data}})
	return raw
}

func (f *fakeStream) TryNext(ctx context.Context) bool {
	if f.err != nil {
		return false
	}
	if len(f.batch) == 0 {
		if len(f.replies) == 0 {
			// Script done: behave like an idle server holding getMores.
			if f.last {
				f.once.Do(func() { close(f.srv.idle) })
			}
			<-ctx.Done()
			f.err = ctx.Err()
			return false
		}
		r := f.replies[0]
		f.replies = f.replies[1:]
		if r.err != nil {
			f.err = r.err
			return false
		}
		f.batch = nil
		for _, n := range r.events {
			f.batch = append(f.batch, changetest.Event(n))
		}
		f.post = nil
		if r.postBatch != "" {
			f.post = token(r.postBatch)
		}
		if len(f.batch) == 0 {
			if f.post != nil {
				f.token = f.post
			}
			return false
		}
	}
	f.current, f.batch = f.batch[0], f.batch[1:]
	f.token = f.current.Lookup("_id").Document()
	if len(f.batch) == 0 && f.post != nil {
		f.token = f.post
	}
	return true
}

func (f *fakeStream) Next(ctx context.Context) bool { return f.TryNext(ctx) }
func (f *fakeStream) Decode(out any) error          { return bson.Unmarshal(f.current, out) }
func (f *fakeStream) Err() error                    { return f.err }
func (f *fakeStream) Close(context.Context) error   { return nil }
func (f *fakeStream) ID() int64                     { return 1 }
func (f *fakeStream) RemainingBatchLength() int     { return len(f.batch) }
func (f *fakeStream) ResumeToken() bson.Raw         { return f.token }
func (f *fakeStream) SetBatchSize(int32)            {}

// runFake runs a source against srv until the script is exhausted (or the
// source stops by itself) and returns what Run returned.
func runFake(t *testing.T, srv *fakeServer, ob *outbox.Outbox, cfg capture.Config) error {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "real"
	}
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
	cfg.CheckpointInterval = time.Nanosecond
	conn := &mongodb.Conn{Client: fakeClient{srv: srv}, Redacted: "mongodb://fake"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- capture.New(cfg, conn, ob, nil, zerolog.Nop()).Run(ctx) }()
	select {
	case <-srv.idle:
		cancel()
		return <-done
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("scripted stream never went idle")
		return nil
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
	srv := newFakeServer([]reply{
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
	srv := newFakeServer([]reply{{events: []string{"insert"}}})
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
		t.Fatalf("%d Watch calls", len(calls))
	}
	c := calls[0]
	if fmt.Sprint(c.pipeline) != fmt.Sprint(capture.Pipeline(cfg)) {
		t.Fatalf("pipeline sent = %v", c.pipeline)
	}
	if len(c.pipeline) != 2 || !strings.Contains(fmt.Sprint(c.pipeline[0]), "$match") ||
		!strings.Contains(fmt.Sprint(c.pipeline[1]), "$changeStreamSplitLargeEvent") {
		t.Fatalf("want $match then $changeStreamSplitLargeEvent, got %v", c.pipeline)
	}
	if c.opts.FullDocument == nil || *c.opts.FullDocument != options.UpdateLookup ||
		c.opts.ShowExpandedEvents == nil || !*c.opts.ShowExpandedEvents || c.opts.MaxAwaitTime == nil {
		t.Fatalf("stream options not passed: %+v", c.opts)
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
		{Filter: change.Filter{Exclude: []change.Glob{change.MustGlob("*.tmp_*"), change.MustGlob("legacy")}}},
		{Filter: change.Filter{Include: []change.Glob{change.MustGlob("s?op.[a-o]*")}, Exclude: []change.Glob{change.MustGlob("shop.orders")}}},
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
		name string
		err  error
		want string
	}{
		{"ChangeStreamHistoryLost", mongo.CommandError{Code: 286, Name: "ChangeStreamHistoryLost",
			Message: "Resume of change stream was not possible, as the resume point may no longer be in the oplog"},
			"history no longer reaches"},
		{"InvalidResumeToken", mongo.CommandError{Code: 260, Name: "InvalidResumeToken", Message: "Bad resume token"},
			"rejected the stored resume token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := openOutbox(t, outbox.Options{})
			srv := newFakeServer([]reply{{events: []string{"insert"}}, {err: tc.err}})
			err := runFake(t, srv, ob, capture.Config{})
			if !isHalted(err) {
				t.Fatalf("Run = %v, want ErrHalted", err)
			}
			st := stored(t, ob, "real")
			if st.State != outbox.StateHalted || !strings.Contains(st.Reason, tc.want) ||
				!strings.Contains(st.Reason, "godwit resync --config FILE --source real") {
				t.Fatalf("state %q reason %q", st.State, st.Reason)
			}
			if n := len(readAll(t, ob)); n != 1 {
				t.Fatalf("events before the error must be kept: %d stored", n)
			}
		})
	}
}

func TestSource_Real_StartsAfterInvalidate(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newFakeServer(
		[]reply{{events: []string{"insert", "invalidate"}}},
		[]reply{{events: []string{"txn_insert_1"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	calls := srv.watchCalls()
	if len(calls) != 2 {
		t.Fatalf("%d Watch calls, want a reopen after the invalidate", len(calls))
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
	srv := newFakeServer(
		// The first fragment ends a batch, then the connection drops.
		[]reply{{events: []string{"insert"}}, {events: []string{"split_1"}}, {err: mongo.CommandError{Code: 91, Message: "ShutdownInProgress"}}},
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
	srv := newFakeServer(
		// The stream opens with a resume token, then the connection drops
		// before any event arrived.
		[]reply{{opening: true, postBatch: "OPEN"}, {err: mongo.CommandError{Code: 91, Message: "ShutdownInProgress"}}},
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
