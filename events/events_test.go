package events_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
)

func TestEngine_Subscribe(t *testing.T) {
	t.Run("Live", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		v.inserts("a", "shop.orders", 1, 3)
		s := subscribe(t, v.e, events.Request{})
		if st := s.started(); st.Start != 4 || st.Last != 3 || st.Oldest != 1 || st.Resumed {
			t.Fatalf("started = %+v, want start 4 after 3 events", st)
		}
		last := v.inserts("a", "shop.orders", 4, 2)
		got := s.until(last, nil)
		if !slices.Equal(seqs(got), []uint64{4, 5}) {
			t.Fatalf("live stream got %v, want only the new events 4 and 5", seqs(got))
		}
		e := got[0]
		if e.Source != "a" || e.Change.OperationType != "insert" || e.Change.NS.String() != "shop.orders" {
			t.Fatalf("event = %+v", e)
		}
		if id, _ := e.Change.DocumentID(); id.Int64() != 4 {
			t.Fatalf("document key = %v, want 4", id)
		}
	})

	// Sinks that ack faster than the subscriber reads do not get its
	// events deleted under it.
	t.Run("NotOvertakenBySinks", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		if _, err := v.ob.RegisterSink(outbox.SinkCursor("fast")); err != nil {
			t.Fatal(err)
		}
		gate := make(chan struct{})
		s := subscribeGated(t, v.e, events.Request{}, gate)
		s.started()
		last := v.inserts("a", "shop.orders", 1, 10)
		if err := v.ob.Ack(outbox.SinkCursor("fast"), last, 10); err != nil {
			t.Fatal(err)
		}
		close(gate)
		if got := s.until(last, nil); !slices.Equal(seqs(got), seqRange(1, 10)) {
			t.Fatalf("got %v, want 1..10", seqs(got))
		}
		if err := v.ob.Ack(outbox.SinkCursor("fast"), last, 0); err != nil {
			t.Fatal(err)
		}
		if st := v.ob.Stats(); st.Oldest != 0 {
			t.Fatalf("once read, retention deletes: %+v", st)
		}
	})

	t.Run("FromSequence", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		last := v.inserts("a", "shop.orders", 1, 10)
		s := subscribe(t, v.e, events.Request{Start: events.StartSequence, FromSequence: 7})
		if st := s.started(); st.Start != 7 {
			t.Fatalf("started = %+v, want 7", st)
		}
		if got := s.until(last, nil); !slices.Equal(seqs(got), seqRange(7, 10)) {
			t.Fatalf("replay got %v, want 7..10", seqs(got))
		}
		// The replay goes on live.
		last = v.inserts("a", "shop.orders", 11, 1)
		if got := s.until(last, nil); !slices.Equal(seqs(got), []uint64{11}) {
			t.Fatalf("after the replay got %v, want 11", seqs(got))
		}
	})

	t.Run("FromSequenceBehindRetention", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		if _, err := v.ob.RegisterSink(outbox.SinkCursor("sink")); err != nil {
			t.Fatal(err)
		}
		v.inserts("a", "shop.orders", 1, 10)
		if err := v.ob.Ack(outbox.SinkCursor("sink"), 6, 6); err != nil { // retention deletes 1..6
			t.Fatal(err)
		}
		s := subscribe(t, v.e, events.Request{Start: events.StartSequence, FromSequence: 3})
		s.started()
		var lagged []events.Lagged
		got := s.until(10, &lagged)
		if len(lagged) != 1 || lagged[0] != (events.Lagged{Reason: events.LagRetention, FirstMissed: 3, LastMissed: 6}) {
			t.Fatalf("lagged = %+v, want retention 3..6", lagged)
		}
		if !slices.Equal(seqs(got), seqRange(7, 10)) {
			t.Fatalf("after lagged got %v, want the oldest retained on: 7..10", seqs(got))
		}
	})

	t.Run("FromTime", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		v.inserts("a", "shop.orders", 1, 5)
		at := time.Now()
		last := v.inserts("a", "shop.orders", 6, 5)
		s := subscribe(t, v.e, events.Request{Start: events.StartTime, FromTime: at})
		if st := s.started(); st.Start != 6 {
			t.Fatalf("started = %+v, want 6 (the first event captured after the time)", st)
		}
		if got := s.until(last, nil); !slices.Equal(seqs(got), seqRange(6, 10)) {
			t.Fatalf("got %v", seqs(got))
		}
		// Before everything retained: from the oldest; after everything: live.
		early := subscribe(t, v.e, events.Request{Start: events.StartTime, FromTime: at.Add(-time.Hour)})
		if st := early.started(); st.Start != 1 {
			t.Fatalf("a time before the oldest event starts at %d, want 1", st.Start)
		}
		late := subscribe(t, v.e, events.Request{Start: events.StartTime, FromTime: time.Now().Add(time.Hour)})
		if st := late.started(); st.Start != 11 {
			t.Fatalf("a time after the last event starts at %d, want 11", st.Start)
		}
	})
}

func TestEngine_Subscribe_Filters(t *testing.T) {
	v := newEnv(t, outbox.Options{})
	v.appendEvents("shop",
		change("insert", "shop.orders", 1), // 1
		change("update", "shop.orders", 1, "updateDescription", bson.D{{Key: "updatedFields", Value: bson.D{{Key: "n", Value: 2}}}, {Key: "removedFields", Value: bson.A{"x"}}}), // 2
		change("delete", "shop.customers", 2), // 3
		change("insert", "app.cache", 3),      // 4
		change("rename", "shop.tmp", 0, "to", bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "archive"}}), // 5
		change("dropDatabase", "legacy", 0), // 6
	)
	last := v.appendEvents("crm", change("insert", "shop.orders", 9)) // 7
	for _, tc := range []struct {
		name string
		req  events.Request
		want []uint64
	}{
		{"Everything", events.Request{}, seqRange(1, 7)},
		{"Source", events.Request{Sources: []string{"crm"}}, []uint64{7}},
		{"Namespace", events.Request{Namespaces: []string{"shop.orders"}}, []uint64{1, 2, 7}},
		{"NamespaceGlob", events.Request{Namespaces: []string{"shop.*"}}, []uint64{1, 2, 3, 5, 7}},
		{"RenameTarget", events.Request{Namespaces: []string{"shop.archive"}}, []uint64{5}},
		{"WholeDatabase", events.Request{Namespaces: []string{"legacy"}}, []uint64{6}},
		{"Operations", events.Request{Operations: []string{"delete", "dropDatabase"}}, []uint64{3, 6}},
		{"Ignore", events.Request{Ignore: []string{"app.*", "shop.customers"}}, []uint64{1, 2, 5, 6, 7}},
		{"IgnoreWinsOverNamespaces", events.Request{Namespaces: []string{"*.*"}, Ignore: []string{"shop.orders"}}, []uint64{3, 4, 5, 6}},
		{"Combined", events.Request{Sources: []string{"shop"}, Namespaces: []string{"shop.*"}, Operations: []string{"insert", "update"}}, []uint64{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Start = events.StartSequence
			s := subscribe(t, v.e, tc.req)
			s.started()
			if got := seqs(s.until(last, nil)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("UpdateCarriesChangedFields", func(t *testing.T) {
		s := subscribe(t, v.e, events.Request{Start: events.StartSequence, FromSequence: 2, Operations: []string{"update"}})
		s.started()
		got := s.until(2, nil)
		u := got[0].Change.UpdateDescription
		if u == nil || u.UpdatedFields.Lookup("n").Int32() != 2 || !slices.Equal(u.RemovedFields, []string{"x"}) {
			t.Fatalf("update description = %+v", u)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, tc := range []struct {
			req   events.Request
			field string
		}{
			{events.Request{Namespaces: []string{".orders"}}, "namespaces[0]"},
			{events.Request{Ignore: []string{"ok.*", "[bad"}}, "ignore_namespaces[1]"},
			{events.Request{Operations: []string{"insrt"}}, "operation_types[0]"},
			{events.Request{Durable: "has space"}, "durable_name"},
			{events.Request{Sources: []string{""}}, "sources[0]"},
			{events.Request{Start: events.StartTime}, "from_time"},
		} {
			err := v.e.Subscribe(context.Background(), tc.req, func(events.Message) error { return nil })
			if !errors.Is(err, events.ErrInvalidRequest) || fieldOf(err) != tc.field {
				t.Errorf("Subscribe(%+v) = %v, want an invalid %s", tc.req, err, tc.field)
			}
		}
	})
}

// TestEngine_Subscribe_Stalled checks that a subscriber that stops reading
// delays nobody: capture appends, another subscriber receives everything,
// and the stalled one gets Lagged when it reads again.
func TestEngine_Subscribe_Stalled(t *testing.T) {
	t.Run("Retention", func(t *testing.T) {
		// A bound of about a hundred events: the stalled subscriber's hold
		// keeps events until the bound needs their space, then yields; if
		// it did not, the appends below would wait for it forever.
		v := newEnv(t, outbox.Options{MaxBytes: 20 << 10})
		if _, err := v.ob.RegisterSink(outbox.SinkCursor("sink")); err != nil {
			t.Fatal(err)
		}
		gate := make(chan struct{})
		stalled := subscribeGated(t, v.e, events.Request{}, gate)
		stalled.started()
		// The healthy subscriber is durable so that the sink's acks cannot
		// overtake it; it acks each event as it gets it.
		healthy := subscribe(t, v.e, events.Request{Durable: "healthy"})
		healthy.started()

		const n = 500
		var last uint64
		var got []events.Event
		for i := range n {
			last = v.inserts("a", "shop.orders", i, 1)
			got = append(got, healthy.until(last, nil)...)
			if _, err := v.e.Ack("healthy", last); err != nil {
				t.Fatal(err)
			}
			if err := v.ob.Ack(outbox.SinkCursor("sink"), last, 1); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(seqs(got), seqRange(1, n)) {
			t.Fatalf("the healthy subscriber got %d events, want all %d in order", len(got), n)
		}
		// Every append returned, and retention ran past the stalled
		// subscriber's hold (at 1) when the bound needed the space.
		if st := v.ob.Stats(); st.Last != n || st.Oldest <= 2 {
			t.Fatalf("outbox = %+v, want every event appended and retention past the stalled subscriber", st)
		}

		close(gate)
		var lagged []events.Lagged
		got = stalled.until(last, &lagged)
		if len(lagged) == 0 || lagged[0].Reason != events.LagRetention {
			t.Fatalf("the stalled subscriber got lagged %+v, want a retention lag", lagged)
		}
		// What it got is in order, with the lagged range as the only gap.
		want := seqRange(1, lagged[0].FirstMissed-1)
		want = append(want, seqRange(lagged[0].LastMissed+1, n)...)
		if !slices.Equal(seqs(got), want) {
			t.Fatalf("stalled subscriber got %v around lagged %+v", seqs(got), lagged[0])
		}
	})

	t.Run("MaxLag", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		gate := make(chan struct{})
		stalled := subscribeGated(t, v.e, events.Request{MaxLag: 10}, gate)
		stalled.started()
		healthy := subscribe(t, v.e, events.Request{})
		healthy.started()
		last := v.inserts("a", "shop.orders", 1, 100)
		if got := healthy.until(last, nil); len(got) != 100 {
			t.Fatalf("healthy subscriber got %d events, want 100", len(got))
		}
		close(gate)
		var lagged []events.Lagged
		got := stalled.until(last, &lagged)
		// It was 99 events behind when sending event 1: it skips to 100.
		if len(lagged) != 1 || lagged[0] != (events.Lagged{Reason: events.LagMaxLag, FirstMissed: 1, LastMissed: 100}) || len(got) != 0 {
			t.Fatalf("lagged = %+v, events %v; want one max-lag skip 1..100", lagged, seqs(got))
		}
		last = v.inserts("a", "shop.orders", 101, 1)
		if got := stalled.until(last, nil); !slices.Equal(seqs(got), []uint64{101}) {
			t.Fatalf("after the skip got %v, want 101", seqs(got))
		}
	})
}

func TestEngine_Subscribe_Durable(t *testing.T) {
	t.Run("ResumesAfterRestart", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		if _, err := v.ob.RegisterSink(outbox.SinkCursor("sink")); err != nil { // a sink that acks everything
			t.Fatal(err)
		}
		v.inserts("a", "shop.orders", 1, 5) // before the subscription: not sent (live)
		s := subscribe(t, v.e, events.Request{Durable: "app", Namespaces: []string{"shop.*"}})
		if st := s.started(); st.Start != 6 || st.Resumed {
			t.Fatalf("started = %+v, want a new subscription at 6", st)
		}
		last := v.inserts("a", "shop.orders", 6, 5)
		got := s.until(last, nil)
		if !slices.Equal(seqs(got), seqRange(6, 10)) {
			t.Fatalf("got %v", seqs(got))
		}
		if _, err := v.e.Ack("app", 8); err != nil { // 9 and 10 not handled yet
			t.Fatal(err)
		}
		s.cancel()
		if err := s.end(); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled stream ended with %v", err)
		}

		// While nobody is connected, and across a restart, more events
		// arrive and the other sink acks them all.
		last = v.inserts("a", "shop.orders", 11, 5)
		v.restart(outbox.Options{})
		if err := v.ob.Ack(outbox.SinkCursor("sink"), last, 0); err != nil {
			t.Fatal(err)
		}
		if st := v.ob.Stats(); st.Oldest != 9 {
			t.Fatalf("oldest = %d: the durable cursor (8) must hold retention after a restart", st.Oldest)
		}
		last = v.inserts("a", "shop.orders", 16, 1)

		again := subscribe(t, v.e, events.Request{Durable: "app", Namespaces: []string{"shop.*"}, Start: events.StartLive})
		if st := again.started(); st.Start != 9 || !st.Resumed {
			t.Fatalf("started = %+v, want resumed at 9 (after the ack; live is ignored)", st)
		}
		if got := again.until(last, nil); !slices.Equal(seqs(got), seqRange(9, 16)) {
			t.Fatalf("after the restart got %v, want 9..16: nothing lost", seqs(got))
		}
	})

	t.Run("NewStartsWhereAsked", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		last := v.inserts("a", "shop.orders", 1, 5)
		s := subscribe(t, v.e, events.Request{Durable: "replay", Start: events.StartSequence, FromSequence: 2})
		if st := s.started(); st.Start != 2 {
			t.Fatalf("started = %+v", st)
		}
		if got := s.until(last, nil); !slices.Equal(seqs(got), seqRange(2, 5)) {
			t.Fatalf("got %v", seqs(got))
		}
		sinks, _ := v.ob.Sinks()
		if c := sinks[outbox.SubscriptionCursor("replay").String()].Acked; c != 1 {
			t.Fatalf("cursor = %d, want 1 (before the first event asked for)", c)
		}
	})

	t.Run("Ack", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		v.inserts("a", "shop.orders", 1, 5)
		s := subscribe(t, v.e, events.Request{Durable: "acker", Start: events.StartSequence})
		s.started()
		st, err := v.e.Ack("acker", 3)
		if err != nil || st.Acked != 3 {
			t.Fatalf("Ack = %+v, %v", st, err)
		}
		if st, err := v.e.Ack("acker", 2); err != nil || st.Acked != 3 {
			t.Fatalf("acking backwards = %+v, %v; want a no-op", st, err)
		}
		if _, err := v.e.Ack("acker", 6); fieldOf(err) != "sequence" {
			t.Fatalf("acking past the last event = %v, want an invalid sequence", err)
		}
		if _, err := v.e.Ack("nobody", 1); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("Ack of an unknown subscription = %v", err)
		}
	})

	t.Run("CheckpointCoversFilteredEvents", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		s := subscribe(t, v.e, events.Request{Durable: "narrow", Namespaces: []string{"shop.orders"}})
		s.started()
		last := v.inserts("a", "other.things", 1, 20)
		m := s.next()
		if m.Checkpoint != last {
			t.Fatalf("got %+v, want a checkpoint at %d for the filtered events", m, last)
		}
		if _, err := v.e.Ack("narrow", m.Checkpoint); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("TakeOver", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		first := subscribe(t, v.e, events.Request{Durable: "app"})
		first.started()
		second := subscribe(t, v.e, events.Request{Durable: "app"})
		if !second.started().Resumed {
			t.Fatal("the second stream must resume the same subscription")
		}
		if err := first.end(); !errors.Is(err, events.ErrTakenOver) {
			t.Fatalf("first stream ended with %v, want ErrTakenOver", err)
		}
		last := v.inserts("a", "shop.orders", 1, 1)
		if got := second.until(last, nil); len(got) != 1 {
			t.Fatalf("the new stream got %v", seqs(got))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		if _, err := v.ob.RegisterSink(outbox.SinkCursor("sink")); err != nil {
			t.Fatal(err)
		}
		s := subscribe(t, v.e, events.Request{Durable: "gone"})
		s.started()
		last := v.inserts("a", "shop.orders", 1, 5)
		if err := v.ob.Ack(outbox.SinkCursor("sink"), last, 5); err != nil {
			t.Fatal(err)
		}
		if st := v.ob.Stats(); st.Oldest != 1 {
			t.Fatalf("oldest = %d, want 1: the subscription holds retention", st.Oldest)
		}
		if err := v.e.Delete("gone"); err != nil {
			t.Fatal(err)
		}
		if err := s.end(); !errors.Is(err, events.ErrDeleted) {
			t.Fatalf("stream ended with %v, want ErrDeleted", err)
		}
		if st := v.ob.Stats(); st.Oldest != 0 {
			t.Fatalf("after the delete retention should free everything: %+v", st)
		}
		if err := v.e.Delete("gone"); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("second delete = %v, want ErrNotFound", err)
		}
		if _, err := v.e.Ack("gone", 1); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("ack after delete = %v, want ErrNotFound", err)
		}
	})
}

func TestEngine_Close(t *testing.T) {
	t.Run("EndsStreams", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		s := subscribe(t, v.e, events.Request{})
		s.started()
		if err := v.e.Close(testwait.Context(t)); err != nil {
			t.Fatal(err)
		}
		if err := s.end(); !errors.Is(err, events.ErrClosed) {
			t.Fatalf("stream ended with %v, want ErrClosed", err)
		}
		err := v.e.Subscribe(context.Background(), events.Request{}, func(events.Message) error { return nil })
		if !errors.Is(err, events.ErrClosed) {
			t.Fatalf("Subscribe after Close = %v", err)
		}
	})

	// Close returns once no stream can read the outbox any more, so the
	// outbox may be closed next; a stream stuck in its send holds it.
	t.Run("WaitsForStreams", func(t *testing.T) {
		v := newEnv(t, outbox.Options{})
		started, sending, release, sent := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- v.e.Subscribe(context.Background(), events.Request{}, func(m events.Message) error {
				switch {
				case m.Started != nil:
					close(started)
				case m.Event != nil:
					close(sending)
					<-release
					close(sent)
				}
				return nil
			})
		}()
		recv := func(ch chan struct{}, what string) {
			t.Helper()
			select {
			case <-ch:
			case <-time.After(wait):
				t.Fatalf("no %s within the test's bound", what)
			}
		}
		recv(started, "Started message")
		v.inserts("a", "shop.orders", 1, 1)
		recv(sending, "event")
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		if err := v.e.Close(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Close with a stream in send = %v, want context.Canceled", err)
		}
		close(release)
		if err := v.e.Close(testwait.Context(t)); err != nil {
			t.Fatalf("Close after the send returned = %v", err)
		}
		// The send returned before the stream ended, so before Close could;
		// Subscribe returns right after (its caller sees that later).
		select {
		case <-sent:
		default:
			t.Fatal("Close returned before the stream did")
		}
		select {
		case err := <-done:
			if !errors.Is(err, events.ErrClosed) {
				t.Fatalf("stream ended with %v, want ErrClosed", err)
			}
		case <-time.After(wait):
			t.Fatal("Subscribe did not return after Close")
		}
	})
}

func TestEngine_Subscriptions(t *testing.T) {
	v := newEnv(t, outbox.Options{})
	v.inserts("a", "shop.orders", 1, 4)
	live := subscribe(t, v.e, events.Request{Namespaces: []string{"shop.*"}, Peer: "127.0.0.1:5000", Start: events.StartSequence})
	live.started()
	live.until(4, nil)
	durable := subscribe(t, v.e, events.Request{Durable: "away", Start: events.StartSequence})
	durable.started()
	if _, err := v.e.Ack("away", 1); err != nil {
		t.Fatal(err)
	}
	durable.cancel()
	durable.end()

	subs, err := v.e.Subscriptions()
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 {
		t.Fatalf("subscriptions = %+v, want the live one and the durable one", subs)
	}
	away, l := subs[0], subs[1]
	if away.Name != "away" || !away.Durable || away.Connected || away.Cursor != 1 || away.Backlog != 3 {
		t.Errorf("durable = %+v, want disconnected at 1 with backlog 3", away)
	}
	if !l.Connected || l.Durable || l.Peer != "127.0.0.1:5000" || l.Filter != "--ns shop.*" || l.Sent != 4 || l.Cursor != 4 || l.Backlog != 0 {
		t.Errorf("live = %+v", l)
	}
}
