// Package api serves the godwit.audit.v1 AuditService: queries over the
// audit logs of the daemon's audit sinks, with the same filters as `godwit
// audit query` (audit.Filter) and a follow mode (audit.Follow). Register it
// with rpc.New:
//
//	srv, err := rpc.New(cfg, log, api.New(map[string]string{"audit": "/var/lib/godwit/audit.jsonl"}))
//
// It only reads the log files; the sinks keep writing them. With API
// tokens, only admins may query. Follow streams
// end when the service's Run context ends (the daemon stops): gRPC's
// graceful stop waits for streams, which would otherwise never end.
package api

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/change"
	pb "github.com/godwit-dev/godwit/proto/godwit/audit/v1"
	"github.com/godwit-dev/godwit/rpc"
)

// Service implements AuditService.
type Service struct {
	pb.UnimplementedAuditServiceServer
	logs map[string]string // audit sink id → log path
	poll time.Duration

	once sync.Once
	done chan struct{} // closed when Run's context ends
}

// Option changes a Service.
type Option func(*Service)

// WithPoll sets how often follow streams look for new records (default
// audit.DefaultPoll).
func WithPoll(d time.Duration) Option { return func(s *Service) { s.poll = d } }

// New returns the service over the audit logs named by sink id.
func New(logs map[string]string, opts ...Option) *Service {
	s := &Service{logs: logs, done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Register implements rpc.Service.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterAuditServiceServer(r, s) }

// Names implements rpc.Service.
func (s *Service) Names() []string { return []string{pb.AuditService_ServiceDesc.ServiceName} }

var _ rpc.Service = (*Service)(nil)

// Run waits until ctx ends, then ends every follow stream (UNAVAILABLE).
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	s.once.Do(func() { close(s.done) })
	return nil
}

// Query implements AuditService.
func (s *Service) Query(req *pb.QueryRequest, stream grpc.ServerStreamingServer[pb.Record]) error {
	if id, ok := auth.FromContext(stream.Context()); ok && !id.IsAdmin() {
		return status.Errorf(codes.PermissionDenied, "the audit log is for admins: user %q has the %s role", id.User, id.Role)
	}
	path, err := s.path(req.GetSink())
	if err != nil {
		return err
	}
	f, err := filter(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if req.GetFollow() {
		for rec, err := range audit.Follow(ctx, path, f, s.poll) {
			if err != nil {
				return recordErr(path, err)
			}
			if err := stream.Send(toPB(rec)); err != nil {
				return err
			}
		}
		if ctx.Err() != nil && stream.Context().Err() == nil {
			return status.Error(codes.Unavailable, "godwit is stopping; reconnect when it runs again")
		}
		return nil
	}
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing audited yet
	}
	if err != nil {
		return status.Errorf(codes.Internal, "open audit log: %v", err)
	}
	defer file.Close()
	for rec, err := range audit.Query(file, f) {
		if err != nil {
			return recordErr(path, err)
		}
		if err := stream.Send(toPB(rec)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) path(sink string) (string, error) {
	if sink != "" {
		p, ok := s.logs[sink]
		if !ok {
			return "", status.Errorf(codes.NotFound, "sink: %q is not an audit sink of this godwit (audit sinks: %s)", sink, s.ids())
		}
		return p, nil
	}
	switch len(s.logs) {
	case 0:
		return "", status.Error(codes.FailedPrecondition, "this godwit has no audit sink; add one (sinks[].type: audit)")
	case 1:
		for _, p := range s.logs {
			return p, nil
		}
	}
	return "", status.Errorf(codes.InvalidArgument, "sink: required, this godwit has several audit sinks: %s", s.ids())
}

func (s *Service) ids() string {
	ids := make([]string, 0, len(s.logs))
	for id := range s.logs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

func filter(req *pb.QueryRequest) (audit.Filter, error) {
	f := audit.Filter{Classes: req.GetClasses(), MinSeverity: req.GetMinSeverity(), Source: req.GetSource()}
	if req.GetSince() != nil {
		f.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		f.Until = req.GetUntil().AsTime()
	}
	for i, p := range req.GetNamespaces() {
		g, err := change.ParseGlob(p)
		if err != nil {
			return f, status.Errorf(codes.InvalidArgument, "namespaces[%d]: %v", i, err)
		}
		f.Namespaces = append(f.Namespaces, g)
	}
	if f.MinSeverity != "" && audit.SeverityRank(f.MinSeverity) == 0 {
		return f, status.Errorf(codes.InvalidArgument, "min_severity: %q: use one of %s", f.MinSeverity, strings.Join(audit.Severities, ", "))
	}
	return f, nil
}

// recordErr reports a log that cannot be read as DATA_LOSS: the chain is
// what the log is for, and the user should verify it.
func recordErr(path string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return status.Errorf(codes.NotFound, "audit log %s does not exist yet", path)
	}
	return status.Error(codes.DataLoss, fmt.Sprintf("%v; check the log with `godwit audit verify --file %s`", err, path))
}

func toPB(r audit.Record) *pb.Record {
	out := &pb.Record{Index: r.Index, Class: r.Class, Severity: r.Severity, Source: r.Source, Seq: r.Seq, Op: r.Op,
		DocumentKey: string(r.DocumentKey), User: r.User, Message: r.Message, Rules: r.Rules, Prev: r.Prev, Hash: r.Hash,
		Line: string(r.Line())}
	if !r.Time.IsZero() {
		out.Time = timestamppb.New(r.Time)
	}
	if !r.RecordedAt.IsZero() {
		out.RecordedAt = timestamppb.New(r.RecordedAt)
	}
	if r.NS != nil {
		out.Ns = &pb.Namespace{Db: r.NS.DB, Coll: r.NS.Coll}
	}
	if r.To != nil {
		out.To = &pb.Namespace{Db: r.To.DB, Coll: r.To.Coll}
	}
	return out
}
