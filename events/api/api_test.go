package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
	"github.com/godwit-dev/godwit/runtime/runtimetest"
)

// sub is a Subscribe stream.
type sub struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[pb.SubscribeResponse]
	cancel context.CancelFunc
}

func subscribe(t *testing.T, conn *grpc.ClientConn, req *pb.SubscribeRequest) *sub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return &sub{t: t, stream: stream, cancel: cancel}
}

// recv returns the next message; a stream error fails the test.
func (s *sub) recv() *pb.SubscribeResponse {
	s.t.Helper()
	m, err := s.recvErr()
	if err != nil {
		s.t.Fatalf("stream: %v", err)
	}
	return m
}

func (s *sub) recvErr() (*pb.SubscribeResponse, error) {
	type res struct {
		m   *pb.SubscribeResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.stream.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(runtimetest.Wait):
		s.t.Fatal("no message within the test's bound")
		return nil, nil
	}
}

func (s *sub) started() *pb.Started {
	s.t.Helper()
	m := s.recv()
	if m.GetStarted() == nil {
		s.t.Fatalf("first message %v, want started", m)
	}
	return m.GetStarted()
}

// events collects events until one (or a checkpoint) reaches last.
func (s *sub) events(last uint64) []*pb.ChangeEvent {
	s.t.Helper()
	var out []*pb.ChangeEvent
	for {
		m := s.recv()
		switch {
		case m.GetEvent() != nil:
			out = append(out, m.GetEvent())
			if m.GetEvent().Sequence >= last {
				return out
			}
		case m.GetCheckpoint() != nil:
			if m.GetCheckpoint().Sequence >= last {
				return out
			}
		default:
			s.t.Fatalf("unexpected %v", m)
		}
	}
}

func seqs(evs []*pb.ChangeEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Sequence)
	}
	return out
}

// jsonOf decodes a relaxed Extended JSON document for comparisons.
func jsonOf(t *testing.T, d *pb.Document) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(d.GetJson()), &m); err != nil {
		t.Fatalf("document %q: %v", d.GetJson(), err)
	}
	return m
}

// write runs fn against the source and waits until capture appended the
// events it made (n of them).
func write(t *testing.T, srv *runtimetest.Server, n uint64, fn func(ctx context.Context, db lungo.IDatabase)) uint64 {
	t.Helper()
	ob := srv.Outbox()
	want := ob.LastSeq() + n
	fn(context.Background(), runtimetest.Source(t, srv.Dir, "source.lungo").Database("shop"))
	ctx, cancel := context.WithTimeout(context.Background(), runtimetest.Wait)
	defer cancel()
	if err := ob.Wait(ctx, want-1); err != nil {
		t.Fatalf("capture did not reach %d: %v", want, err)
	}
	return want
}

func insert(coll string, docs ...bson.M) func(context.Context, lungo.IDatabase) {
	return func(ctx context.Context, db lungo.IDatabase) {
		for _, d := range docs {
			if _, err := db.Collection(coll).InsertOne(ctx, d); err != nil {
				panic(err)
			}
		}
	}
}

func TestService_Subscribe(t *testing.T) {
	// keep_acked: replays need the events the jsonl sink acknowledged.
	srv := runtimetest.Start(t, t.TempDir(), runtimetest.Config+"outbox: {keep_acked: true}\n")
	conn := srv.Dial(t)

	t.Run("Live", func(t *testing.T) {
		s := subscribe(t, conn, &pb.SubscribeRequest{Namespaces: []string{"shop.live"}})
		st := s.started()
		last := write(t, srv, 4, func(ctx context.Context, db lungo.IDatabase) {
			c := db.Collection("live")
			_, _ = c.InsertOne(ctx, bson.M{"_id": 1, "n": 1, "name": "a"})
			_, _ = c.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"n": 2}, "$unset": bson.M{"name": ""}})
			_, _ = c.ReplaceOne(ctx, bson.M{"_id": 1}, bson.M{"n": 3})
			_, _ = c.DeleteOne(ctx, bson.M{"_id": 1})
		})
		evs := s.events(last)
		if len(evs) != 4 || evs[0].Sequence != st.StartSequence || evs[3].Sequence != last {
			t.Fatalf("events %v after start %d, want 4 ending at %d", seqs(evs), st.StartSequence, last)
		}
		ins, upd, rep, del := evs[0], evs[1], evs[2], evs[3]
		for i, e := range evs {
			if e.Source != "shop" || e.Ns.GetDb() != "shop" || e.Ns.GetColl() != "live" || e.ClusterTime.GetSeconds() == 0 ||
				e.CapturedAt == nil || jsonOf(t, e.DocumentKey)["_id"] != 1.0 {
				t.Errorf("event %d lacks common fields: %v", i, e)
			}
		}
		if ins.OperationType != "insert" || jsonOf(t, ins.FullDocument)["name"] != "a" {
			t.Errorf("insert = %v", ins)
		}
		if upd.OperationType != "update" || jsonOf(t, upd.UpdatedFields)["n"] != 2.0 || !slices.Equal(upd.RemovedFields, []string{"name"}) {
			t.Errorf("update = %v", upd)
		}
		if rep.OperationType != "replace" || jsonOf(t, rep.FullDocument)["n"] != 3.0 {
			t.Errorf("replace = %v", rep)
		}
		if del.OperationType != "delete" || del.FullDocument != nil {
			t.Errorf("delete = %v", del)
		}
	})

	t.Run("FromSequenceAndTime", func(t *testing.T) {
		first := write(t, srv, 1, insert("replay", bson.M{"_id": 1}))
		at := time.Now()
		last := write(t, srv, 2, insert("replay", bson.M{"_id": 2}, bson.M{"_id": 3}))
		bySeq := subscribe(t, conn, &pb.SubscribeRequest{Namespaces: []string{"shop.replay"},
			Start: &pb.SubscribeRequest_FromSequence{FromSequence: first}})
		if st := bySeq.started(); st.StartSequence != first {
			t.Fatalf("started = %v", st)
		}
		if got := seqs(bySeq.events(last)); !slices.Equal(got, []uint64{first, last - 1, last}) {
			t.Fatalf("from sequence %d got %v", first, got)
		}
		byTime := subscribe(t, conn, &pb.SubscribeRequest{Namespaces: []string{"shop.replay"},
			Start: &pb.SubscribeRequest_FromTime{FromTime: timestamppb.New(at)}})
		if st := byTime.started(); st.StartSequence != last-1 {
			t.Fatalf("from time: started = %v, want %d", st, last-1)
		}
		if got := seqs(byTime.events(last)); !slices.Equal(got, []uint64{last - 1, last}) {
			t.Fatalf("from time got %v", got)
		}
	})

	t.Run("Filters", func(t *testing.T) {
		s := subscribe(t, conn, &pb.SubscribeRequest{
			Start:            &pb.SubscribeRequest_Live{Live: true},
			Sources:          []string{"shop"},
			Namespaces:       []string{"shop.f_*"},
			OperationTypes:   []string{"insert"},
			IgnoreNamespaces: []string{"shop.f_mine"}, // where this subscriber writes
		})
		s.started()
		last := write(t, srv, 4, func(ctx context.Context, db lungo.IDatabase) {
			_, _ = db.Collection("f_orders").InsertOne(ctx, bson.M{"_id": 1})                                 // sent
			_, _ = db.Collection("f_orders").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"x": 1}}) // op
			_, _ = db.Collection("f_mine").InsertOne(ctx, bson.M{"_id": 1})                                   // ignored
			_, _ = db.Collection("other").InsertOne(ctx, bson.M{"_id": 1})                                    // namespace
		})
		evs := s.events(last)
		if len(evs) != 1 || evs[0].Ns.GetColl() != "f_orders" || evs[0].OperationType != "insert" {
			t.Fatalf("filtered stream got %v, want only the insert into shop.f_orders", evs)
		}
	})

	t.Run("Encodings", func(t *testing.T) {
		last := write(t, srv, 1, insert("enc", bson.M{"_id": 1, "n": int64(5)}))
		for _, tc := range []struct {
			enc  pb.Encoding
			want func(*pb.Document) bool
		}{
			{pb.Encoding_ENCODING_CANONICAL_JSON, func(d *pb.Document) bool { return strings.Contains(d.Json, `"$numberLong":"5"`) }},
			{pb.Encoding_ENCODING_BSON, func(d *pb.Document) bool { return bson.Raw(d.Bson).Lookup("n").Int64() == 5 && d.Json == "" }},
		} {
			s := subscribe(t, conn, &pb.SubscribeRequest{Encoding: tc.enc, IncludeRaw: true, Start: &pb.SubscribeRequest_FromSequence{FromSequence: last}})
			s.started()
			e := s.events(last)[0]
			if !tc.want(e.FullDocument) || e.Raw == nil {
				t.Errorf("%s: full document %v, raw %v", tc.enc, e.FullDocument, e.Raw)
			}
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, tc := range []struct {
			req   *pb.SubscribeRequest
			field string
		}{
			{&pb.SubscribeRequest{Namespaces: []string{".x"}}, "namespaces[0]"},
			{&pb.SubscribeRequest{OperationTypes: []string{"upsert"}}, "operation_types[0]"},
			{&pb.SubscribeRequest{DurableName: "no spaces"}, "durable_name"},
			{&pb.SubscribeRequest{Encoding: 42}, "encoding"},
		} {
			_, err := subscribe(t, conn, tc.req).recvErr()
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field) {
				t.Errorf("Subscribe(%v) = %v, want InvalidArgument naming %s", tc.req, err, tc.field)
			}
		}
	})
}

// TestService_Subscribe_Stalled: a subscriber that stops reading while big
// events arrive fills its gRPC flow-control window and blocks its stream;
// capture and another subscriber go on, and the stalled one reads Lagged
// when it reads again.
func TestService_Subscribe_Stalled(t *testing.T) {
	// keep_acked takes retention out of the picture: only max_lag skips.
	srv := runtimetest.Start(t, t.TempDir(), runtimetest.Config+"outbox: {keep_acked: true}\n")
	// A fixed 64 KiB window (it disables gRPC's window growth) bounds what
	// the transport buffers for the stalled client to a few events.
	small := srv.Dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	const maxLag = 20
	stalled := subscribe(t, small, &pb.SubscribeRequest{MaxLag: maxLag})
	stalled.started()
	healthy := subscribe(t, srv.Dial(t), &pb.SubscribeRequest{})
	healthy.started()

	const n = 50
	big := strings.Repeat("x", 16<<10)
	// Spread over collections: the embedded engine copies a collection on
	// every write.
	last := write(t, srv, n, func(ctx context.Context, db lungo.IDatabase) {
		for i := range n {
			if _, err := db.Collection(fmt.Sprintf("big%d", i%10)).InsertOne(ctx, bson.M{"_id": i, "pad": big}); err != nil {
				panic(err)
			}
		}
	})
	if got := healthy.events(last); len(got) != n {
		t.Fatalf("the healthy subscriber got %d events, want %d", len(got), n)
	}
	if c := srv.Status().Sources[0].Captured; c != last {
		t.Fatalf("captured %d, want %d while a subscriber stalls", c, last)
	}

	// It reads on: events and skips, in order, without overlap, the last
	// skip reaching the newest event.
	var got []uint64
	next := last - n + 1 // the first event of the workload
	for next <= last {
		m := stalled.recv()
		if e := m.GetEvent(); e != nil {
			if e.Sequence != next {
				t.Fatalf("event %d, want %d", e.Sequence, next)
			}
			got = append(got, e.Sequence)
			next++
			continue
		}
		l := m.GetLagged()
		if l == nil || l.Reason != pb.Lagged_REASON_MAX_LAG || l.FirstMissed != next || l.ResumeSequence != l.LastMissed+1 {
			t.Fatalf("got %v at %d", m, next)
		}
		next = l.ResumeSequence
	}
	if len(got) > n-maxLag {
		t.Fatalf("the stalled subscriber got %d events: it never lagged", len(got))
	}
	// It goes on from the newest event.
	next = write(t, srv, 1, insert("big", bson.M{"_id": n}))
	if evs := stalled.events(next); !slices.Equal(seqs(evs), []uint64{next}) {
		t.Fatalf("after lagged got %v, want %d", seqs(evs), next)
	}
}

// TestService_Durable_ResumesAfterRestart stops the daemon with unacked
// events, writes while it is down, and restarts it: the durable
// subscription gets everything after its last ack, although the jsonl sink
// acked all of it (retention waits for the subscription).
func TestService_Durable_ResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	srv := runtimetest.Start(t, dir, runtimetest.Config)
	conn := srv.Dial(t)
	s := subscribe(t, conn, &pb.SubscribeRequest{DurableName: "app"})
	if st := s.started(); st.Resumed {
		t.Fatalf("a new subscription resumed: %v", st)
	}
	last := write(t, srv, 3, insert("orders", bson.M{"_id": 1}, bson.M{"_id": 2}, bson.M{"_id": 3}))
	evs := s.events(last)
	client := pb.NewEventServiceClient(conn)
	ack, err := client.Ack(context.Background(), &pb.AckRequest{DurableName: "app", Sequence: evs[1].Sequence})
	if err != nil || ack.Acked != evs[1].Sequence || ack.Backlog != 1 {
		t.Fatalf("Ack = %v, %v", ack, err)
	}

	srv.Stop()
	if _, err := s.recvErr(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after the daemon stopped: %v, want UNAVAILABLE", err)
	}
	// Written while godwit is down: capture finds it at restart.
	src := runtimetest.Source(t, dir, "source.lungo")
	for i := 4; i <= 5; i++ {
		if _, err := src.Database("shop").Collection("orders").InsertOne(context.Background(), bson.M{"_id": i}); err != nil {
			t.Fatal(err)
		}
	}

	srv = runtimetest.Start(t, dir, runtimetest.Config)
	ctx, cancel := context.WithTimeout(context.Background(), runtimetest.Wait)
	defer cancel()
	if err := srv.Outbox().Wait(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	if err := srv.Runners()[0].WaitAcked(ctx, last+2); err != nil {
		t.Fatal(err)
	}
	again := subscribe(t, srv.Dial(t), &pb.SubscribeRequest{DurableName: "app"})
	if st := again.started(); !st.Resumed || st.StartSequence != evs[2].Sequence {
		t.Fatalf("started = %v, want resumed after the ack at %d", st, evs[1].Sequence)
	}
	var ids []any
	for _, e := range again.events(last + 2) {
		ids = append(ids, jsonOf(t, e.DocumentKey)["_id"])
	}
	if !slices.Equal(ids, []any{3.0, 4.0, 5.0}) {
		t.Fatalf("after the restart got _ids %v, want 3 (unacked), 4 and 5 (written while down)", ids)
	}
}

func TestService_DeleteSubscription(t *testing.T) {
	srv := runtimetest.Start(t, t.TempDir(), runtimetest.Config)
	conn := srv.Dial(t)
	client := pb.NewEventServiceClient(conn)
	s := subscribe(t, conn, &pb.SubscribeRequest{DurableName: "old"})
	s.started()
	if _, err := client.DeleteSubscription(context.Background(), &pb.DeleteSubscriptionRequest{DurableName: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.recvErr(); status.Code(err) != codes.Aborted {
		t.Fatalf("stream of a deleted subscription: %v, want ABORTED", err)
	}
	_, err := client.DeleteSubscription(context.Background(), &pb.DeleteSubscriptionRequest{DurableName: "old"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.HasPrefix(st.Message(), "durable_name") {
		t.Fatalf("second delete = %v, want NotFound", err)
	}
	if _, err := client.Ack(context.Background(), &pb.AckRequest{DurableName: "old", Sequence: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("ack of a deleted subscription = %v, want NotFound", err)
	}
}
