package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/godwit-dev/godwit/demo"
	"github.com/godwit-dev/godwit/logging"
)

func init() {
	register(command{name: "demo", summary: "run godwit end to end on the embedded engine (no setup) and verify the result", run: runDemo})
}

func runDemo(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("demo", "[--ops N] [--data DIR] [--json]")
	ops := fs.Int("ops", 1000, "total workload operations (a rerun with the same --data continues up to this number)")
	data := fs.String("data", "", "data directory (default: a new temporary directory); rerun with the same one to continue")
	asJSON := fs.Bool("json", false, "end with one JSON line summarising the run")
	seed := fs.Uint64("seed", 1, "workload seed")
	level := fs.String("log-level", "warn", "log level for the daemon's logs (debug, info, warn, error)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *ops <= 0 {
		return fmt.Errorf("--ops must be positive")
	}
	log, err := logging.New(os.Stderr, *level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	sum, err := demo.Run(ctx, demo.Options{Ops: *ops, DataDir: *data, Seed: *seed, Log: log, Progress: m.Stderr})
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.Marshal(sum)
		fmt.Fprintln(m.Stdout, string(b))
	} else {
		fmt.Fprintf(m.Stdout, "godwit demo — data in %s\n", sum.DataDir)
		fmt.Fprintf(m.Stdout, "  workload operations: %d (%d written by this run)\n", sum.Ops, sum.Written)
		fmt.Fprintf(m.Stdout, "  events captured:     %d  (outbox %s)\n", sum.Captured, sum.Outbox)
		ids := make([]string, 0, len(sum.Delivered))
		for id := range sum.Delivered {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			fmt.Fprintf(m.Stdout, "  delivered to %-8s %d\n", id+":", sum.Delivered[id])
		}
		fmt.Fprintf(m.Stdout, "  events file:         %s\n", sum.EventsFile)
		fmt.Fprintf(m.Stdout, "  replicated:          %d events into %s (compared document by document)\n", sum.Replicated, sum.Replica)
		fmt.Fprintf(m.Stdout, "  trigger calls:       %d  (cache updater, audit enricher, notifier; their writes checked)\n", sum.Triggered)
		fmt.Fprintf(m.Stdout, "  audit records:       %d  (%s; check it with `godwit audit verify --file %s`)\n", sum.Audited, sum.AuditLog, sum.AuditLog)
		for _, p := range sum.Problems {
			fmt.Fprintf(m.Stdout, "  PROBLEM: %s\n", p)
		}
		if sum.Verified {
			fmt.Fprintf(m.Stdout, "verified: every source write is in the outbox exactly once, in order, and in every sink (%.1fs)\n", sum.Seconds)
		}
	}
	if !sum.Verified {
		return &exitError{code: 1, msg: "verification failed"}
	}
	return nil
}
