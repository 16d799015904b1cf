// Package daemon wires a configuration into running parts: the outbox, one
// capture.Source per source and one sink.Runner per sink. `godwit serve` and
// `godwit demo` both run a Daemon.
//
// Lifecycle: Open opens the outbox, the connections and the sinks and
// registers every sink cursor (so retention holds from the start); Run
// captures and delivers until its context ends; Close closes everything and
// returns the first error.
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
	"github.com/godwit-dev/godwit/sink"
	_ "github.com/godwit-dev/godwit/sink/all" // every sink type
)

// Daemon is an opened configuration.
type Daemon struct {
	cfg *config.Config
	log zerolog.Logger

	ob      *outbox.Outbox
	conns   []*mongodb.Conn
	sources []*capture.Source
	runners []*sink.Runner
	sinks   []sink.Sink
	audits  []*audit.Sink
	// auditLogs maps the audit sinks' ids to their log files.
	auditLogs map[string]string
	// pipelines are the replicate sinks: their runners start only after
	// their initial sync.
	pipelines []pipeline
}

type pipeline struct {
	sink     *replicate.Sink
	sourceID string
	source   *mongodb.Conn
	syncErr  *syncError // set when the initial sync failed
}

type syncError struct {
	mu  sync.Mutex
	msg string
}

func (e *syncError) set(msg string) { e.mu.Lock(); e.msg = msg; e.mu.Unlock() }
func (e *syncError) get() string    { e.mu.Lock(); defer e.mu.Unlock(); return e.msg }

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
	d := &Daemon{cfg: cfg, log: log, auditLogs: map[string]string{}}
	defer func() {
		if err != nil {
			_ = d.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	d.ob, err = outbox.Open(cfg.Outbox.Path, outbox.Options{MaxBytes: cfg.Outbox.MaxBytes, KeepAcked: cfg.Outbox.KeepAcked})
	if err != nil {
		return nil, err
	}
	// Sources first: replicate sinks need their connections and echo filters.
	srcs := map[string]sink.Source{}
	echoes := map[string]*replicate.EchoFilter{}
	for _, sc := range cfg.Sources {
		conn, err := mongodb.Open(ctx, sc.URI, cfg.Dir())
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", sc.ID, err)
		}
		d.logMigrated(conn)
		d.conns = append(d.conns, conn)
		echoes[sc.ID] = replicate.NewEchoFilter(cfg.Metadata.Database)
		srcs[sc.ID] = sink.Source{URI: sc.URI, Conn: conn, Echo: echoes[sc.ID]}
	}
	for _, sc := range cfg.Sinks {
		s, err := d.openSink(ctx, sc, srcs, o.progress)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", sc.ID, err)
		}
		d.sinks = append(d.sinks, s)
		if a, ok := s.(*audit.Sink); ok {
			d.audits = append(d.audits, a)
			d.auditLogs[sc.ID] = a.Path()
		}
		rc := sink.RunnerConfig{Policy: sc.OnFailure, MaxAttempts: sc.MaxAttempts, BatchSize: sc.BatchSize}
		if rc.MaxAttempts == 0 {
			rc.MaxAttempts = sink.DefaultMaxAttempts(sc.Type)
		}
		if o.observe != nil {
			rc.OnDeliver = o.observe(sc.ID)
		}
		r := sink.NewRunner(sc.ID, d.ob, s, rc, log)
		if _, err := r.Register(); err != nil {
			return nil, err
		}
		d.runners = append(d.runners, r)
	}
	for i, sc := range cfg.Sources {
		ccfg := SourceConfig(cfg, sc)
		ccfg.OnHalt = func(id, reason string) {
			d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: id, Message: reason})
		}
		d.sources = append(d.sources, capture.New(ccfg, d.conns[i], d.ob, echoes[sc.ID], log))
	}
	return d, nil
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

func (d *Daemon) openSink(ctx context.Context, sc config.Sink, srcs map[string]sink.Source, progress io.Writer) (sink.Sink, error) {
	s, err := sink.Open(ctx, sc.Type, sc.Settings, sink.Deps{
		ID: sc.ID, Dir: d.cfg.Dir(), MetadataDatabase: d.cfg.Metadata.Database,
		Outbox: d.ob, Log: d.log.With().Str("sink", sc.ID).Logger(),
		Sources: srcs, Progress: progress,
		Audit: func(ctx context.Context, n sink.Notice) {
			d.Audit(ctx, audit.SystemEvent{Class: n.Class, Source: n.Source, Namespace: n.Namespace, Message: n.Message, Details: n.Details})
		},
	})
	if err != nil {
		return nil, err
	}
	if p, ok := s.(*replicate.Sink); ok {
		d.pipelines = append(d.pipelines, pipeline{sink: p, sourceID: p.Source(), source: srcs[p.Source()].Conn, syncErr: &syncError{}})
	}
	return s, nil
}

// logMigrated says so when opening an embedded deployment converted a
// lungo FileStore file.
func (d *Daemon) logMigrated(c *mongodb.Conn) {
	if c.Migrated != "" {
		d.log.Info().Str("uri", c.Redacted).Str("backup", c.Migrated).
			Msg("converted the embedded deployment's file to the incremental store; the original is kept as the backup")
	}
}

// Outbox returns the open outbox.
func (d *Daemon) Outbox() *outbox.Outbox { return d.ob }

// Sources returns the capture sources, in config order.
func (d *Daemon) Sources() []*capture.Source { return d.sources }

// Runners returns the sink runners, in config order.
func (d *Daemon) Runners() []*sink.Runner { return d.runners }

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
	for i, sc := range d.cfg.Sources {
		out[sc.ID] = d.conns[i].Client
	}
	return out
}

// AuditSinks returns the open audit sinks.
func (d *Daemon) AuditSinks() []*audit.Sink { return d.audits }

// AuditLogs maps the audit sinks' ids to their log files.
func (d *Daemon) AuditLogs() map[string]string { return d.auditLogs }

// Run captures and delivers until ctx ends. A halted source or sink is
// logged and the others keep running. Run returns when every goroutine has
// stopped.
func (d *Daemon) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	d.Audit(ctx, audit.SystemEvent{Class: audit.ClassDaemonStart,
		Message: fmt.Sprintf("godwit started with %d sources and %d sinks", len(d.sources), len(d.runners))})
	d.log.Info().Int("sources", len(d.sources)).Int("sinks", len(d.runners)).
		Str("outbox", d.ob.Path()).Msg("godwit running")
	for _, s := range d.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil && !errors.Is(err, capture.ErrHalted) {
				d.log.Error().Err(err).Msg("source stopped")
			}
		}()
	}
	for i, r := range d.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p, ok := d.pipelineOf(d.sinks[i]); ok {
				if !d.initialSync(ctx, p) {
					return
				}
			}
			if err := r.Run(ctx); err != nil {
				d.log.Error().Err(err).Str("sink", r.ID()).Msg("sink stopped")
			}
		}()
	}
	wg.Wait()
	d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassDaemonStop, Message: "godwit stopped"})
	return nil
}

func (d *Daemon) pipelineOf(s sink.Sink) (pipeline, bool) {
	for _, p := range d.pipelines {
		if sink.Sink(p.sink) == s {
			return p, true
		}
	}
	return pipeline{}, false
}

// initialSync waits until the pipeline's source captures (every later write
// then waits in the outbox), then copies what the pipeline has not copied
// yet. It reports whether streaming may start.
func (d *Daemon) initialSync(ctx context.Context, p pipeline) bool {
	var src *capture.Source
	for _, s := range d.sources {
		if s.Status().ID == p.sourceID {
			src = s
		}
	}
	select {
	case <-src.Ready():
	case <-ctx.Done():
		return false
	}
	if err := p.sink.InitialSync(ctx, p.source); err != nil {
		if ctx.Err() == nil {
			msg := fmt.Sprintf("initial sync failed: %v; the pipeline does not stream until godwit restarts", err)
			p.syncErr.set(logging.RedactText(msg))
			d.log.Error().Err(err).Str("sink", p.sink.Status().Pipeline).Str("source", p.sourceID).
				Msg("initial sync failed; the pipeline does not stream until godwit restarts")
		}
		return false
	}
	return true
}

// Close closes sinks, connections and the outbox, returning the first error.
func (d *Daemon) Close(ctx context.Context) error {
	var errs []error
	for _, s := range d.sinks {
		if c, ok := s.(sink.Closer); ok {
			errs = append(errs, c.Close(ctx))
		}
	}
	for _, c := range d.conns {
		errs = append(errs, c.Close(ctx))
	}
	if d.ob != nil {
		errs = append(errs, d.ob.Close())
	}
	return errors.Join(errs...)
}
