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
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/jsonl"
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
}

// Option changes how Open builds the daemon.
type Option func(*options)

type options struct {
	observe func(sinkID string) func(time.Duration, int, error)
}

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
	d := &Daemon{cfg: cfg, log: log}
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
	for _, sc := range cfg.Sinks {
		s, err := openSink(sc, log)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", sc.ID, err)
		}
		d.sinks = append(d.sinks, s)
		if a, ok := s.(*audit.Sink); ok {
			d.audits = append(d.audits, a)
		}
		rc := sink.RunnerConfig{Policy: sc.OnFailure, MaxAttempts: sc.MaxAttempts, BatchSize: sc.BatchSize}
		if o.observe != nil {
			rc.OnDeliver = o.observe(sc.ID)
		}
		r := sink.NewRunner(sc.ID, d.ob, s, rc, log)
		if _, err := r.Register(); err != nil {
			return nil, err
		}
		d.runners = append(d.runners, r)
	}
	for _, sc := range cfg.Sources {
		conn, err := mongodb.Open(ctx, sc.URI, cfg.Dir())
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", sc.ID, err)
		}
		d.conns = append(d.conns, conn)
		ccfg := SourceConfig(cfg, sc)
		ccfg.OnHalt = func(id, reason string) {
			d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: id, Message: reason})
		}
		d.sources = append(d.sources, capture.New(ccfg, conn, d.ob, nil, log))
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

func openSink(sc config.Sink, log zerolog.Logger) (sink.Sink, error) {
	switch sc.Type {
	case "jsonl":
		return jsonl.Open(*sc.JSONL)
	case "audit":
		return audit.Open(*sc.Audit, log.With().Str("sink", sc.ID).Logger())
	}
	return nil, fmt.Errorf("unknown sink type %q", sc.Type)
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

// AuditSinks returns the open audit sinks.
func (d *Daemon) AuditSinks() []*audit.Sink { return d.audits }

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
	for _, r := range d.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				d.log.Error().Err(err).Str("sink", r.ID()).Msg("sink stopped")
			}
		}()
	}
	wg.Wait()
	d.Audit(context.WithoutCancel(ctx), audit.SystemEvent{Class: audit.ClassDaemonStop, Message: "godwit stopped"})
	return nil
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
