// Package daemon wires a configuration into the data path's components:
// the outbox, one capture per source, one initial sync per replicate
// pipeline and one sink runner per sink, all in one runtime.Group.
// Package server adds the control plane's components to the same group.
// `godwit serve` and `godwit demo` run it.
//
// Lifecycle: Open opens the outbox, the connections and the sinks and
// registers every sink cursor (so retention holds from the start); Run
// runs the group until its context ends or a component fails; Close closes
// every component in reverse start order and joins the errors.
//
// Components and their dependencies (runtime.Group starts each once the
// ones it depends on are ready):
//
//	outbox
//	source ID                 ready once its change stream is open
//	sync ID    -> source SRC  replicate pipelines: ready once the initial sync is done
//	sink ID    (-> sync ID)   the runner; a pipeline's waits for its sync
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/runtime"
	"github.com/godwit-dev/godwit/sink"
	_ "github.com/godwit-dev/godwit/sink/all" // every sink type
)

// Daemon is an opened configuration.
type Daemon struct {
	cfg   *config.Config
	log   zerolog.Logger
	group *runtime.Group

	ob      *outbox.Outbox
	sources []*source          // config order
	byID    map[string]*source // the same, by source id
	sinks   []*sinkPart        // config order
	audits  []*audit.Sink
	// auditLogs maps the audit sinks' ids to their log files.
	auditLogs map[string]string
}

// source is a source's connection and capture: component "source ID". It
// owns the connection, which sinks and triggers use while they run.
type source struct {
	id      string
	conn    *mongodb.Conn
	echo    *replicate.EchoFilter
	capture *capture.Source
}

func (s *source) Name() string                    { return "source " + s.id }
func (s *source) Ready() <-chan struct{}          { return s.capture.Ready() }
func (s *source) Close(ctx context.Context) error { return s.conn.Close(ctx) }
func (s *source) Status() any                     { return s.capture.Status() }

// Run captures. A halt (logged and audited by capture) stops this source
// only.
func (s *source) Run(ctx context.Context) error {
	if err := s.capture.Run(ctx); err != nil && !errors.Is(err, capture.ErrHalted) {
		return err
	}
	return nil
}

// sinkPart is a sink and its runner: component "sink ID".
type sinkPart struct {
	cfg    config.Sink
	sink   sink.Sink
	runner *sink.Runner
	sync   *initialSync // replicate pipelines only
	log    zerolog.Logger
}

func (s *sinkPart) Name() string { return "sink " + s.cfg.ID }
func (s *sinkPart) Status() any  { return s.runner.Status() }

func (s *sinkPart) DependsOn() []string {
	if s.sync != nil {
		return []string{s.sync.Name()}
	}
	return nil
}

// Run delivers. A halted sink (logged by the runner) stops alone.
func (s *sinkPart) Run(ctx context.Context) error {
	err := s.runner.Run(ctx)
	if errors.Is(err, sink.ErrHalted) {
		s.log.Error().Err(err).Msg("sink stopped")
		return nil
	}
	return err
}

func (s *sinkPart) Close(ctx context.Context) error {
	if c, ok := s.sink.(sink.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

// pipelineSink is what the daemon needs of a replicate sink.
type pipelineSink interface {
	sink.Sink
	Source() string
	InitialSync(ctx context.Context, source *mongodb.Conn) error
	Status() replicate.Status
}

// initialSync copies what a pipeline has not copied yet, once its source
// captures (every later write then waits in the outbox): component
// "sync ID", ready when the copy is done. A failed copy is reported in
// status and keeps the pipeline from streaming until godwit restarts.
type initialSync struct {
	id     string
	sink   pipelineSink
	source *source
	done   chan struct{}
	log    zerolog.Logger

	mu  sync.Mutex
	err string // why the copy failed, redacted
}

func (p *initialSync) Name() string                { return "sync " + p.id }
func (p *initialSync) DependsOn() []string         { return []string{p.source.Name()} }
func (p *initialSync) Ready() <-chan struct{}      { return p.done }
func (p *initialSync) Close(context.Context) error { return nil }
func (p *initialSync) Status() any                 { return p.sink.Status() }

func (p *initialSync) Run(ctx context.Context) error {
	err := p.sink.InitialSync(ctx, p.source.conn)
	switch {
	case err == nil:
		close(p.done)
	case ctx.Err() == nil:
		msg := fmt.Sprintf("initial sync failed: %v; the pipeline does not stream until godwit restarts", err)
		p.mu.Lock()
		p.err = logging.RedactText(msg)
		p.mu.Unlock()
		p.log.Error().Err(err).Str("sink", p.id).Str("source", p.source.id).
			Msg("initial sync failed; the pipeline does not stream until godwit restarts")
	}
	return nil
}

func (p *initialSync) failure() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Option changes how Open builds the daemon.
type Option func(*options)

type options struct {
	observe  func(sinkID string) func(time.Duration, int, error)
	progress io.Writer
}

// WithProgress draws the progress of initial syncs to w.
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// WithDeliveryObserver calls observe once per sink; the function it returns
// is called after every delivery to that sink (for latency metrics).
func WithDeliveryObserver(observe func(sinkID string) func(time.Duration, int, error)) Option {
	return func(o *options) { o.observe = observe }
}

// Open opens the outbox, connects every source and opens every sink.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts ...Option) (_ *Daemon, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := &Daemon{cfg: cfg, log: log, group: runtime.NewGroup(log), byID: map[string]*source{}, auditLogs: map[string]string{}}
	defer func() {
		if err != nil {
			_ = d.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	ob, err := outbox.Open(cfg.Outbox.Path, outbox.Options{MaxBytes: cfg.Outbox.MaxBytes, KeepAcked: cfg.Outbox.KeepAcked})
	if err != nil {
		return nil, err
	}
	d.ob = ob
	if err := d.group.Add(runtime.New("outbox", nil, func(ctx context.Context) error { return ob.Close(ctx) })); err != nil {
		return nil, err
	}
	// Sources first: replicate sinks need their connections and echo filters.
	srcs := map[string]sink.Source{}
	for _, sc := range cfg.Sources {
		src, err := d.openSource(ctx, sc)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", sc.ID, err)
		}
		srcs[sc.ID] = sink.Source{URI: sc.URI, Conn: src.conn, Echo: src.echo}
	}
	for _, sc := range cfg.Sinks {
		if err := d.openSink(ctx, sc, srcs, o); err != nil {
			return nil, fmt.Errorf("sink %s: %w", sc.ID, err)
		}
	}
	return d, nil
}

// openSource connects a source and prepares its capture, with the echo
// filter that two-way pipelines share with it.
func (d *Daemon) openSource(ctx context.Context, sc config.Source) (*source, error) {
	conn, err := mongodb.Open(ctx, sc.URI, d.cfg.Dir())
	if err != nil {
		return nil, err
	}
	if conn.Migrated != "" {
		d.log.Info().Str("uri", conn.Redacted).Str("backup", conn.Migrated).
			Msg("converted the embedded deployment's file to the incremental store; the original is kept as the backup")
	}
	echo := replicate.NewEchoFilter(d.cfg.Metadata.Database)
	ccfg := SourceConfig(d.cfg, sc)
	ccfg.OnHalt = func(id, reason string) {
		d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: id, Message: reason})
	}
	src := &source{id: sc.ID, conn: conn, echo: echo, capture: capture.New(ccfg, conn, d.ob, echo, d.log)}
	if err := d.group.Add(src); err != nil {
		return nil, errors.Join(err, conn.Close(ctx))
	}
	d.sources = append(d.sources, src)
	d.byID[sc.ID] = src
	return src, nil
}

// SourceConfig translates a configured source into capture's config.
func SourceConfig(cfg *config.Config, sc config.Source) capture.Config {
	full := sc.FullDocument
	if full == "off" {
		full = ""
	}
	pre := sc.FullDocumentBeforeChange
	if pre == "off" {
		pre = ""
	}
	return capture.Config{
		ID: sc.ID, Database: sc.Database, Collection: sc.Collection,
		Filter: sc.Filter(), OperationTypes: sc.OperationTypes,
		FullDocument: full, FullDocumentBeforeChange: pre,
		ShowExpandedEvents: sc.ShowExpandedEvents != nil && *sc.ShowExpandedEvents,
		SplitLargeEvents:   sc.SplitLargeEvents,
		MetadataDatabase:   cfg.Metadata.Database,
		BatchSize:          sc.BatchSize, BatchInterval: sc.BatchInterval,
	}
}

// openSink opens a sink through the sink registry and registers its
// runner's cursor; a replicate pipeline also gets its initial sync.
func (d *Daemon) openSink(ctx context.Context, sc config.Sink, srcs map[string]sink.Source, o options) error {
	log := d.log.With().Str("sink", sc.ID).Logger()
	s, err := sink.Open(ctx, sc.Type, sc.Settings, sink.Deps{
		ID: sc.ID, Dir: d.cfg.Dir(), MetadataDatabase: d.cfg.Metadata.Database,
		Outbox: d.ob, Log: log, Sources: srcs, Progress: o.progress,
		Audit: func(ctx context.Context, n sink.Notice) {
			d.Audit(ctx, audit.SystemEvent{Class: n.Class, Source: n.Source, Namespace: n.Namespace, Message: n.Message, Details: n.Details})
		},
	})
	if err != nil {
		return err
	}
	rc := sink.RunnerConfig{Policy: sc.OnFailure, MaxAttempts: sc.MaxAttempts, BatchSize: sc.BatchSize}
	if rc.MaxAttempts == 0 {
		rc.MaxAttempts = sink.DefaultMaxAttempts(sc.Type)
	}
	if o.observe != nil {
		rc.OnDeliver = o.observe(sc.ID)
	}
	part := &sinkPart{cfg: sc, sink: s, runner: sink.NewRunner(outbox.SinkCursor(sc.ID), d.ob, s, rc, d.log), log: log}
	if p, ok := s.(pipelineSink); ok {
		src, ok := d.byID[p.Source()]
		if !ok {
			return errors.Join(fmt.Errorf("replicate.source: no source with id %q", p.Source()), part.Close(ctx))
		}
		part.sync = &initialSync{id: sc.ID, sink: p, source: src, done: make(chan struct{}), log: d.log}
		if err := d.group.Add(part.sync); err != nil {
			return errors.Join(err, part.Close(ctx))
		}
	}
	if err := d.group.Add(part); err != nil {
		return errors.Join(err, part.Close(ctx))
	}
	if a, ok := s.(*audit.Sink); ok {
		d.audits = append(d.audits, a)
		d.auditLogs[sc.ID] = a.Path()
	}
	d.sinks = append(d.sinks, part)
	_, err = part.runner.Register()
	return err
}

// Outbox returns the open outbox.
func (d *Daemon) Outbox() *outbox.Outbox { return d.ob }

// Sources returns the capture sources, in config order.
func (d *Daemon) Sources() []*capture.Source {
	out := make([]*capture.Source, len(d.sources))
	for i, s := range d.sources {
		out[i] = s.capture
	}
	return out
}

// Runners returns the sink runners, in config order.
func (d *Daemon) Runners() []*sink.Runner {
	out := make([]*sink.Runner, len(d.sinks))
	for i, s := range d.sinks {
		out[i] = s.runner
	}
	return out
}

// Group returns the group of the daemon's components. Package server adds
// its own to it before Run.
func (d *Daemon) Group() *runtime.Group { return d.group }

// Audit records a godwit event in every audit sink (there may be none).
// Failures are logged: auditing must not stop capture.
func (d *Daemon) Audit(ctx context.Context, ev audit.SystemEvent) {
	for _, a := range d.audits {
		if err := a.RecordSystem(ctx, ev); err != nil {
			d.log.Error().Err(err).Str("class", ev.Class).Msg("could not write audit record")
		}
	}
}

// SourceClients maps source ids to their deployments (where trigger
// functions write).
func (d *Daemon) SourceClients() map[string]lungo.IClient {
	out := map[string]lungo.IClient{}
	for id, s := range d.byID {
		out[id] = s.conn.Client
	}
	return out
}

// AuditSinks returns the open audit sinks.
func (d *Daemon) AuditSinks() []*audit.Sink { return d.audits }

// AuditLogs maps the audit sinks' ids to their log files.
func (d *Daemon) AuditLogs() map[string]string { return d.auditLogs }

// Run runs every component until ctx ends (nil) or one fails: that
// failure stops the others and is returned. A halted source or sink, or a
// pipeline whose initial sync failed, is logged and the others keep
// running. Run returns when every component has stopped.
func (d *Daemon) Run(ctx context.Context) error {
	d.Audit(ctx, audit.SystemEvent{Class: audit.ClassDaemonStart,
		Message: fmt.Sprintf("godwit started with %d sources and %d sinks", len(d.sources), len(d.sinks))})
	d.log.Info().Int("sources", len(d.sources)).Int("sinks", len(d.sinks)).
		Str("outbox", d.ob.Path()).Msg("godwit running")
	err := d.group.Run(ctx)
	d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassDaemonStop, Message: "godwit stopped"})
	return err
}

// Close closes every component (sinks, connections, the outbox, and what
// package server added) in reverse start order, joining every error.
func (d *Daemon) Close(ctx context.Context) error { return d.group.Close(ctx) }
