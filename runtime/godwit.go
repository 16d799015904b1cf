package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/admin"
	"github.com/godwit-dev/godwit/audit"
	auditapi "github.com/godwit-dev/godwit/audit/api"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/metrics"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger"
)

// Godwit is an opened configuration: every component in one Group.
type Godwit struct {
	cfg   *config.Config
	log   zerolog.Logger
	group *Group

	// The data path (datapath.go).
	ob      *outbox.Outbox
	sources []*source          // config order
	byID    map[string]*source // the same, by source id
	sinks   []*sinkPart        // config order
	audits  []*audit.Sink
	// auditLogs maps the audit sinks' ids to their log files.
	auditLogs map[string]string

	// The control plane (control.go).
	Triggers *trigger.Manager
	HTTP     *httpapi.Server // nil when api.http_addr is "off"
	RPC      *rpc.Server     // nil when api.grpc_addr is "off"
	// Events serves event subscriptions; it is open even without gRPC, so
	// that durable subscriptions' cursors hold retention.
	Events *events.Engine
	Admin  *admin.Service

	meta     *mongodb.Conn
	auditAPI *auditapi.Service
}

// Option changes how Open builds godwit.
type Option func(*options)

type options struct {
	observe  func(sinkID string) func(time.Duration, int, error)
	progress io.Writer
}

// WithProgress draws the progress of initial syncs to w.
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// WithDeliveryObserver calls observe once per sink; the function it returns
// is called after every delivery to that sink, besides the metrics' own.
func WithDeliveryObserver(observe func(sinkID string) func(time.Duration, int, error)) Option {
	return func(o *options) { o.observe = observe }
}

// Open opens the outbox, connects every source, opens every sink, the
// metadata store and the trigger manager, and binds the listeners. Nothing
// runs until Run; on error everything opened so far is closed.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts ...Option) (_ *Godwit, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := &Godwit{cfg: cfg, log: log, group: NewGroup(log), byID: map[string]*source{}, auditLogs: map[string]string{}}
	defer func() {
		if err != nil {
			_ = d.Close(context.WithoutCancel(ctx))
		}
	}()
	m := metrics.New(d.Status)
	o.observe = both(m.ObserveDelivery, o.observe)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	ob, err := outbox.Open(cfg.Outbox.Path, outbox.Options{MaxBytes: cfg.Outbox.MaxBytes, KeepAcked: cfg.Outbox.KeepAcked})
	if err != nil {
		return nil, err
	}
	d.ob = ob
	if err := d.group.Add(New("outbox", nil, func(ctx context.Context) error { return ob.Close(ctx) })); err != nil {
		return nil, err
	}
	if err := d.openDataPath(ctx, o); err != nil {
		return nil, err
	}
	if err := d.openControl(ctx, m); err != nil {
		return nil, err
	}
	return d, nil
}

// both calls the observers a and b (b may be nil).
func both(a, b func(string) func(time.Duration, int, error)) func(string) func(time.Duration, int, error) {
	if b == nil {
		return a
	}
	return func(id string) func(time.Duration, int, error) {
		fa, fb := a(id), b(id)
		return func(d time.Duration, n int, err error) { fa(d, n, err); fb(d, n, err) }
	}
}

// Outbox returns the open outbox.
func (d *Godwit) Outbox() *outbox.Outbox { return d.ob }

// Sources returns the capture sources, in config order.
func (d *Godwit) Sources() []*capture.Source {
	out := make([]*capture.Source, len(d.sources))
	for i, s := range d.sources {
		out[i] = s.capture
	}
	return out
}

// Runners returns the sink runners, in config order.
func (d *Godwit) Runners() []*sink.Runner {
	out := make([]*sink.Runner, len(d.sinks))
	for i, s := range d.sinks {
		out[i] = s.runner
	}
	return out
}

// WaitDelivered waits until every sink and every running database trigger
// has handled outbox sequence seq (delivered it, or parked it in its dead
// letters), or has halted, or ctx ended. It returns one error per sink or
// trigger that did not get there, saying why; none when all did.
func (d *Godwit) WaitDelivered(ctx context.Context, seq uint64) []error {
	var errs []error
	for _, s := range d.sinks {
		if err := s.runner.WaitAcked(ctx, seq); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Triggers != nil {
		errs = append(errs, d.Triggers.WaitDelivered(ctx, seq)...)
	}
	return errs
}

// Group returns the group of godwit's components (its States show each
// one's).
func (d *Godwit) Group() *Group { return d.group }

// Run runs every component until ctx ends (nil) or one fails: that
// failure stops the others at once and is returned. A halted source or
// sink, or a pipeline whose initial sync failed, is logged and the others
// keep running. Run returns when every component has stopped.
func (d *Godwit) Run(ctx context.Context) error {
	d.Audit(ctx, audit.SystemEvent{Class: audit.ClassDaemonStart,
		Message: fmt.Sprintf("godwit started with %d sources and %d sinks", len(d.sources), len(d.sinks))})
	d.log.Info().Int("sources", len(d.sources)).Int("sinks", len(d.sinks)).
		Str("outbox", d.ob.Path()).Msg("godwit running")
	err := d.group.Run(ctx)
	d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassDaemonStop, Message: "godwit stopped"})
	return err
}

// Close closes every component (after Run returned, or instead of Run) in
// reverse start order — the listeners first, the outbox last — joining
// every error.
func (d *Godwit) Close(ctx context.Context) error { return d.group.Close(ctx) }
