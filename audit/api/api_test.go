package api_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/audit/api"
	"github.com/godwit-dev/godwit/internal/testwait"
	pb "github.com/godwit-dev/godwit/proto/godwit/audit/v1"
	"github.com/godwit-dev/godwit/rpc"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// env is an audit sink writing a log and the service serving it over gRPC.
type env struct {
	sink   *audit.Sink
	client pb.AuditServiceClient
	stop   context.CancelFunc // ends the service's Run: the daemon stops
}

func newEnv(t *testing.T) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	sink, err := audit.Open(audit.Config{Path: path}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close(context.Background()) })
	svc := api.New(map[string]string{"audit": path}, api.WithPoll(5*time.Millisecond))
	srv, err := rpc.New(rpc.Config{Addr: "127.0.0.1:0"}, zerolog.Nop(), svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ctx) }()
	go func() { served <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-served; err != nil {
				t.Error(err)
			}
		}
	})
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{sink: sink, client: pb.NewAuditServiceClient(conn), stop: cancel}
}

func (v *env) record(t *testing.T, ev audit.SystemEvent) {
	t.Helper()
	if err := v.sink.RecordSystem(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

// query returns the classes of the records a query streams, and its error.
func query(t *testing.T, c pb.AuditServiceClient, req *pb.QueryRequest) ([]*pb.Record, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	stream, err := c.Query(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*pb.Record
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

func classes(recs []*pb.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Class)
	}
	return out
}

func TestService_Query(t *testing.T) {
	v := newEnv(t)
	v.record(t, audit.SystemEvent{Class: audit.ClassDaemonStart, Time: t0})
	v.record(t, audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: "shop", Namespace: "shop.orders", Message: "history lost", Time: t0.Add(time.Minute)})
	v.record(t, audit.SystemEvent{Class: audit.ClassCaptureSkipped, Source: "crm", Namespace: "crm.users", Time: t0.Add(2 * time.Minute)})
	v.record(t, audit.SystemEvent{Class: audit.ClassDaemonStop, Time: t0.Add(3 * time.Minute)})

	for _, tc := range []struct {
		name string
		req  *pb.QueryRequest
		want []string
	}{
		{"All", &pb.QueryRequest{}, []string{"daemon_start", "capture_halted", "capture_skipped", "daemon_stop"}},
		{"TimeRange", &pb.QueryRequest{Since: timestamppb.New(t0.Add(time.Minute)), Until: timestamppb.New(t0.Add(3 * time.Minute))},
			[]string{"capture_halted", "capture_skipped"}},
		{"Namespace", &pb.QueryRequest{Namespaces: []string{"shop.*"}}, []string{"capture_halted"}},
		{"Class", &pb.QueryRequest{Classes: []string{"daemon_start", "daemon_stop"}}, []string{"daemon_start", "daemon_stop"}},
		{"Severity", &pb.QueryRequest{MinSeverity: "critical"}, []string{"capture_skipped"}},
		{"Source", &pb.QueryRequest{Source: "crm"}, []string{"capture_skipped"}},
		{"NamedSink", &pb.QueryRequest{Sink: "audit", Classes: []string{"daemon_stop"}}, []string{"daemon_stop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := query(t, v.client, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := classes(recs); !slices.Equal(got, tc.want) {
				t.Fatalf("classes = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("RecordCarriesItsLine", func(t *testing.T) {
		recs, err := query(t, v.client, &pb.QueryRequest{Source: "shop"})
		if err != nil || len(recs) != 1 {
			t.Fatalf("%v %v", recs, err)
		}
		r := recs[0]
		if r.Index != 2 || r.Severity != "high" || r.Ns.GetDb() != "shop" || r.Ns.GetColl() != "orders" || r.Message != "history lost" ||
			!r.Time.AsTime().Equal(t0.Add(time.Minute)) || len(r.Hash) != 64 {
			t.Fatalf("record = %v", r)
		}
		// The line is the log's own: it decodes to the same record and hash.
		dec, err := audit.DecodeLine([]byte(r.Line))
		if err != nil || dec.Hash != r.Hash || dec.Index != r.Index {
			t.Fatalf("line %q decodes to %+v, %v", r.Line, dec, err)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, tc := range []struct {
			req   *pb.QueryRequest
			code  codes.Code
			field string
		}{
			{&pb.QueryRequest{Namespaces: []string{".x"}}, codes.InvalidArgument, "namespaces[0]"},
			{&pb.QueryRequest{MinSeverity: "urgent"}, codes.InvalidArgument, "min_severity"},
			{&pb.QueryRequest{Sink: "events"}, codes.NotFound, "sink"},
		} {
			_, err := query(t, v.client, tc.req)
			if st, _ := status.FromError(err); st.Code() != tc.code || !strings.HasPrefix(st.Message(), tc.field) {
				t.Errorf("Query(%v) = %v, want %s naming %s", tc.req, err, tc.code, tc.field)
			}
		}
	})
}

func TestService_Query_Follow(t *testing.T) {
	v := newEnv(t)
	v.record(t, audit.SystemEvent{Class: audit.ClassDaemonStart, Time: t0})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	stream, err := v.client.Query(ctx, &pb.QueryRequest{Follow: true, MinSeverity: "high"})
	if err != nil {
		t.Fatal(err)
	}
	v.record(t, audit.SystemEvent{Class: audit.ClassDaemonStop, Time: t0}) // low: filtered
	v.record(t, audit.SystemEvent{Class: audit.ClassResync, Source: "shop", Time: t0})
	r, err := stream.Recv()
	if err != nil || r.Class != audit.ClassResync || r.Index != 3 {
		t.Fatalf("followed record = %v, %v; want the resync (index 3)", r, err)
	}

	// The daemon stops: the follow stream ends instead of holding it up.
	v.stop()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after the daemon stopped Recv = %v, want UNAVAILABLE", err)
	}
}

func TestService_Query_NoAuditSink(t *testing.T) {
	svc := api.New(nil)
	srv, err := rpc.New(rpc.Config{Addr: "127.0.0.1:0"}, zerolog.Nop(), svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = query(t, pb.NewAuditServiceClient(conn), &pb.QueryRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "type: audit") {
		t.Fatalf("Query without audit sinks = %v", err)
	}
}
