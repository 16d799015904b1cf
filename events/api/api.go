// Package api serves the godwit.event.v1 EventService over an
// events.Engine. Register it with rpc.New:
//
//	srv, err := rpc.New(cfg, log, api.New(engine))
//
// With API tokens, a user (not an admin) sees only events of the sources
// and namespaces its allow-list admits, and its durable subscriptions are
// its own (stored as "USER.NAME").
//
// Errors map to gRPC codes: a bad field is InvalidArgument (the message
// starts with the field's name), an unknown durable subscription NotFound,
// a stream ended by a newer stream of the same durable subscription or by
// its deletion Aborted, a daemon that is stopping Unavailable.
package api

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/events"
	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
	"github.com/godwit-dev/godwit/rpc"
)

// Service implements EventService.
type Service struct {
	pb.UnimplementedEventServiceServer
	e *events.Engine
}

// New returns the service for e.
func New(e *events.Engine) *Service { return &Service{e: e} }

// Register implements rpc.Service.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterEventServiceServer(r, s) }

// Names implements rpc.Service.
func (s *Service) Names() []string { return []string{pb.EventService_ServiceDesc.ServiceName} }

var _ rpc.Service = (*Service)(nil)

// Subscribe implements EventService.
func (s *Service) Subscribe(req *pb.SubscribeRequest, stream grpc.ServerStreamingServer[pb.SubscribeResponse]) error {
	ctx := stream.Context()
	name, err := scoped(ctx, req.GetDurableName())
	if err != nil {
		return err
	}
	r := events.Request{
		Sources: req.GetSources(), Namespaces: req.GetNamespaces(), Operations: req.GetOperationTypes(),
		Ignore: req.GetIgnoreNamespaces(), Durable: name, MaxLag: req.GetMaxLag(),
	}
	switch st := req.GetStart().(type) {
	case *pb.SubscribeRequest_FromSequence:
		r.Start, r.FromSequence = events.StartSequence, st.FromSequence
	case *pb.SubscribeRequest_FromTime:
		if err := st.FromTime.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "from_time: %v", err)
		}
		r.Start, r.FromTime = events.StartTime, st.FromTime.AsTime()
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.Peer = p.Addr.String()
	}
	if id, ok := auth.FromContext(ctx); ok {
		r.Peer = id.User + "@" + r.Peer
		if !id.IsAdmin() && !id.Allow.Unrestricted() {
			allow := id.Allow
			r.Visible = func(source string, ns change.Namespace) bool { return allow.Source(source) && allow.Namespace(ns) }
		}
	}
	enc := encoder{format: req.GetEncoding(), raw: req.GetIncludeRaw()}
	if _, ok := pb.Encoding_name[int32(enc.format)]; !ok {
		return status.Errorf(codes.InvalidArgument, "encoding: unknown value %d", enc.format)
	}
	err = s.e.Subscribe(ctx, r, func(m events.Message) error {
		return stream.Send(enc.message(m))
	})
	return toStatus(err)
}

// Ack implements EventService.
func (s *Service) Ack(ctx context.Context, req *pb.AckRequest) (*pb.AckResponse, error) {
	name, err := scoped(ctx, req.GetDurableName())
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "durable_name: required")
	}
	st, err := s.e.Ack(name, req.GetSequence())
	if err != nil {
		return nil, toStatus(err)
	}
	res := &pb.AckResponse{Acked: st.Acked}
	if subs, err := s.e.Subscriptions(); err == nil {
		for _, sub := range subs {
			if sub.Durable && sub.Name == name {
				res.Backlog = sub.Backlog
			}
		}
	}
	return res, nil
}

// DeleteSubscription implements EventService.
func (s *Service) DeleteSubscription(ctx context.Context, req *pb.DeleteSubscriptionRequest) (*pb.DeleteSubscriptionResponse, error) {
	name, err := scoped(ctx, req.GetDurableName())
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "durable_name: required")
	}
	if err := s.e.Delete(name); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteSubscriptionResponse{}, nil
}

// scoped returns the durable subscription name the caller means: users
// with a token (admins aside) have names of their own, stored as
// "USER.NAME", so that they cannot read, ack or delete each other's. User
// ids have no dots, so no user's names can collide with another's.
func scoped(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	if len(name) > 64 || !events.ValidName(name) {
		return "", status.Errorf(codes.InvalidArgument, "durable_name: %q: use 1 to 64 letters, digits, '_', '-' or '.'", name)
	}
	if id, ok := auth.FromContext(ctx); ok && !id.IsAdmin() {
		return id.User + "." + name, nil
	}
	return name, nil
}

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, events.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, events.ErrNotFound):
		return status.Error(codes.NotFound, "durable_name: "+err.Error())
	case errors.Is(err, events.ErrTakenOver), errors.Is(err, events.ErrDeleted):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, events.ErrClosed):
		return status.Error(codes.Unavailable, err.Error()+"; reconnect when godwit runs again")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// encoder turns engine messages into protobuf messages.
type encoder struct {
	format pb.Encoding
	raw    bool
}

func (x encoder) message(m events.Message) *pb.SubscribeResponse {
	switch {
	case m.Started != nil:
		return &pb.SubscribeResponse{Message: &pb.SubscribeResponse_Started{Started: &pb.Started{
			StartSequence: m.Started.Start, OldestSequence: m.Started.Oldest, LastSequence: m.Started.Last, Resumed: m.Started.Resumed}}}
	case m.Lagged != nil:
		reason := pb.Lagged_REASON_RETENTION
		if m.Lagged.Reason == events.LagMaxLag {
			reason = pb.Lagged_REASON_MAX_LAG
		}
		return &pb.SubscribeResponse{Message: &pb.SubscribeResponse_Lagged{Lagged: &pb.Lagged{Reason: reason,
			FirstMissed: m.Lagged.FirstMissed, LastMissed: m.Lagged.LastMissed, ResumeSequence: m.Lagged.LastMissed + 1}}}
	case m.Event != nil:
		return &pb.SubscribeResponse{Message: &pb.SubscribeResponse_Event{Event: x.event(m.Event)}}
	default:
		return &pb.SubscribeResponse{Message: &pb.SubscribeResponse_Checkpoint{Checkpoint: &pb.Checkpoint{Sequence: m.Checkpoint}}}
	}
}

func (x encoder) event(e *events.Event) *pb.ChangeEvent {
	out := &pb.ChangeEvent{Sequence: e.Seq, Source: e.Source, CapturedAt: timestamppb.New(e.CapturedAt)}
	c := e.Change
	if c == nil || x.raw {
		out.Raw = x.doc(e.Raw)
	}
	if c == nil {
		return out
	}
	out.OperationType = c.OperationType
	out.Ns = ns(c.NS)
	out.To = ns(c.To)
	out.DocumentKey = x.doc(c.DocumentKey)
	out.FullDocument = x.doc(c.FullDocument)
	out.FullDocumentBeforeChange = x.doc(c.FullDocumentBeforeChange)
	if u := c.UpdateDescription; u != nil {
		out.UpdatedFields = x.doc(u.UpdatedFields)
		out.RemovedFields = u.RemovedFields
		for _, t := range u.TruncatedArrays {
			out.TruncatedArrays = append(out.TruncatedArrays, &pb.TruncatedArray{Field: t.Field, NewSize: uint32(t.NewSize)})
		}
	}
	if c.ClusterTime.T != 0 || c.ClusterTime.I != 0 {
		out.ClusterTime = &pb.ClusterTime{Seconds: c.ClusterTime.T, Increment: c.ClusterTime.I}
	}
	if !c.WallTime.IsZero() {
		out.WallTime = timestamppb.New(c.WallTime)
	}
	return out
}

func ns(n change.Namespace) *pb.Namespace {
	if n.DB == "" {
		return nil
	}
	return &pb.Namespace{Db: n.DB, Coll: n.Coll}
}

func (x encoder) doc(d bson.Raw) *pb.Document {
	if len(d) == 0 {
		return nil
	}
	if x.format == pb.Encoding_ENCODING_BSON {
		return &pb.Document{Bson: d}
	}
	j, err := bson.MarshalExtJSON(d, x.format == pb.Encoding_ENCODING_CANONICAL_JSON, false)
	if err != nil {
		// Parse validated the event; a value Extended JSON cannot express
		// is still better sent as BSON than dropped.
		return &pb.Document{Bson: d}
	}
	return &pb.Document{Json: string(j)}
}
