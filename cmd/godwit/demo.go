package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/demo"
	"github.com/godwit-dev/godwit/httpapi"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/rpc"
)

func init() {
	register(command{name: "demo", summary: "run godwit end to end on the embedded engine (no setup) and verify the result", run: runDemo})
}

func runDemo(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("demo", "[--ops N] [--data DIR] [--replica-uri URI] [--json] [--kafka BROKERS] [--nats URL] [--keep-running [--rate R] [--grpc-addr A] [--http-addr A] [--listen A]]")
	ops := fs.Int("ops", 1000, "total workload operations (a rerun with the same --data continues up to this number)")
	data := fs.String("data", "", "data directory (default: a new temporary directory); rerun with the same one to continue")
	asJSON := fs.Bool("json", false, "end with one JSON line summarising the run")
	replicaURI := fs.String("replica-uri", "", "replicate into this deployment (mongodb://…; its demo databases empty) instead of an embedded replica, and check the replica there")
	seed := fs.Uint64("seed", 1, "workload seed")
	level := fs.String("log-level", "warn", "log level for the daemon's logs (debug, info, warn, error)")
	keep := fs.Bool("keep-running", false, "after the verified run, keep the daemon running with its gRPC API and HTTP listener until Ctrl-C: try `godwit status`, `godwit events tail`, the trigger CLI")
	rate := fs.Float64("rate", 0, "with --keep-running: workload operations per second to keep writing (0: none)")
	grpcAddr := fs.String("grpc-addr", rpc.DefaultAddr, "with --keep-running: gRPC API address (port 0: any free port)")
	httpAddr := fs.String("http-addr", httpapi.DefaultAddr, "with --keep-running: address of /metrics, /healthz and /readyz")
	kafkaBrokers := fs.String("kafka", "", "also deliver to Kafka: comma-separated host:port brokers (topics godwit-demo.DB.COLL, created if missing)")
	natsURL := fs.String("nats", "", "also deliver to NATS JetStream at this URL (stream GODWIT_DEMO, created if missing)")
	listen := fs.String("listen", "", "with --keep-running: serve the demo's source over the MongoDB wire protocol at this address (for example 127.0.0.1:27017) for mongosh and drivers")
	if err := parse(fs, args); err != nil {
		return err
	}
	var brokers []string
	if *kafkaBrokers != "" {
		brokers = strings.Split(*kafkaBrokers, ",")
	}
	if *ops <= 0 {
		return fmt.Errorf("--ops must be positive")
	}
	if *rate < 0 {
		return fmt.Errorf("--rate must not be negative")
	}
	if *listen != "" && !*keep {
		return fmt.Errorf("--listen needs --keep-running: the source is served once the verified run is done")
	}
	if *replicaURI != "" {
		if kind, _, err := mongodb.ParseURI(*replicaURI, ""); err != nil || kind != mongodb.Real {
			return fmt.Errorf("--replica-uri %s: want a mongodb:// or mongodb+srv:// URI of a server whose demo databases are empty (%v)", logging.RedactURI(*replicaURI), err)
		}
	}
	log, err := logging.New(os.Stderr, *level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	sum, err := demo.Run(ctx, demo.Options{Ops: *ops, DataDir: *data, Seed: *seed, Log: log, Progress: m.Stderr,
		Kafka: brokers, NATS: *natsURL, ReplicaURI: *replicaURI})
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
		fmt.Fprintf(m.Stdout, "  audit records:       %d  (%s; check it with `godwit audit verify --file %s --key %s`)\n", sum.Audited, sum.AuditLog, sum.AuditLog, sum.AuditKey)
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
	if *keep {
		return keepRunning(ctx, m, log, demo.ServeOptions{DataDir: sum.DataDir, Seed: *seed, ReplicaURI: *replicaURI, GRPCAddr: *grpcAddr,
			HTTPAddr: *httpAddr, Rate: *rate, Listen: *listen}, *asJSON)
	}
	return nil
}

// keepRunning serves the demo's daemon until interrupted and says how to
// reach it.
func keepRunning(ctx context.Context, m *Main, log zerolog.Logger, opts demo.ServeOptions, asJSON bool) error {
	opts.Log = log
	opts.Ready = func(l demo.Listening) {
		if asJSON {
			b, _ := json.Marshal(struct {
				Running bool `json:"running"`
				demo.Listening
			}{true, l})
			fmt.Fprintln(m.Stdout, string(b))
			return
		}
		writing := "writing nothing"
		if opts.Rate > 0 {
			writing = fmt.Sprintf("writing %g workload operations per second", opts.Rate)
		}
		fmt.Fprintf(m.Stdout, "\ngodwit is running (%s): gRPC %s, HTTP %s; Ctrl-C to stop. Try:\n", writing, l.GRPCAddr, l.HTTPAddr)
		addr := ""
		if l.GRPCAddr != rpc.DefaultAddr {
			addr = " --addr " + l.GRPCAddr
		}
		fmt.Fprintf(m.Stdout, "  godwit status%s\n  godwit events tail%s --ns 'shop.*'\n  godwit trigger list%s\n  curl -s http://%s/metrics | grep ^godwit_\n",
			addr, addr, addr, l.HTTPAddr)
		if l.SourceURI != "" {
			fmt.Fprintf(m.Stdout, "The demo's source is served at %s — write to it and watch the events:\n  mongosh %q --eval 'db.getSiblingDB(\"shop\").orders.insertOne({note: \"hello from mongosh\"})'\n",
				l.SourceURI, l.SourceURI)
		}
	}
	total, err := demo.Serve(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "godwit demo: stopped; the workload has %d operations: `godwit demo --data %s --ops %d` verifies them all\n",
		total, opts.DataDir, total)
	return nil
}
