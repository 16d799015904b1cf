package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/rpc"
	"github.com/godwit-dev/godwit/runtime"
)

// ServeOptions configures Serve.
type ServeOptions struct {
	// DataDir is a demo's data directory (Summary.DataDir of a Run).
	DataDir string
	// Seed is the workload's seed (the one Run used). Default 1.
	Seed uint64
	// GRPCAddr and HTTPAddr are the listeners' addresses. Defaults
	// rpc.DefaultAddr and httpapi.DefaultAddr, so that `godwit status`
	// and `godwit events tail` find the daemon without flags; port 0
	// picks a free port.
	GRPCAddr, HTTPAddr string
	// ReplicaURI is the replica's deployment (the one Run used); empty: the
	// embedded replica in DataDir.
	ReplicaURI string
	// Rate is how many workload operations per second to write meanwhile
	// (0: none), continuing the deterministic workload.
	Rate float64
	// Listen, when set, serves the demo's source over the MongoDB wire
	// protocol at this address (devdb) while Serve runs, so mongosh or any
	// driver can write to it and watch the triggers fire.
	Listen string
	// Log receives the daemon's logs.
	Log zerolog.Logger
	// Ready is called once the listeners serve and capture runs.
	Ready func(Listening)
}

// Listening says where a served demo listens.
type Listening struct {
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	// SourceURI is the mongodb:// URI of the demo's source when
	// ServeOptions.Listen is set.
	SourceURI string `json:"source_uri,omitempty"`
}

// Serve runs the demo's daemon, with the gRPC API and the HTTP listener,
// until ctx ends, writing the workload at opts.Rate meanwhile. It returns
// how many workload operations the source then holds: a later Run with at
// least that many Ops continues and verifies the whole history.
func Serve(ctx context.Context, opts ServeOptions) (int, error) {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = rpc.DefaultAddr
	}
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = httpapi.DefaultAddr
	}
	if opts.Rate < 0 {
		return 0, errors.New("rate: must not be negative")
	}
	cfg, err := Config(opts.DataDir, opts.ReplicaURI)
	if err != nil {
		return 0, err
	}
	cfg.API.GRPCAddr, cfg.API.HTTPAddr = opts.GRPCAddr, opts.HTTPAddr
	srv, err := runtime.Open(ctx, cfg, opts.Log)
	if err != nil {
		return 0, err
	}
	if _, err := ensureTriggers(ctx, srv.Triggers); err != nil {
		_ = srv.Close(context.WithoutCancel(ctx))
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(runCtx) }()
	defer func() {
		stop()
		<-ran
		_ = srv.Close(context.WithoutCancel(ctx))
	}()
	select {
	case <-srv.Sources()[0].Ready():
	case err := <-ran:
		ran <- err
		return 0, fmt.Errorf("daemon stopped before capture started: %v", err)
	case <-ctx.Done():
		return 0, nil
	}
	// The same path shares the daemon's engine: writes through devdb reach
	// capture like the workload's.
	conn, err := mongodb.Open(ctx, cfg.Sources[0].URI, cfg.Dir())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	l := Listening{GRPCAddr: srv.RPC.Addr(), HTTPAddr: srv.HTTP.Addr()}
	if opts.Listen != "" {
		log := opts.Log
		db, err := devdb.Open(conn.Engine, devdb.Config{Addr: opts.Listen, Log: &log})
		if err != nil {
			return 0, fmt.Errorf("--listen: %w", err)
		}
		defer db.Close(context.WithoutCancel(ctx))
		l.SourceURI = db.URI()
	}
	if opts.Ready != nil {
		opts.Ready(l)
	}
	next, err := storedNext(ctx, conn.Client)
	if err != nil {
		return 0, err
	}
	if opts.Rate == 0 {
		<-ctx.Done()
		return next, nil
	}
	w := NewWorkload(opts.Seed)
	for i := 0; i < next; i++ {
		w.Next()
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / opts.Rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return next, nil
		case err := <-ran:
			ran <- err
			return next, fmt.Errorf("daemon stopped: %v", err)
		case <-tick.C:
		}
		if err := writeOp(ctx, conn.Client, w.Next(), next); err != nil {
			if ctx.Err() != nil {
				return next, nil
			}
			return next, err
		}
		next++
	}
}
