package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/godwit-dev/godwit/devdb"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
)

func init() {
	register(command{name: "devdb", summary: "serve an embedded development deployment over the MongoDB wire protocol (mongosh, drivers, godwit); not for production", run: runDevDB})
}

func runDevDB(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("devdb", "[--data DIR] [--listen ADDR]")
	data := fs.String("data", "", "directory for the deployment's data file (default: in memory, lost at exit)")
	listen := fs.String("listen", "127.0.0.1:27017", "address to listen on (port 0: any free port); there is no authentication, keep it on loopback")
	advertise := fs.String("advertise", "", "host:port drivers are told to connect to (default: the listen address)")
	rs := fs.String("replica-set", "devdb", "replica set name presented to drivers")
	level := fs.String("log-level", "info", "log level (debug, info, warn, error)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, *level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	uri := "lungo:memory"
	if *data != "" {
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return fmt.Errorf("--data: %w", err)
		}
		uri = "lungo:" + filepath.Join(*data, "devdb.lungo")
	}
	conn, err := mongodb.Open(ctx, uri, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	srv, err := devdb.Open(conn.Engine, devdb.Config{Addr: *listen, Advertise: *advertise, ReplicaSet: *rs, Log: &log})
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, srv.URI())
	where := "in memory (lost at exit; use --data DIR to keep it)"
	if *data != "" {
		where = filepath.Join(*data, "devdb.lungo")
	}
	fmt.Fprintf(m.Stderr, "godwit devdb: serving %s at %s — try: mongosh %q — Ctrl-C stops\n", where, srv.Addr(), srv.URI())
	<-ctx.Done()
	closeErr := srv.Close(context.WithoutCancel(ctx))
	log.Info().Msg("devdb stopped")
	if errors.Is(closeErr, context.Canceled) {
		closeErr = nil
	}
	return closeErr
}
