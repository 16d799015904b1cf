package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger"
)

type triggerServer struct {
	pb.UnimplementedTriggerServiceServer
	s *Service
}

var typeToPB = map[trigger.Type]pb.TriggerType{
	trigger.TypeDatabase:       pb.TriggerType_TRIGGER_TYPE_DATABASE,
	trigger.TypeAuthentication: pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION,
	trigger.TypeScheduled:      pb.TriggerType_TRIGGER_TYPE_SCHEDULED,
}

func typeFromPB(t pb.TriggerType) trigger.Type {
	for k, v := range typeToPB {
		if v == t {
			return k
		}
	}
	if t == pb.TriggerType_TRIGGER_TYPE_UNSPECIFIED {
		return ""
	}
	return trigger.Type(t.String())
}

func fromPB(p *pb.Trigger) trigger.Trigger {
	t := trigger.Trigger{ID: p.GetId(), UserID: p.GetUserId(), Name: p.GetName(), Type: typeFromPB(p.GetTriggerType()),
		FunctionID: p.GetFunctionId(), Enabled: p.GetEnabled()}
	if w := p.GetWrites(); w != nil {
		t.Writes = trigger.Writes{DataSource: w.GetDataSource(), Namespaces: w.GetNamespaces()}
	}
	if d := p.GetDatabase(); d != nil {
		t.Database = &trigger.DatabaseConfig{DataSource: d.GetDataSource(), Database: d.GetDatabase(), Collection: d.GetCollection(),
			OperationTypes: d.GetOperationTypes(), FullDocument: d.GetFullDocument(), FullDocumentBeforeChange: d.GetFullDocumentBeforeChange(),
			TolerateResumeErrors: d.GetTolerateResumeErrors(), Unordered: d.GetUnordered(), Match: d.GetMatch(), Project: d.GetProject()}
	}
	if sc := p.GetScheduled(); sc != nil {
		t.Scheduled = &trigger.ScheduledConfig{Schedule: sc.GetSchedule(), SkipMissedRuns: sc.GetSkipMissedRuns()}
	}
	if a := p.GetAuthentication(); a != nil {
		t.Authentication = &trigger.AuthConfig{OperationTypes: a.GetOperationTypes(), Providers: a.GetProviders()}
	}
	return t
}

func (x triggerServer) toPB(t trigger.Trigger) *pb.Trigger {
	p := &pb.Trigger{Id: t.ID, UserId: t.UserID, Name: t.Name, TriggerType: typeToPB[t.Type], FunctionId: t.FunctionID,
		Enabled: t.Enabled, CreatedAt: ts(t.CreatedAt), UpdatedAt: ts(t.UpdatedAt),
		Writes: &pb.WriteConfig{DataSource: t.Writes.DataSource, Namespaces: t.Writes.Namespaces}}
	switch {
	case t.Database != nil:
		d := t.Database
		p.Config = &pb.Trigger_Database{Database: &pb.DatabaseConfig{DataSource: d.DataSource, Database: d.Database, Collection: d.Collection,
			OperationTypes: d.OperationTypes, FullDocument: d.FullDocument, FullDocumentBeforeChange: d.FullDocumentBeforeChange,
			TolerateResumeErrors: d.TolerateResumeErrors, Unordered: d.Unordered, Match: d.Match, Project: d.Project}}
	case t.Scheduled != nil:
		p.Config = &pb.Trigger_Scheduled{Scheduled: &pb.ScheduledConfig{Schedule: t.Scheduled.Schedule, SkipMissedRuns: t.Scheduled.SkipMissedRuns}}
	case t.Authentication != nil:
		p.Config = &pb.Trigger_Authentication{Authentication: &pb.AuthenticationConfig{OperationTypes: t.Authentication.OperationTypes, Providers: t.Authentication.Providers}}
	}
	st := x.s.m.Status(t)
	p.Status = &pb.TriggerStatus{State: string(st.State), LastError: st.LastError, Acked: st.Acked, Invocations: st.Invocations,
		DeadLetters: st.DeadLetters, LastFired: ts(st.LastFired)}
	return p
}

func (x triggerServer) get(ctx context.Context, id string) (trigger.Trigger, error) {
	if err := required("id", id); err != nil {
		return trigger.Trigger{}, err
	}
	var t trigger.Trigger
	var err error
	if user, scoped := scope(ctx); scoped {
		t, err = x.s.m.GetTriggerOf(ctx, id, user)
	} else {
		t, err = x.s.m.GetTrigger(ctx, id)
	}
	return t, toStatus(err, "id")
}

func (x triggerServer) CreateTrigger(ctx context.Context, req *pb.CreateTriggerRequest) (*pb.Trigger, error) {
	if req.GetTrigger() == nil {
		return nil, status.Error(codes.InvalidArgument, "trigger: required")
	}
	t := fromPB(req.GetTrigger())
	var err error
	if t.UserID, err = owner(ctx, t.UserID); err != nil {
		return nil, err
	}
	t, err = x.s.m.CreateTrigger(ctx, t)
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return x.toPB(t), nil
}

func (x triggerServer) UpdateTrigger(ctx context.Context, req *pb.UpdateTriggerRequest) (*pb.Trigger, error) {
	if req.GetTrigger() == nil {
		return nil, status.Error(codes.InvalidArgument, "trigger: required")
	}
	old, err := x.get(ctx, req.GetTrigger().GetId())
	if err != nil {
		return nil, err
	}
	t := fromPB(req.GetTrigger())
	if t.UserID == "" {
		t.UserID = old.UserID
	}
	t, err = x.s.m.UpdateTrigger(ctx, t)
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return x.toPB(t), nil
}

func (x triggerServer) EnableTrigger(ctx context.Context, req *pb.EnableTriggerRequest) (*pb.Trigger, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	t, err := x.s.m.EnableTrigger(ctx, req.GetId(), req.GetSkipToNow())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return x.toPB(t), nil
}

func (x triggerServer) DisableTrigger(ctx context.Context, req *pb.DisableTriggerRequest) (*pb.Trigger, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	t, err := x.s.m.DisableTrigger(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return x.toPB(t), nil
}

func (x triggerServer) DeleteTrigger(ctx context.Context, req *pb.DeleteTriggerRequest) (*pb.DeleteTriggerResponse, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	if err := x.s.m.DeleteTrigger(ctx, req.GetId()); err != nil {
		return nil, toStatus(err, "id")
	}
	return &pb.DeleteTriggerResponse{}, nil
}

func (x triggerServer) GetTrigger(ctx context.Context, req *pb.GetTriggerRequest) (*pb.Trigger, error) {
	t, err := x.get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return x.toPB(t), nil
}

func (x triggerServer) QueryTriggers(req *pb.QueryTriggersRequest, stream grpc.ServerStreamingServer[pb.Trigger]) error {
	ctx := stream.Context()
	user, err := queryUser(ctx, req.GetUserId())
	if err != nil {
		return err
	}
	q := trigger.TriggerQuery{UserID: user, FunctionID: req.GetFunctionId(), DataSource: req.GetDataSource(),
		Database: req.GetDatabase(), Collection: req.GetCollection()}
	if req.GetTriggerType() != pb.TriggerType_TRIGGER_TYPE_UNSPECIFIED {
		q.Type = typeFromPB(req.GetTriggerType())
	}
	ts, err := x.s.m.QueryTriggers(ctx, q)
	if err != nil {
		return toStatus(err, "id")
	}
	for _, t := range ts {
		if err := stream.Send(x.toPB(t)); err != nil {
			return err
		}
	}
	return nil
}

func (x triggerServer) ReportAuthEvent(ctx context.Context, req *pb.ReportAuthEventRequest) (*pb.ReportAuthEventResponse, error) {
	details, err := parseExtJSON("details", req.GetDetails())
	if err != nil {
		return nil, err
	}
	ev := trigger.AuthEvent{Operation: req.GetOperationType(), Provider: req.GetProvider(), UserID: req.GetUserId(), Details: details}
	if id, ok := auth.FromContext(ctx); ok && !id.IsAdmin() {
		ev.Owner = id.User // a user's report runs only the user's own triggers
	}
	if req.GetTime() != nil {
		ev.Time = req.GetTime().AsTime()
	}
	ev.Wait = req.GetWait()
	res, err := x.s.m.ReportAuthEvent(ctx, ev)
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return &pb.ReportAuthEventResponse{Triggered: res.Triggered, Failed: res.Failed, Sequence: res.Sequence,
		Queued: res.Queued, Pending: res.Pending}, nil
}

func (x triggerServer) ListDeadLetters(req *pb.ListDeadLettersRequest, stream grpc.ServerStreamingServer[pb.DeadLetter]) error {
	ctx := stream.Context()
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return err
	}
	dls, err := x.s.m.DeadLetters(ctx, req.GetId())
	if err != nil {
		return toStatus(err, "id")
	}
	for _, dl := range dls {
		r := dl.Record
		if err := stream.Send(&pb.DeadLetter{Sequence: r.Seq, Source: r.Source, CapturedAt: ts(r.CapturedAt), Event: extJSON(r.Raw),
			Error: dl.Error, Attempts: int32(dl.Attempts), ParkedAt: ts(dl.At)}); err != nil {
			return err
		}
	}
	return nil
}

func (x triggerServer) RetryDeadLetters(ctx context.Context, req *pb.RetryDeadLettersRequest) (*pb.RetryDeadLettersResponse, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	ok, failed, err := x.s.m.RetryDeadLetters(ctx, req.GetId(), req.GetSequences())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return &pb.RetryDeadLettersResponse{Succeeded: ok, Failed: failed}, nil
}
