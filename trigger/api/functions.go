package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger"
)

type functionServer struct {
	pb.UnimplementedFunctionServiceServer
	s *Service
}

func functionToPB(f trigger.Function) *pb.Function {
	return &pb.Function{Id: f.ID, UserId: f.UserID, Name: f.Name, FunctionType: pb.FunctionType_FUNCTION_TYPE_WASM,
		Wasm: f.Wasm, Enabled: f.Enabled, WasmSize: f.Size, WasmSha256: f.SHA256,
		CreatedAt: ts(f.CreatedAt), UpdatedAt: ts(f.UpdatedAt)}
}

func functionType(t pb.FunctionType) string {
	switch t {
	case pb.FunctionType_FUNCTION_TYPE_UNSPECIFIED:
		return ""
	case pb.FunctionType_FUNCTION_TYPE_WASM:
		return trigger.FunctionTypeWasm
	}
	return t.String()
}

func (x functionServer) get(ctx context.Context, id string) (trigger.Function, error) {
	if err := required("id", id); err != nil {
		return trigger.Function{}, err
	}
	var f trigger.Function
	var err error
	if user, scoped := scope(ctx); scoped {
		f, err = x.s.m.GetFunctionOf(ctx, id, user)
	} else {
		f, err = x.s.m.GetFunction(ctx, id, false)
	}
	return f, toStatus(err, "id")
}

func (x functionServer) CreateFunction(ctx context.Context, req *pb.CreateFunctionRequest) (*pb.Function, error) {
	p := req.GetFunction()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "function: required")
	}
	user, err := owner(ctx, p.GetUserId())
	if err != nil {
		return nil, err
	}
	f, err := x.s.m.CreateFunction(ctx, trigger.Function{UserID: user, Name: p.GetName(), Type: functionType(p.GetFunctionType()), Wasm: p.GetWasm()})
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return functionToPB(f), nil
}

func (x functionServer) UpdateFunction(ctx context.Context, req *pb.UpdateFunctionRequest) (*pb.Function, error) {
	p := req.GetFunction()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "function: required")
	}
	if _, err := x.get(ctx, p.GetId()); err != nil {
		return nil, err
	}
	f, err := x.s.m.UpdateFunction(ctx, trigger.Function{ID: p.GetId(), UserID: p.GetUserId(), Name: p.GetName(),
		Type: functionType(p.GetFunctionType()), Wasm: p.GetWasm()})
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return functionToPB(f), nil
}

func (x functionServer) EnableFunction(ctx context.Context, req *pb.EnableFunctionRequest) (*pb.Function, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	f, err := x.s.m.EnableFunction(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return functionToPB(f), nil
}

func (x functionServer) DisableFunction(ctx context.Context, req *pb.DisableFunctionRequest) (*pb.Function, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	f, err := x.s.m.DisableFunction(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return functionToPB(f), nil
}

func (x functionServer) DeleteFunction(ctx context.Context, req *pb.DeleteFunctionRequest) (*pb.DeleteFunctionResponse, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	if err := x.s.m.DeleteFunction(ctx, req.GetId()); err != nil {
		return nil, toStatus(err, "id")
	}
	return &pb.DeleteFunctionResponse{}, nil
}

func (x functionServer) GetFunction(ctx context.Context, req *pb.GetFunctionRequest) (*pb.Function, error) {
	if _, err := x.get(ctx, req.GetId()); err != nil {
		return nil, err
	}
	f, err := x.s.m.GetFunction(ctx, req.GetId(), req.GetIncludeWasm())
	if err != nil {
		return nil, toStatus(err, "id")
	}
	return functionToPB(f), nil
}

func (x functionServer) QueryFunctions(req *pb.QueryFunctionsRequest, stream grpc.ServerStreamingServer[pb.Function]) error {
	ctx := stream.Context()
	user, err := queryUser(ctx, req.GetUserId())
	if err != nil {
		return err
	}
	fs, err := x.s.m.QueryFunctions(ctx, trigger.FunctionQuery{UserID: user, Name: req.GetName()})
	if err != nil {
		return toStatus(err, "id")
	}
	for _, f := range fs {
		if err := stream.Send(functionToPB(f)); err != nil {
			return err
		}
	}
	return nil
}

func (x functionServer) ExecuteFunction(ctx context.Context, req *pb.ExecuteFunctionRequest) (*pb.ExecuteFunctionResponse, error) {
	if req.GetFunctionId() != "" {
		if _, err := x.get(ctx, req.GetFunctionId()); err != nil {
			return nil, status.Error(status.Code(err), "function_id: "+status.Convert(err).Message())
		}
	}
	if req.GetEvent() == "" {
		return nil, status.Error(codes.InvalidArgument, "event: required (an Extended JSON document)")
	}
	ev, err := parseExtJSON("event", req.GetEvent())
	if err != nil {
		return nil, err
	}
	ex, err := x.s.m.Execute(ctx, trigger.ExecuteRequest{FunctionID: req.GetFunctionId(), Wasm: req.GetWasm(), Event: ev,
		Timeout: durationOf(req.GetTimeout())})
	if err != nil {
		return nil, toStatus(err, "function_id")
	}
	resp := &pb.ExecuteFunctionResponse{Result: extJSON(ex.Result), Duration: durationpb.New(ex.Duration)}
	if ex.Err != nil {
		resp.Error = ex.Err.Error()
	}
	for _, l := range ex.Logs {
		resp.Logs = append(resp.Logs, &pb.LogLine{Level: l.Level, Message: l.Message})
	}
	for _, a := range ex.Actions {
		resp.Actions = append(resp.Actions, &pb.Action{Kind: a.Kind, Namespace: a.Namespace, Document: extJSON(a.Document),
			Update: extJSON(a.Update), Upsert: a.Upsert, Many: a.Many})
	}
	return resp, nil
}
