// Package admin reports a running godwit's state: the godwit.admin.v1
// AdminService (`godwit status`), the gRPC health statuses of its sources
// and sinks, and Prometheus metrics of triggers and event subscriptions.
//
// # Basics
//
// Status composes one snapshot from the daemon (sources, sinks, outbox),
// the trigger manager and the event engine. URIs pass through
// logging.RedactURI: a password never leaves the daemon.
//
// WatchHealth keeps the gRPC health service in step with the daemon: the
// service "source/ID" of each source is SERVING while the source runs,
// "sink/ID" of each sink while it is not halted, and the overall service
// "" is NOT_SERVING while any source or sink is not (the same rule as
// /readyz).
//
// # Caveats
//
// Health follows the daemon by polling its status (every second by
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
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	pb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/status"
	"github.com/godwit-dev/godwit/trigger"
)

// Deps is what the service reports on. Triggers and Events may be nil.
type Deps struct {
	// Status is the running godwit's snapshot (runtime.Godwit.Status).
	Status func() status.Snapshot
	// Outbox is the outbox the snapshot's sources and sinks use.
	Outbox   Outbox
	Config   *config.Config
	Triggers *trigger.Manager
	Events   *events.Engine
}

// Outbox is what the service reads of the outbox besides the snapshot.
type Outbox interface {
	Path() string
	Paused() int
	Sources() (map[string]outbox.SourceState, error)
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
	st := s.d.Status()
	ob := s.d.Outbox
	res := &pb.StatusResponse{Time: timestamppb.New(now), Problems: httpapi.NotReady(st),
		Outbox: &pb.OutboxStatus{Path: ob.Path(), Bytes: st.Outbox.Bytes, MaxBytes: st.Outbox.MaxBytes,
			FileBytes: st.Outbox.FileBytes, OldestSequence: st.Outbox.Oldest, LastSequence: st.Outbox.Last,
			Paused: ob.Paused() > 0}}

	uris := map[string]string{}
	sinkTypes := map[string]string{}
	if s.d.Config != nil {
		for _, sc := range s.d.Config.Sources {
			uris[sc.ID] = logging.RedactURI(sc.URI)
		}
		for _, sc := range s.d.Config.Sinks {
			sinkTypes[sc.ID] = sc.Type
		}
	}
	stored, _ := ob.Sources()
	for _, src := range st.Sources {
		p := &pb.SourceStatus{Id: src.ID, Uri: uris[src.ID], State: string(src.State), Reason: src.Reason,
			LastError: logging.RedactText(src.LastError), Captured: src.Captured, Filtered: src.Filtered,
			LagSeconds: src.LagSeconds, TokenTime: timeOrNil(src.TokenTime)}
		if ct := stored[src.ID].LastClusterTime; ct != 0 {
			p.LastClusterTime = timestamppb.New(time.Unix(int64(ct), 0))
		}
		res.Sources = append(res.Sources, p)
	}
	for _, sk := range st.Sinks {
		res.Sinks = append(res.Sinks, &pb.SinkStatus{Id: sk.ID, Type: sinkTypes[sk.ID], Acked: sk.Acked, Backlog: sk.Backlog,
			Delivered: sk.Delivered, DeadLetters: sk.Parked, Halted: sk.Halted, LastError: logging.RedactText(sk.LastError),
			Connection: logging.RedactText(sk.Connection)})
	}
	for _, p := range st.Pipelines {
		var lag uint64
		if st.Outbox.Last > p.Seq {
			lag = st.Outbox.Last - p.Seq
		}
		res.Pipelines = append(res.Pipelines, &pb.PipelineStatus{Id: p.Pipeline, Source: p.Source,
			Target: logging.RedactURI(p.Target), Phase: p.Phase, Namespace: p.Namespace, Copied: p.Copied,
			Total: p.Total, Applied: p.Applied, Conflicts: p.Conflicts, LagEvents: lag,
			LagSeconds: p.LagSeconds, LastError: logging.RedactText(p.LastError)})
	}
	if m := s.d.Triggers; m != nil {
		triggers, err := m.QueryTriggers(ctx, trigger.TriggerQuery{})
		if err != nil {
			res.Problems = append(res.Problems, "triggers: "+err.Error())
		}
		for _, t := range triggers {
			tst := m.Status(t)
			p := &pb.TriggerStatus{Id: t.ID, Name: t.Name, UserId: t.UserID, Type: string(t.Type), State: string(tst.State),
				Invocations: tst.Invocations, DeadLetters: tst.DeadLetters, LastError: tst.LastError, LastFired: timeOrNil(tst.LastFired),
				Acked: tst.Acked, Backlog: tst.Backlog, LogDroppedLines: tst.LogDroppedLines, LogDroppedBytes: tst.LogDroppedBytes}
			res.Triggers = append(res.Triggers, p)
		}
	}
	if e := s.d.Events; e != nil {
		subs, err := e.Subscriptions()
		if err != nil {
			res.Problems = append(res.Problems, "subscriptions: "+err.Error())
		}
		for _, sub := range subs {
			res.Subscriptions = append(res.Subscriptions, &pb.SubscriptionStatus{Name: sub.Name, Durable: sub.Durable,
				Connected: sub.Connected, Peer: sub.Peer, Filter: sub.Filter, Cursor: sub.Cursor, Backlog: sub.Backlog,
				Sent: sub.Sent, Lagged: sub.Lagged, LastError: sub.LastError, ConnectedAt: timeOrNil(sub.ConnectedAt)})
		}
	}
	return res, nil
}

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
