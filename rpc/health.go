package rpc

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
)

// healthServer is the standard health service with what a caller may see
// of it narrowed. Without a token (when tokens are configured) only the
// overall Check (empty service name) answers: probes learn "serving" and
// nothing else, not even which names exist (the authenticator refuses the
// rest). With a user's token, List and Check show the API's services and
// the sources in the user's allow-list; sinks and other sources are
// hidden, answering exactly like a name that does not exist. An admin, or
// anyone when no tokens are configured, sees everything.
type healthServer struct {
	healthgrpc.UnimplementedHealthServer
	*health.Server
}

// visible reports whether the caller in ctx may learn that the health
// name exists and how it is.
func visible(ctx context.Context, name string) bool {
	id, ok := auth.FromContext(ctx)
	if !ok || id.IsAdmin() || name == "" {
		return true
	}
	if src, isSource := strings.CutPrefix(name, "source/"); isSource {
		return id.Allow.Source(src)
	}
	return !strings.HasPrefix(name, "sink/")
}

func (h healthServer) Check(ctx context.Context, in *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !visible(ctx, in.GetService()) {
		return nil, status.Error(codes.NotFound, "unknown service")
	}
	return h.Server.Check(ctx, in)
}

func (h healthServer) List(ctx context.Context, in *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	res, err := h.Server.List(ctx, in)
	if err != nil {
		return nil, err
	}
	for name := range res.GetStatuses() {
		if !visible(ctx, name) {
			delete(res.Statuses, name)
		}
	}
	return res, nil
}

func (h healthServer) Watch(in *healthpb.HealthCheckRequest, stream healthgrpc.Health_WatchServer) error {
	if !visible(stream.Context(), in.GetService()) {
		// What the standard server sends for a name it does not know.
		return stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVICE_UNKNOWN})
	}
	return h.Server.Watch(in, stream)
}

// openHealthCheck reports whether a call is the one open to callers
// without a token: the overall health Check (empty service name), what
// load balancers and orchestrators probe.
func openHealthCheck(fullMethod string, req any) bool {
	if fullMethod != healthgrpc.Health_Check_FullMethodName {
		return false
	}
	r, ok := req.(*healthpb.HealthCheckRequest)
	return ok && r.GetService() == ""
}
