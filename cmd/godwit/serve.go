package main

import (
	"context"
	"errors"
	"os"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/daemon"
	"github.com/godwit-dev/godwit/logging"
)

func init() {
	register(command{name: "serve", summary: "capture the configured sources and drain the outbox into the sinks until SIGINT/SIGTERM", run: runServe})
}

func runServe(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("serve", "--config FILE")
	path := fs.String("config", "", "configuration file (YAML; see docs/config.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	d, err := daemon.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	runErr := d.Run(ctx)
	closeErr := d.Close(context.WithoutCancel(ctx))
	log.Info().Msg("godwit stopped")
	return errors.Join(runErr, closeErr)
}
