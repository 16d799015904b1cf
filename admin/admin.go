// Package admin reports a running godwit's state: the godwit.admin.v1
// AdminService (`godwit status`), the gRPC health statuses of its sources
// and sinks, and Prometheus metrics of triggers and event subscriptions.
//
// # Basics
//
// Status and the Collector map one status.Report, which the runtime
// assembles (sources, sinks, pipelines, outbox, triggers, subscriptions);
// admin only translates it. URIs pass through logging.RedactURI: a
// password never leaves godwit.
//
// WatchHealth keeps the gRPC health service in step with godwit: the
// service "source/ID" of each source is SERVING while the source runs,
// "sink/ID" of each sink while it is not halted, and the overall service
// "" is NOT_SERVING while any source or sink is not (the same rule as
// /readyz).
//
// # Caveats
//
// Health follows godwit by polling its status snapshot (every second by
// default): a halt shows up within one interval. Status lists every user's
// triggers and subscriptions: with API tokens, only admins may call it.
package admin

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/logging"
	pb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/status"
)

// Deps is what the service reports on: functions of the running godwit
// (runtime.Godwit's Status and Report).
type Deps struct {
	// Status is the data path's snapshot, which the health service polls.
	Status func() status.Snapshot
	// Report is the snapshot with the triggers and subscriptions: what
	// Status (the RPC) and the Collector map. Nil reports nothing.
	Report func(context.Context) status.Report
}

// Service implements AdminService.
type Service struct {
	pb.UnimplementedAdminServiceServer
	d Deps
}

// New returns the service over d.
func New(d Deps) *Service { return &Service{d: d} }

// Register implements rpc.Service.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterAdminServiceServer(r, s) }

// Names implements rpc.Service.
func (s *Service) Names() []string { return []string{pb.AdminService_ServiceDesc.ServiceName} }

var _ rpc.Service = (*Service)(nil)

// Status implements AdminService.
func (s *Service) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if id, ok := auth.FromContext(ctx); ok && !id.IsAdmin() {
		return nil, grpcstatus.Errorf(codes.PermissionDenied, "status is for admins: user %q has the %s role", id.User, id.Role)
	}
	now := time.Now()
	r := s.report(ctx)
	st := r.Snapshot
	res := &pb.StatusResponse{Time: timestamppb.New(now), Problems: httpapi.NotReady(st),
		Outbox: &pb.OutboxStatus{Path: r.OutboxPath, Bytes: st.Outbox.Bytes, MaxBytes: st.Outbox.MaxBytes,
			FileBytes: st.Outbox.FileBytes, OldestSequence: st.Outbox.Oldest, LastSequence: st.Outbox.Last,
			Paused: r.OutboxPaused}}
	for _, src := range st.Sources {
		res.Sources = append(res.Sources, &pb.SourceStatus{Id: src.ID, Uri: src.URI, State: string(src.State), Reason: src.Reason,
			LastError: logging.RedactText(src.LastError), Captured: src.Captured, Filtered: src.Filtered,
			LagSeconds: src.LagSeconds, TokenTime: timeOrNil(src.TokenTime), LastClusterTime: timeOrNil(src.LastClusterTime)})
	}
	for _, sk := range st.Sinks {
		res.Sinks = append(res.Sinks, &pb.SinkStatus{Id: sk.ID, Type: sk.Type, Acked: sk.Acked, Backlog: sk.Backlog,
			Delivered: sk.Delivered, DeadLetters: sk.Parked, Halted: sk.Halted, LastError: logging.RedactText(sk.LastError),
			Connection: logging.RedactText(sk.Connection)})
	}
	for _, p := range st.Pipelines {
		var lag uint64
		if st.Outbox.Last > p.Seq {
			lag = st.Outbox.Last - p.Seq
		}
		res.Pipelines = append(res.Pipelines, &pb.PipelineStatus{Id: p.Pipeline, Source: p.Source,
			Target: logging.RedactURI(p.Target), Phase: string(p.Phase), Namespace: p.Namespace, Copied: p.Copied,
			Total: p.Total, Applied: p.Applied, Conflicts: p.Conflicts, LagEvents: lag,
			LagSeconds: p.LagSeconds, LastError: logging.RedactText(p.LastError)})
	}
	if r.TriggersErr != nil {
		res.Problems = append(res.Problems, "triggers: "+r.TriggersErr.Error())
	}
	for _, t := range r.Triggers {
		res.Triggers = append(res.Triggers, &pb.TriggerStatus{Id: t.ID, Name: t.Name, UserId: t.UserID, Type: string(t.Type), State: string(t.State),
			Invocations: t.Invocations, DeadLetters: t.DeadLetters, LastError: t.LastError, LastFired: timeOrNil(t.LastFired),
			Acked: t.Acked, Backlog: t.Backlog, LogDroppedLines: t.LogDroppedLines, LogDroppedBytes: t.LogDroppedBytes})
	}
	if r.SubscriptionsErr != nil {
		res.Problems = append(res.Problems, "subscriptions: "+r.SubscriptionsErr.Error())
	}
	for _, sub := range r.Subscriptions {
		res.Subscriptions = append(res.Subscriptions, &pb.SubscriptionStatus{Name: sub.Name, Durable: sub.Durable,
			Connected: sub.Connected, Peer: sub.Peer, Filter: sub.Filter, Cursor: sub.Cursor, Backlog: sub.Backlog,
			Sent: sub.Sent, Lagged: sub.Lagged, LastError: sub.LastError, ConnectedAt: timeOrNil(sub.ConnectedAt)})
	}
	return res, nil
}

// report returns the running godwit's report (empty without one).
func (s *Service) report(ctx context.Context) status.Report {
	if s.d.Report == nil {
		return status.Report{}
	}
	return s.d.Report(ctx)
}

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
