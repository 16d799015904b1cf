// Package api serves triggers and functions over gRPC: the
// godwit.trigger.v1 TriggerService and FunctionService, backed by a
// trigger.Manager. Register both with rpc.New:
//
//	srv, err := rpc.New(cfg, log, api.New(manager))
//
// Errors map to gRPC codes: a bad field is InvalidArgument (the message
// starts with the field's name), an unknown id NotFound, a taken name
// AlreadyExists, deleting a function still in use FailedPrecondition, a
// trigger outside its owner's allow-list PermissionDenied.
//
// # Users
//
// With tokens configured, the caller is the auth.Identity the rpc package
// put in the context. The owner of what a call creates is that user,
// never the request's user_id (a different user_id is PermissionDenied).
// A user sees, changes, runs and reports events to only its own triggers
// and functions; anything else is NotFound, exactly like an id that does
// not exist and found by the same single query (see scope), so ids cannot
// be probed by the answer or by its timing. An admin sees and changes
// everything. Without tokens there is no identity: requests name their
// user in user_id, and everything is visible.
package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/auth"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/trigger"
)

// Service implements both services over one Manager.
type Service struct {
	m *trigger.Manager
}

// New returns the services for m.
func New(m *trigger.Manager) *Service { return &Service{m: m} }

// Register implements rpc.Service.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	pb.RegisterTriggerServiceServer(r, triggerServer{s: s})
	pb.RegisterFunctionServiceServer(r, functionServer{s: s})
}

// Names implements rpc.Service.
func (s *Service) Names() []string {
	return []string{pb.TriggerService_ServiceDesc.ServiceName, pb.FunctionService_ServiceDesc.ServiceName}
}

var _ rpc.Service = (*Service)(nil)

// toStatus maps the trigger package's errors to gRPC status errors.
func toStatus(err error, idField string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *trigger.FieldError
	switch {
	case errors.As(err, &fe) && errors.Is(err, trigger.ErrNotFound):
		return status.Error(codes.NotFound, fe.Error())
	case errors.As(err, &fe) && errors.Is(err, trigger.ErrNotAllowed):
		return status.Error(codes.PermissionDenied, fe.Error())
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, fe.Error())
	case errors.Is(err, trigger.ErrNotFound):
		return status.Error(codes.NotFound, idField+": "+err.Error())
	case errors.Is(err, trigger.ErrExists):
		return status.Error(codes.AlreadyExists, "name: "+err.Error())
	case errors.Is(err, trigger.ErrInUse):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, trigger.ErrNotRunning):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, trigger.ErrQueueFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, trigger.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func required(field, v string) error {
	if v == "" {
		return status.Error(codes.InvalidArgument, field+": required")
	}
	return nil
}

// owner resolves who owns what a request creates: the authenticated user
// (a different user_id is refused, for admins too: an admin acts as
// itself), otherwise the request's user_id.
func owner(ctx context.Context, requested string) (string, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return requested, nil
	}
	if requested != "" && requested != id.User {
		return "", status.Errorf(codes.PermissionDenied, "user_id: %q is not the authenticated user %q; the owner is always the token's user (leave user_id empty)", requested, id.User)
	}
	return id.User, nil
}

// queryUser resolves the user_id filter of a query: any (or none) for an
// admin or without tokens, only the caller's own for a user.
func queryUser(ctx context.Context, requested string) (string, error) {
	id, ok := auth.FromContext(ctx)
	if !ok || id.IsAdmin() {
		return requested, nil
	}
	if requested != "" && requested != id.User {
		return "", status.Errorf(codes.PermissionDenied, "user_id: %q: a user lists only its own triggers and functions", requested)
	}
	return id.User, nil
}

// scope returns the user whose objects alone the caller may see by id:
// the authenticated user, unless an admin (or no tokens: no scope).
//
// Lookups by id for a scoped caller query by id and owner together
// (trigger.Manager.GetTriggerOf), so another user's id and an id that does
// not exist run the same query, find nothing and get the same NotFound:
// neither the message nor the time tells them apart. (Unguessable ids were
// the other way: they would not help the ids already stored, which are
// ObjectIDs, and a timing difference would still confirm a leaked id.)
func scope(ctx context.Context) (string, bool) {
	id, ok := auth.FromContext(ctx)
	if !ok || id.IsAdmin() {
		return "", false
	}
	return id.User, true
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// parseExtJSON turns an Extended JSON document into BSON.
func parseExtJSON(field, s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	d, err := trigger.ParseExtJSON(s)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	b, err := bson.Marshal(d)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	return b, nil
}

func extJSON(doc []byte) string {
	if len(doc) == 0 {
		return ""
	}
	b, err := bson.MarshalExtJSON(bson.Raw(doc), false, false)
	if err != nil {
		return fmt.Sprintf("<not a BSON document: %v>", err)
	}
	return string(b)
}

func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}
