package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
	_ "github.com/godwit-dev/godwit/sink/all" // every sink type
)

// source is a source's connection and capture: component "source ID". It
// owns the connection, which sinks and triggers use while they run.
type source struct {
	id      string
	uri     string // redacted
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

// pipelineSink is what the runtime needs of a replicate sink.
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

// openDataPath connects every source and opens every sink, after the
// outbox. Sources come first: replicate sinks need their connections and
// echo filters, found by source id.
func (d *Godwit) openDataPath(ctx context.Context, o options) error {
	srcs := map[string]sink.Source{}
	for _, sc := range d.cfg.Sources {
		src, err := d.openSource(ctx, sc)
		if err != nil {
			return fmt.Errorf("source %s: %w", sc.ID, err)
		}
		srcs[sc.ID] = sink.Source{URI: sc.URI, Conn: src.conn, Echo: src.echo}
	}
	for _, sc := range d.cfg.Sinks {
		if err := d.openSink(ctx, sc, srcs, o); err != nil {
			return fmt.Errorf("sink %s: %w", sc.ID, err)
		}
	}
	return nil
}

// openSource connects a source and prepares its capture, with the echo
// filter that two-way pipelines share with it.
func (d *Godwit) openSource(ctx context.Context, sc config.Source) (*source, error) {
	conn, err := mongodb.Open(ctx, sc.URI, d.cfg.Dir())
	if err != nil {
		return nil, err
	}
	if conn.Migrated != "" {
		d.log.Info().Str("uri", conn.Redacted).Str("backup", conn.Migrated).
			Msg("converted the embedded deployment's file to the incremental store; the original is kept as the backup")
	}
	echo := replicate.NewEchoFilter(d.cfg.Metadata.Database)
	ccfg := sourceConfig(d.cfg, sc)
	ccfg.OnHalt = func(id, reason string) {
		d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: id, Message: reason})
	}
	src := &source{id: sc.ID, uri: logging.RedactURI(sc.URI), conn: conn, echo: echo, capture: capture.New(ccfg, conn, d.ob, echo, d.log)}
	if err := d.group.Add(src); err != nil {
		return nil, errors.Join(err, conn.Close(ctx))
	}
	d.sources = append(d.sources, src)
	d.byID[sc.ID] = src
	return src, nil
}

// sourceConfig translates a configured source into capture's config.
func sourceConfig(cfg *config.Config, sc config.Source) capture.Config {
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
func (d *Godwit) openSink(ctx context.Context, sc config.Sink, srcs map[string]sink.Source, o options) error {
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

// Audit records a godwit event in every audit sink (there may be none).
// Failures are logged: auditing must not stop capture.
func (d *Godwit) Audit(ctx context.Context, ev audit.SystemEvent) {
	for _, a := range d.audits {
		if err := a.RecordSystem(ctx, ev); err != nil {
			d.log.Error().Err(err).Str("class", ev.Class).Msg("could not write audit record")
		}
	}
}

// SourceClients maps source ids to their deployments (where trigger
// functions write).
func (d *Godwit) SourceClients() map[string]lungo.IClient {
	out := map[string]lungo.IClient{}
	for id, s := range d.byID {
		out[id] = s.conn.Client
	}
	return out
}

// AuditSinks returns the open audit sinks.
func (d *Godwit) AuditSinks() []*audit.Sink { return d.audits }

// AuditLogs maps the audit sinks' ids to their log files.
func (d *Godwit) AuditLogs() map[string]string { return d.auditLogs }
