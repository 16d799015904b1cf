package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/client"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/rpc/rpctest"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
)

// keep_acked: replays need the events the jsonl sink acknowledged.
const testConfig = runtimetest.Config + "outbox: {keep_acked: true}\n"

func dial(t *testing.T, srv *runtimetest.Server, opts ...client.DialOption) *client.Client {
	t.Helper()
	c, err := client.Dial(testwait.Context(t), srv.RPC.Addr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func subscribe(t *testing.T, c *client.Client, f client.Filter, opts ...client.SubscribeOption) *client.Stream {
	t.Helper()
	s, err := c.Subscribe(testwait.Context(t), f, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type item struct {
	ID    int      `bson:"_id"`
	Name  string   `bson:"name,omitempty"`
	N     int      `bson:"n"`
	Tags  []string `bson:"tags,omitempty"`
	Price float64  `bson:"price"`
}

// TestTypedStream_Next decodes every operation type the embedded engine
// produces into the caller's struct, with the fields each one carries.
func TestTypedStream_Next(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), testConfig)
	c := dial(t, srv)
	// dropDatabase of a database without collections makes no event.
	write(t, srv, 1, insertN("keep", 0, 1))
	s := client.Typed[item](subscribe(t, c, client.Filter{Namespaces: []string{"shop.items", "shop"}}))
	first := s.Started().Start
	last := write(t, srv, 7, func(ctx context.Context, db lungo.IDatabase) error {
		items := db.Collection("items")
		for _, op := range []func() error{
			func() error {
				_, err := items.InsertOne(ctx, item{ID: 1, Name: "a", N: 1, Tags: []string{"x", "y", "z"}, Price: 9.5})
				return err
			},
			func() error {
				_, err := items.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"n": 2}, "$unset": bson.M{"name": ""}})
				return err
			},
			func() error {
				_, err := items.ReplaceOne(ctx, bson.M{"_id": 1}, item{ID: 1, N: 3, Price: 1})
				return err
			},
			func() error { _, err := items.DeleteOne(ctx, bson.M{"_id": 1}); return err },
			func() error { return items.Drop(ctx) },
			func() error { return db.Drop(ctx) },
		} {
			if err := op(); err != nil {
				return err
			}
		}
		return nil
	})
	ctx := testwait.Context(t)
	var evs []*client.Change[item]
	for len(evs) < 7 && s.Next(ctx) {
		evs = append(evs, s.Event())
	}
	if len(evs) != 7 {
		t.Fatalf("got %d events, want 7: %v", len(evs), s.Err())
	}
	var ops []string
	for i, e := range evs {
		ops = append(ops, e.Operation)
		if e.Sequence != first+uint64(i) || e.Source != "shop" || e.Namespace.DB != "shop" ||
			e.ClusterTime.T == 0 || e.CapturedAt.IsZero() {
			t.Errorf("event %d lacks common fields: %+v", i, e.Event)
		}
	}
	if want := []string{client.OpInsert, client.OpUpdate, client.OpReplace, client.OpDelete, client.OpDrop, client.OpDrop, client.OpDropDatabase}; !slices.Equal(ops, want) {
		t.Fatalf("operations %v, want %v", ops, want)
	}
	if evs[6].Sequence != last {
		t.Errorf("last event %d, want %d", evs[6].Sequence, last)
	}
	ins, upd, rep, del, drop, dropDB := evs[0], evs[1], evs[2], evs[3], evs[4], evs[6]
	if ins.Doc == nil || ins.Doc.ID != 1 || ins.Doc.Name != "a" || ins.Doc.N != 1 || ins.Doc.Price != 9.5 ||
		!slices.Equal(ins.Doc.Tags, []string{"x", "y", "z"}) || ins.ID().Int32() != 1 {
		t.Errorf("insert decoded %+v (key %v)", ins.Doc, ins.ID())
	}
	var changed struct {
		N int `bson:"n"`
	}
	if upd.Doc == nil || upd.Doc.N != 2 || upd.Doc.Name != "" || !slices.Equal(upd.ChangedFields(), []string{"n", "name"}) ||
		!slices.Equal(upd.RemovedFields, []string{"name"}) || upd.DecodeUpdate(&changed) != nil || changed.N != 2 {
		t.Errorf("update decoded %+v, changed %v, removed %v, updated %v", upd.Doc, upd.ChangedFields(), upd.RemovedFields, upd.UpdatedFields)
	}
	if rep.Doc == nil || rep.Doc.ID != 1 || rep.Doc.N != 3 || rep.Doc.Price != 1 || rep.Doc.Name != "" {
		t.Errorf("replace decoded %+v", rep.Doc)
	}
	var key struct {
		ID int `bson:"_id"`
	}
	var v item
	if del.Doc != nil || del.DecodeKey(&key) != nil || key.ID != 1 || !errors.Is(del.Decode(&v), client.ErrNoDocument) ||
		!errors.Is(del.DecodeBefore(&v), client.ErrNoDocument) {
		t.Errorf("delete: doc %+v, key %+v, Decode %v, DecodeBefore %v", del.Doc, key, del.Decode(&v), del.DecodeBefore(&v))
	}
	if drop.Namespace != (client.Namespace{DB: "shop", Coll: "items"}) || drop.Doc != nil {
		t.Errorf("drop: %+v", drop.Event)
	}
	if dropDB.Namespace != (client.Namespace{DB: "shop"}) || dropDB.Namespace.String() != "shop" {
		t.Errorf("dropDatabase: %+v", dropDB.Event)
	}

	t.Run("DecodeErrorDoesNotEndTheStream", func(t *testing.T) {
		write(t, srv, 2, func(ctx context.Context, db lungo.IDatabase) error {
			if _, err := db.Collection("items").InsertOne(ctx, bson.M{"_id": 7, "n": "seven"}); err != nil {
				return err
			}
			_, err := db.Collection("items").InsertOne(ctx, bson.M{"_id": 8, "n": 8})
			return err
		})
		var de *client.DecodeError
		if s.Next(ctx) || !errors.As(s.Err(), &de) || de.Sequence != last+1 {
			t.Fatalf("a document that does not fit: Next returned %v (%v), want a DecodeError for %d", s.Event(), s.Err(), last+1)
		}
		if !s.Next(ctx) || s.Event().Doc.N != 8 {
			t.Fatalf("after the DecodeError: %v, %v", s.Event(), s.Err())
		}
	})

	t.Run("ContextEndThenGoOn", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if s.Next(cancelled) || !errors.Is(s.Err(), context.Canceled) {
			t.Fatalf("Next with an ended context: %v", s.Err())
		}
		want := write(t, srv, 1, insertN("items", 100, 1))
		if !s.Next(ctx) || s.Event().Sequence != want || s.Event().Doc.ID != 100 {
			t.Fatalf("Next after the context ended: %v, %v; want event %d", s.Event(), s.Err(), want)
		}
	})
}

// TestStream_Ack: a consumer acking every event makes one Ack call per
// AckEvery events, not one per event; Close sends the rest; a new stream
// of the subscription starts after the last ack.
func TestStream_Ack(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), testConfig)
	var calls atomic.Int64
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/Ack") {
			calls.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c := dial(t, srv, client.WithGRPCOptions(count))
	ctx := testwait.Context(t)
	const n, every = 1000, 100
	s := subscribe(t, c, client.Filter{Namespaces: []string{"shop.acked"}}, client.Durable("batch"), client.AckEvery(every, time.Hour))
	last := write(t, srv, n, insertN("acked", 0, n))
	for i := 0; i < n; i++ {
		if !s.Next(ctx) {
			t.Fatal(s.Err())
		}
		if err := s.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got < 1 || got > n/every+1 {
		t.Errorf("%d Ack calls for %d events acked one by one, want at most %d (one per %d)", got, n, n/every+1, every)
	}
	if acked, backlog, err := c.Ack(ctx, "batch", 0); err != nil || acked != last || backlog != 0 {
		t.Errorf("cursor %d (backlog %d, %v) after Close, want %d", acked, backlog, err, last)
	}
	next := write(t, srv, 1, insertN("acked", n, 1))
	s2 := subscribe(t, c, client.Filter{Namespaces: []string{"shop.acked"}}, client.Durable("batch"))
	if !s2.Next(ctx) || s2.Event().Sequence != next || !s2.Started().Resumed {
		t.Fatalf("the resumed stream's first event %v (%v), want %d", s2.Event(), s2.Err(), next)
	}

	t.Run("NotDurable", func(t *testing.T) {
		live := subscribe(t, c, client.Filter{})
		if err := live.Ack(); !errors.Is(err, client.ErrNotDurable) {
			t.Fatalf("Ack on a live stream: %v", err)
		}
	})
	t.Run("Deleted", func(t *testing.T) {
		if err := c.DeleteSubscription(ctx, "batch"); err != nil {
			t.Fatal(err)
		}
		if s2.Next(ctx) || !errors.Is(s2.Err(), client.ErrTakenOver) {
			t.Fatalf("Next after the subscription was deleted: %v", s2.Err())
		}
		if _, _, err := c.Ack(ctx, "batch", 1); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Ack of a deleted subscription: %v", err)
		}
	})
}

// TestStream_Lagged: a stream more than MaxLag events behind gets a
// *LaggedError naming the skipped events, then goes on after them.
func TestStream_Lagged(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), testConfig)
	c := dial(t, srv)
	ctx := testwait.Context(t)
	first := srv.Outbox().LastSeq() + 1
	last := write(t, srv, 50, insertN("lag", 0, 50))
	s := subscribe(t, c, client.Filter{Namespaces: []string{"shop.lag"}}, client.FromSequence(first), client.MaxLag(5))
	var lag *client.LaggedError
	if s.Next(ctx) || !errors.As(s.Err(), &lag) || !errors.Is(s.Err(), client.ErrLagged) {
		t.Fatalf("Next: %v, %v; want a LaggedError", s.Event(), s.Err())
	}
	if lag.Reason != client.LagMaxLag || lag.FirstMissed != first || lag.LastMissed != last {
		t.Fatalf("lagged %+v, want max lag, %d to %d", lag, first, last)
	}
	next := write(t, srv, 1, insertN("lag", 50, 1))
	if !s.Next(ctx) || s.Event().Sequence != next {
		t.Fatalf("after the lag: %v, %v; want event %d", s.Event(), s.Err(), next)
	}
}

// TestClient_Errors: what an application gets wrong is named.
func TestClient_Errors(t *testing.T) {
	token, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	srv := runtimetest.Start(t, t.TempDir(), `
api: {http_addr: "off", grpc_addr: "127.0.0.1:0", tokens: [{user: app, role: admin, sha256: `+auth.Hash(token)+`}]}
sources: [{id: shop, uri: "lungo:source.lungo"}]
`)
	ctx := testwait.Context(t)

	t.Run("BadFilter", func(t *testing.T) {
		c := dial(t, srv, client.WithToken(token))
		for _, tc := range []struct {
			f     client.Filter
			opts  []client.SubscribeOption
			field string
			says  string
		}{
			{f: client.Filter{Operations: []string{"upsert"}}, field: "operation_types[0]", says: "Filter.Operations[0]"},
			{f: client.Filter{Namespaces: []string{"shop.*", "a.b.c["}}, field: "namespaces[1]", says: "Filter.Namespaces[1]"},
			{opts: []client.SubscribeOption{client.Durable("no spaces")}, field: "durable_name", says: "Durable"},
		} {
			_, err := c.Subscribe(ctx, tc.f, tc.opts...)
			var re *client.RequestError
			if !errors.As(err, &re) || re.Field != tc.field || !errors.Is(err, client.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("%+v: %v, want a RequestError for %s naming %s", tc.f, err, tc.field, tc.says)
			}
		}
		if _, err := c.Subscribe(ctx, client.Filter{}, client.Durable("d"), client.MaxLag(3)); err == nil || !strings.Contains(err.Error(), "MaxLag") {
			t.Errorf("Durable with MaxLag: %v", err)
		}
	})
	t.Run("Token", func(t *testing.T) {
		for name, opts := range map[string][]client.DialOption{
			"none": nil, "wrong": {client.WithToken("not-the-token")},
		} {
			c := dial(t, srv, opts...) // Dial needs no token: health is open
			if _, err := c.Subscribe(ctx, client.Filter{}); !errors.Is(err, client.ErrUnauthenticated) || strings.Contains(err.Error(), token) {
				t.Errorf("%s token: %v, want ErrUnauthenticated", name, err)
			}
		}
		if _, err := client.Dial(ctx, "192.0.2.1:7701", client.WithToken(token)); err == nil || !strings.Contains(err.Error(), "unencrypted") {
			t.Errorf("a token in plaintext to a remote address: %v", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		_, err := client.Dial(ctx, freeAddr(t))
		if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "is godwit running") {
			t.Errorf("Dial of a closed port: %v", err)
		}
		if _, err := client.Dial(ctx, "no-port"); err == nil || !strings.Contains(err.Error(), "host:port") {
			t.Errorf("Dial of a bad address: %v", err)
		}
	})
}

// TestDial_TLS: with mTLS, a client with the CA and a client certificate
// subscribes; one without a client certificate is refused at Dial, one
// that does not trust the daemon's CA too.
func TestDial_TLS(t *testing.T) {
	dir := t.TempDir()
	ca := rpctest.NewCA(t, dir, "godwit")
	srvPair, cliPair := ca.Server(t, "server"), ca.Client(t, "app")
	other := rpctest.NewCA(t, dir, "other")
	srv := runtimetest.Start(t, dir, fmt.Sprintf(`
api: {http_addr: "off", grpc_addr: "127.0.0.1:0", tls: {cert: %q, key: %q, client_ca: %q}}
sources: [{id: shop, uri: "lungo:source.lungo"}]
`, srvPair.CertFile, srvPair.KeyFile, ca.CertFile))
	ctx := testwait.Context(t)
	c := dial(t, srv, client.WithTLSFiles(ca.CertFile, cliPair.CertFile, cliPair.KeyFile))
	s := subscribe(t, c, client.Filter{Namespaces: []string{"shop.tls"}})
	want := write(t, srv, 1, insertN("tls", 0, 1))
	if !s.Next(ctx) || s.Event().Sequence != want {
		t.Fatalf("over mTLS: %v, %v", s.Event(), s.Err())
	}
	for name, opts := range map[string][]client.DialOption{
		"no client certificate": {client.WithTLSFiles(ca.CertFile, "", "")},
		"another CA":            {client.WithTLSFiles(other.CertFile, cliPair.CertFile, cliPair.KeyFile)},
		"plaintext":             nil,
	} {
		if _, err := client.Dial(ctx, srv.RPC.Addr(), opts...); !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("%s: Dial returned %v, want ErrUnavailable with the reason", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := client.Dial(ctx, srv.RPC.Addr(), client.WithTLSFiles(ca.CertFile, cliPair.CertFile, "")); err == nil ||
		!strings.Contains(err.Error(), "go together") {
		t.Errorf("a certificate without its key: %v", err)
	}
}

// TestStream_GiveUpAfter: with GiveUpAfter, a stream whose daemon is gone
// stops retrying and says so; every attempt was reported to OnReconnect.
func TestStream_GiveUpAfter(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), testConfig)
	c := dial(t, srv)
	var attempts []error
	// Two attempts (a refused connection and a 10 ms wait before the
	// second) must fit before it gives up: 1 s leaves them a wide margin
	// on a loaded machine without making the test slow.
	s := subscribe(t, c, client.Filter{}, client.GiveUpAfter(time.Second), client.Backoff(10*time.Millisecond, 50*time.Millisecond),
		client.OnReconnect(func(err error, attempt int, _ time.Duration) { attempts = append(attempts, err) }))
	srv.Stop()
	if s.Next(testwait.Context(t)) || !errors.Is(s.Err(), client.ErrUnavailable) || !strings.Contains(s.Err().Error(), "gave up") {
		t.Fatalf("Next with the daemon gone: %v", s.Err())
	}
	if len(attempts) < 2 || !errors.Is(attempts[0], client.ErrUnavailable) {
		t.Fatalf("OnReconnect saw %v", attempts)
	}
	if s.Next(testwait.Context(t)) || !errors.Is(s.Err(), client.ErrUnavailable) {
		t.Fatalf("Next after giving up: %v, want the same error again", s.Err())
	}
}

// TestStream_AckCheckpoint: events a durable subscription's filter drops
// do not hold its cursor back: once the application acknowledged what it
// was sent, godwit's checkpoints are acknowledged too, while Next waits.
func TestStream_AckCheckpoint(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), testConfig)
	c := dial(t, srv)
	ctx := testwait.Context(t)
	s := subscribe(t, c, client.Filter{Namespaces: []string{"shop.wanted"}}, client.Durable("cp"), client.AckEvery(1000, 50*time.Millisecond))
	write(t, srv, 1, insertN("wanted", 0, 1))
	if !s.Next(ctx) {
		t.Fatal(s.Err())
	}
	if err := s.Ack(); err != nil {
		t.Fatal(err)
	}
	next := make(chan uint64, 1)
	waiting, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	go func() { // Next reads the checkpoints while it waits for an event
		if !s.Next(waiting) {
			next <- 0
			return
		}
		next <- s.Event().Sequence
	}()
	others := write(t, srv, 20, insertN("other", 0, 20))
	err := srv.Outbox().WaitUntil(ctx, func(v outbox.View) (bool, error) {
		st, _, err := v.Sink(outbox.SubscriptionCursor("cp"))
		return st.Acked >= others, err
	})
	if err != nil {
		stopWaiting()
		<-next // the stream is the test's again
		t.Fatalf("the cursor did not move past the filtered events: %v", err)
	}
	wanted := write(t, srv, 1, insertN("wanted", 1, 1))
	if got := <-next; got != wanted {
		t.Fatalf("Next returned %d, want %d", got, wanted)
	}
}
