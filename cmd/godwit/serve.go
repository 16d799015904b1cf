package main

import (
	"context"
	"errors"
	"os"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/runtime"
)

func init() {
	register(command{name: "serve", summary: "capture the configured sources and drain the outbox into the sinks until SIGINT/SIGTERM", run: runServe})
}

func runServe(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("serve", "--config FILE")
	path := fs.String("config", "", "configuration file (YAML; see docs/config.md)")
	httpAddr := fs.String("http-addr", "", "listen address for /metrics, /healthz, /readyz (overrides api.http_addr; off disables)")
	insecure := fs.Bool("insecure", false, "serve plaintext gRPC on a non-loopback api.grpc_addr (sets api.insecure); only on a trusted network")
	httpInsecure := fs.Bool("http-insecure", false, "serve /metrics on a non-loopback http address without TLS and tokens (sets api.http_insecure); only on a trusted network")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*path, func(c *config.Config) {
		c.API.Insecure = c.API.Insecure || *insecure
		c.API.HTTPInsecure = c.API.HTTPInsecure || *httpInsecure
	})
	if err != nil {
		return err
	}
	if *httpAddr != "" {
		cfg.API.HTTPAddr = *httpAddr
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	srv, err := runtime.Open(ctx, cfg, log, runtime.WithProgress(m.Stderr))
	if err != nil {
		return err
	}
	runErr := srv.Run(ctx)
	closeErr := srv.Close(context.WithoutCancel(ctx))
	log.Info().Msg("godwit stopped")
	return errors.Join(runErr, closeErr)
}
