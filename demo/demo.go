// Package demo runs godwit end to end on the embedded engine with no setup:
// an embedded source, a deterministic workload writing to it, capture into
// the outbox, every sink draining it, and a final check that every source
// write is in the outbox exactly once and in order.
//
// The demo is restartable: the workload's progress is written in the same
// source transaction as each operation, so a demo killed at any moment
// (SIGKILL included) and run again with the same data directory continues
// exactly where the source stopped, and still ends verified.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/progress"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/runtime"
	"github.com/godwit-dev/godwit/sink/jsonl"
	"github.com/godwit-dev/godwit/sink/kafka"
	"github.com/godwit-dev/godwit/sink/nats"
	"github.com/godwit-dev/godwit/trigger"
)

// Options configures a demo run.
type Options struct {
	// Ops is the total number of workload operations. Default 1000.
	Ops int
	// DataDir holds everything; empty means a new temporary directory.
	DataDir string
	// Seed selects the workload. Default 1.
	Seed uint64
	// Log receives progress and daemon logs.
	Log zerolog.Logger
	// Progress receives one plain line per progress step (may be nil).
	Progress io.Writer
	// Kafka, when set, adds a kafka sink (id "kafka") to these brokers:
	// topic godwit-demo.{db}.{coll}, created if missing.
	Kafka []string
	// NATS, when set, adds a nats sink (id "nats") to this server: stream
	// GODWIT_DEMO on godwit-demo.>, created if missing.
	NATS string
	// ReplicaURI replicates into a real deployment (mongodb://…) instead
	// of the embedded replica, and checks the replica there. Its
	// replicated databases (shop, crm, …) must be empty at the first run.
	ReplicaURI string
}

// Summary is the demo's result.
type Summary struct {
	Ops        int               `json:"ops"`
	Written    int               `json:"written"`
	Captured   uint64            `json:"captured"`
	Delivered  map[string]uint64 `json:"delivered"`
	Verified   bool              `json:"verified"`
	Problems   []string          `json:"problems,omitempty"`
	DataDir    string            `json:"data_dir"`
	Outbox     string            `json:"outbox"`
	EventsFile string            `json:"events_file"`
	Audited    uint64            `json:"audited"`
	AuditLog   string            `json:"audit_log"`
	// AuditKey is the audit log's verification key file (move it offline
	// in real use); the check verifies every seal with it.
	AuditKey string `json:"audit_key"`
	// Replicated counts events delivered to the replica pipeline; the
	// check compares the replica with the source document by document.
	Replicated uint64 `json:"replicated"`
	Replica    string `json:"replica"`
	// Triggered counts successful trigger function calls of this run.
	Triggered uint64  `json:"triggered"`
	Seconds   float64 `json:"seconds"`
}

const (
	sourceID      = "demo"
	eventsSinkID  = "events"
	auditSinkID   = "audit"
	replicaSinkID = "replica"
	demoUser      = "demo"
	progressColl  = "demo_workload"
	metadataDB    = "godwit"
	captureWindow = 2 * time.Minute
)

// Config returns the configuration the demo runs with: one embedded source,
// the jsonl and audit sinks, a replication pipeline into a second embedded
// deployment (or into replicaURI when it is not empty), retention off (the final check reads the whole
// history). Mass-delete detection ignores the namespaces the random part of
// the workload writes, so that only the workload's deliberate delete burst
// counts and the check can be exact.
func Config(dataDir, replicaURI string) (*config.Config, error) {
	if replicaURI == "" {
		replicaURI = "lungo:replica.lungo"
	}
	var ignore []string
	for _, ns := range Namespaces {
		ignore = append(ignore, fmt.Sprintf("%q", ns.String()))
	}
	yaml := fmt.Sprintf(`
data_dir: %q
api: {http_addr: "off", grpc_addr: "off"}
outbox:
  keep_acked: true
triggers:   # the example notifier logs a line per notification: room for the demo's pace
  log_lines_per_second: 2000
  log_bytes_per_second: 262144
sources:
  - id: %s
    uri: lungo:source.lungo
    ignore: ["cache.*", "audit.*", "notify.*"]   # where the demo's trigger functions write
sinks:
  - id: %s
    type: jsonl
    jsonl:
      path: events.jsonl
  - id: %s
    type: audit
    audit:
      path: audit.jsonl
      mass_delete: {threshold: %d, window: 5s, ignore: [%s]}
  - id: %s
    type: replicate
    on_failure: halt
    replicate:
      source: %s
      target: %q
      ignore: ["cache.*", "audit.*", "notify.*"]
`, dataDir, sourceID, eventsSinkID, auditSinkID, MassDeleteThreshold, strings.Join(ignore, ", "), replicaSinkID, sourceID, replicaURI)
	cfg, err := config.Parse([]byte(yaml), dataDir)
	if err != nil {
		return nil, err
	}
	// Every demo registers the same three functions: compile them once per
	// user, not once per data directory (compiling takes seconds).
	if dir, err := os.UserCacheDir(); err == nil {
		cfg.Triggers.CompilationCache = filepath.Join(dir, "godwit", "wazero-cache")
	}
	return cfg, nil
}

// demoOplogAge is how long the demo's embedded deployments keep oplog
// entries beyond mongodb.EmbeddedOplogSize.
const demoOplogAge = 10 * time.Second

// Run runs the demo.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	start := time.Now()
	// lungo keeps every oplog entry younger than five minutes by default,
	// so a fast demo's oplog would hold every operation in memory (a commit
	// no longer copies it: godwit's lungo clones in O(1)). The demo's
	// capture runs in this process and is never far behind, so its embedded
	// deployments keep entries past mongodb.EmbeddedOplogSize for seconds.
	if mongodb.EmbeddedMinOplogAge == 0 {
		mongodb.EmbeddedMinOplogAge = demoOplogAge
	}
	if opts.Ops <= 0 {
		opts.Ops = 1000
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.DataDir == "" {
		dir, err := os.MkdirTemp("", "godwit-demo-")
		if err != nil {
			return nil, err
		}
		opts.DataDir = dir
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg, err := Config(dir, opts.ReplicaURI)
	if err != nil {
		return nil, err
	}
	if err := addBrokerSinks(cfg, opts); err != nil {
		return nil, err
	}
	sum := &Summary{Ops: opts.Ops, DataDir: dir, Outbox: cfg.Outbox.Path,
		EventsFile: cfg.Sinks[0].Settings.(*jsonl.Config).Path, Delivered: map[string]uint64{}}

	sum.AuditLog = cfg.Sinks[1].Settings.(*audit.Config).Path
	sum.Replica = filepath.Join(dir, "replica.lungo")
	if opts.ReplicaURI != "" {
		sum.Replica = logging.RedactURI(opts.ReplicaURI)
	}
	if err := runDaemon(ctx, cfg, opts, sum); err != nil {
		return sum, err
	}

	// Check with the daemon closed: audit bursts still open are recorded at
	// close, and the files are complete.
	ob, err := outbox.Open(cfg.Outbox.Path, outbox.Options{})
	if err != nil {
		return sum, err
	}
	defer ob.Close(context.Background())
	sinks, err := ob.Sinks()
	if err != nil {
		return sum, err
	}
	for _, sc := range cfg.Sinks { // trigger cursors are counted in triggered
		sum.Delivered[sc.ID] = sinks[sc.ID].Delivered
	}
	sum.Problems = append(sum.Problems, verifyBrokerSinks(ob, cfg, sinks)...)
	st, _, err := ob.Source(sourceID)
	if err != nil {
		return sum, err
	}
	if st.State == outbox.StateHalted {
		sum.Problems = append(sum.Problems, "source halted: "+st.Reason)
	}
	sum.Captured = st.Captured
	sum.Problems = append(sum.Problems, Verify(ob, sum.EventsFile, opts.Seed, opts.Ops)...)
	audited, problems := verifyAudit(ob, sum, opts)
	sum.Audited = audited
	sum.Problems = append(sum.Problems, problems...)
	sum.Replicated = sum.Delivered[replicaSinkID]
	sum.Problems = append(sum.Problems, verifyReplica(ctx, cfg)...)
	sum.Problems = append(sum.Problems, verifyTriggers(ctx, ob, cfg)...)
	sum.Verified = len(sum.Problems) == 0
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// runDaemon runs the daemon while the workload writes, until capture has
// every operation and every sink has every event, then stops it.
func runDaemon(ctx context.Context, cfg *config.Config, opts Options, sum *Summary) error {
	srv, err := runtime.Open(ctx, cfg, opts.Log, runtime.WithProgress(opts.Progress))
	if err != nil {
		return err
	}
	// Triggers exist before the workload starts, so they see all of it.
	triggers, err := ensureTriggers(ctx, srv.Triggers)
	if err != nil {
		_ = srv.Close(context.WithoutCancel(ctx))
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(runCtx) }()
	defer func() {
		stop()
		<-ran
		if err := srv.Close(context.WithoutCancel(ctx)); err != nil {
			sum.Problems = append(sum.Problems, "closing: "+err.Error())
		}
	}()

	src := srv.Sources()[0]
	select {
	case <-src.Ready():
	case err := <-ran:
		ran <- err
		return fmt.Errorf("daemon stopped before capture started: %v", err)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("capture did not start: %s", src.Status().LastError)
	}
	if st := src.Status(); st.State == capture.StateHalted {
		return fmt.Errorf("source halted: %s", st.Reason)
	}

	conn, err := mongodb.Open(ctx, cfg.Sources[0].URI, cfg.Dir())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	written, err := write(ctx, conn.Client, opts)
	sum.Written = written
	if err != nil {
		return err
	}

	// Wait until capture has every operation and every sink every event.
	ob := srv.Outbox()
	waitCtx, cancel := context.WithTimeout(ctx, captureWindow)
	defer cancel()
	var last uint64
	err = ob.WaitUntil(waitCtx, func(v outbox.View) (bool, error) {
		st, _, err := v.Source(sourceID)
		last = v.Last()
		return st.Captured >= uint64(opts.Ops) || st.State == outbox.StateHalted, err
	})
	if err != nil && waitCtx.Err() == nil {
		return err
	}
	for _, err := range srv.WaitDelivered(waitCtx, last) {
		sum.Problems = append(sum.Problems, err.Error())
	}
	for _, t := range triggers {
		st := srv.Triggers.Status(t)
		sum.Triggered += st.Invocations
		if st.DeadLetters > 0 {
			sum.Problems = append(sum.Problems, fmt.Sprintf("trigger %s parked %d events: %s", t.Name, st.DeadLetters, st.LastError))
		}
	}
	return ctx.Err()
}

// demoTriggers are the example functions the demo runs, each on one of the
// workload's collections. Their writes go to namespaces the demo source
// ignores, so they do not feed back into the captured history.
var demoTriggers = []struct {
	function, name string
	coll           change.Namespace
	ops            []string
	writes         string
}{
	{"cacheupdater", "cache-orders", change.Namespace{DB: "shop", Coll: "orders"}, nil, "cache.*"},
	{"auditenricher", "enrich-customers", change.Namespace{DB: "shop", Coll: "customers"}, nil, "audit.*"},
	{"notifier", "notify-items", change.Namespace{DB: "inventory", Coll: "items"}, []string{change.OpInsert, change.OpDelete}, "notify.*"},
}

// ensureTriggers registers the example functions and their database
// triggers, unless an earlier run did.
func ensureTriggers(ctx context.Context, m *trigger.Manager) ([]trigger.Trigger, error) {
	var out []trigger.Trigger
	for _, dt := range demoTriggers {
		fns, err := m.QueryFunctions(ctx, trigger.FunctionQuery{UserID: demoUser, Name: dt.function})
		if err != nil {
			return nil, err
		}
		var fn trigger.Function
		if len(fns) > 0 {
			fn = fns[0]
		} else {
			wasm, err := guests.Wasm(dt.function)
			if err != nil {
				return nil, err
			}
			if fn, err = m.CreateFunction(ctx, trigger.Function{UserID: demoUser, Name: dt.function, Type: trigger.FunctionTypeWasm, Wasm: wasm}); err != nil {
				return nil, fmt.Errorf("register function %s: %w", dt.function, err)
			}
		}
		ts, err := m.QueryTriggers(ctx, trigger.TriggerQuery{UserID: demoUser, FunctionID: fn.ID})
		if err != nil {
			return nil, err
		}
		if len(ts) > 0 {
			out = append(out, ts[0])
			continue
		}
		t, err := m.CreateTrigger(ctx, trigger.Trigger{UserID: demoUser, Name: dt.name, Type: trigger.TypeDatabase,
			FunctionID: fn.ID, Enabled: true,
			Database: &trigger.DatabaseConfig{DataSource: sourceID, Database: dt.coll.DB, Collection: dt.coll.Coll,
				OperationTypes: dt.ops, FullDocument: true},
			Writes: trigger.Writes{Namespaces: []string{dt.writes}}})
		if err != nil {
			return nil, fmt.Errorf("register trigger %s: %w", dt.name, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// verifyTriggers checks the functions' writes: one enriched audit entry per
// event on shop.customers and one notification per insert or delete on
// inventory.items (both keyed by the event, so retries write once), and a
// cache entry per live order.
func verifyTriggers(ctx context.Context, ob *outbox.Outbox, cfg *config.Config) []string {
	want := map[string]int64{}
	for after := uint64(0); ; {
		recs, err := ob.Read(after, 10000, 0)
		if err != nil {
			return []string{err.Error()}
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			ev, err := change.Parse(r.Raw)
			if err != nil || r.Source != sourceID {
				continue
			}
			switch {
			case ev.NS == demoTriggers[1].coll:
				want["audit.enriched"]++
			case ev.NS == demoTriggers[2].coll && (ev.OperationType == change.OpInsert || ev.OperationType == change.OpDelete):
				want["notify.outbox"]++
			}
		}
		after = recs[len(recs)-1].Seq
	}
	conn, err := mongodb.Open(ctx, cfg.Sources[0].URI, cfg.Dir())
	if err != nil {
		return []string{err.Error()}
	}
	defer conn.Close(ctx)
	count := func(db, coll string) int64 {
		n, err := conn.Client.Database(db).Collection(coll).CountDocuments(ctx, bson.M{})
		if err != nil {
			return -1
		}
		return n
	}
	want["cache.shop.orders"] = count("shop", "orders")
	var problems []string
	for _, ns := range []string{"audit.enriched", "notify.outbox", "cache.shop.orders"} {
		db, coll, _ := strings.Cut(ns, ".")
		if got := count(db, coll); got != want[ns] {
			problems = append(problems, fmt.Sprintf("trigger writes: %s holds %d documents, want %d", ns, got, want[ns]))
		}
	}
	return problems
}

// write applies the workload from the stored progress up to opts.Ops,
// showing its progress.
func write(ctx context.Context, client lungo.IClient, opts Options) (int, error) {
	next, err := storedNext(ctx, client)
	if err != nil {
		return 0, err
	}
	if next > 0 {
		fmt.Fprintf(opts.Progress, "resuming the workload at operation %d of %d\n", next, opts.Ops)
	}
	w := NewWorkload(opts.Seed)
	for i := 0; i < next; i++ {
		w.Next()
	}
	meter := progress.New(opts.Progress, "workload", int64(opts.Ops), "operations", progress.WithStart(int64(next)))
	written := 0
	for i := next; i < opts.Ops; i++ {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		if err := writeOp(ctx, client, w.Next(), i); err != nil {
			return written, err
		}
		written++
		meter.Add(1)
	}
	if written > 0 {
		meter.Finish()
	}
	return written, nil
}

// storedNext reads the index of the next workload operation to write.
func storedNext(ctx context.Context, client lungo.IClient) (int, error) {
	var p struct {
		Next int `bson:"next"`
	}
	err := client.Database(metadataDB).Collection(progressColl).FindOne(ctx, bson.M{"_id": "workload"}).Decode(&p)
	if err != nil && !errors.Is(err, lungoErrNoDocuments) {
		return 0, fmt.Errorf("read workload progress: %w", err)
	}
	return p.Next, nil
}

// writeOp applies operation i and moves the stored progress past it, in
// one source transaction.
func writeOp(ctx context.Context, client lungo.IClient, op Op, i int) error {
	progress := client.Database(metadataDB).Collection(progressColl)
	ddl := op.Kind == change.OpDrop || op.Kind == change.OpRename
	if ddl {
		// The embedded engine cannot drop or rename inside a transaction.
		// Doing it again after a crash is harmless: a missing collection
		// drops without an event, and renaming a missing one fails without
		// one (NamespaceNotFound), so the history still has exactly one.
		if err := apply(ctx, client, op); err != nil {
			return fmt.Errorf("workload operation %d (%s %s): %w", i, op.Kind, op.NS, err)
		}
	}
	err := client.UseSession(ctx, func(sc lungo.ISessionContext) error {
		_, err := sc.WithTransaction(sc, func(tc lungo.ISessionContext) (any, error) {
			if !ddl {
				if err := apply(tc, client, op); err != nil {
					return nil, err
				}
			}
			_, err := progress.UpdateOne(tc, bson.M{"_id": "workload"},
				bson.M{"$set": bson.M{"next": i + 1}}, options.Update().SetUpsert(true))
			return nil, err
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("workload operation %d (%s %s %d): %w", i, op.Kind, op.NS, op.ID, err)
	}
	return nil
}

func apply(ctx context.Context, client lungo.IClient, op Op) error {
	coll := client.Database(op.NS.DB).Collection(op.NS.Coll)
	var err error
	switch op.Kind {
	case change.OpInsert:
		_, err = coll.InsertOne(ctx, op.Doc)
	case change.OpUpdate:
		var res *mongoUpdateResult
		res, err = coll.UpdateOne(ctx, bson.M{"_id": op.ID}, op.Update)
		if err == nil && res.MatchedCount != 1 {
			err = fmt.Errorf("update matched %d documents", res.MatchedCount)
		}
	case change.OpReplace:
		_, err = coll.ReplaceOne(ctx, bson.M{"_id": op.ID}, op.Doc)
	case change.OpDelete:
		_, err = coll.DeleteOne(ctx, bson.M{"_id": op.ID})
	case change.OpDrop:
		err = coll.Drop(ctx)
	case change.OpRename:
		err = client.Database("admin").RunCommand(ctx, bson.D{{Key: "renameCollection", Value: op.NS.String()},
			{Key: "to", Value: op.To.String()}, {Key: "dropTarget", Value: true}}).Err()
		var ce mongo.CommandError
		if errors.As(err, &ce) && ce.Code == 26 { // NamespaceNotFound: renamed before a crash
			err = nil
		}
	}
	return err
}

// Verify checks that the outbox holds exactly the workload's events, in
// order, once each, and that the jsonl file holds exactly the outbox's
// events. It returns one line per problem (at most a few of each kind).
func Verify(ob *outbox.Outbox, eventsFile string, seed uint64, n int) []string {
	var problems []string
	want := Ops(seed, n)
	var got []outbox.Record
	for after := uint64(0); ; {
		recs, err := ob.Read(after, 10000, 0)
		if err != nil {
			return append(problems, fmt.Sprintf("read outbox: %v", err))
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Source == sourceID {
				got = append(got, r)
			}
		}
		after = recs[len(recs)-1].Seq
	}
	if len(got) != len(want) {
		problems = append(problems, fmt.Sprintf("outbox holds %d events of source %s, the workload wrote %d", len(got), sourceID, len(want)))
	}
	bad := 0
	for i := 0; i < min(len(got), len(want)) && bad < 5; i++ {
		ev, err := change.Parse(got[i].Raw)
		if err != nil {
			problems = append(problems, fmt.Sprintf("event %d: %v", got[i].Seq, err))
			bad++
			continue
		}
		id, _ := ev.DocumentID()
		gotID, _ := id.AsInt64OK()
		w := want[i]
		if ev.OperationType != w.Kind || ev.NS != w.NS || gotID != int64(w.ID) || ev.To != w.To {
			problems = append(problems, fmt.Sprintf("outbox event %d is %s %s _id=%s, workload operation %d was %s %s _id=%d",
				got[i].Seq, ev.OperationType, ev.NS, id, i, w.Kind, w.NS, w.ID))
			bad++
		}
	}
	lines, err := jsonl.ReadFile(eventsFile)
	if err != nil {
		return append(problems, fmt.Sprintf("read %s: %v", eventsFile, err))
	}
	if len(lines) != len(got) {
		problems = append(problems, fmt.Sprintf("%s has %d lines, the outbox %d events", eventsFile, len(lines), len(got)))
	}
	for i := 0; i < min(len(lines), len(got)); i++ {
		if lines[i].Seq != got[i].Seq {
			problems = append(problems, fmt.Sprintf("%s line %d has sequence %d, expected %d", eventsFile, i+1, lines[i].Seq, got[i].Seq))
			break
		}
	}
	return problems
}

// Aliases keep the driver types in one place.
type mongoUpdateResult = mongo.UpdateResult

var lungoErrNoDocuments = mongo.ErrNoDocuments

// verifyAudit checks the audit log: its hash chain is intact, every drop
// and rename in the outbox has exactly one record of its class, and the
// deliberate delete burst is recorded as a mass delete whenever this run
// wrote a whole one.
func verifyAudit(ob *outbox.Outbox, sum *Summary, opts Options) (uint64, []string) {
	path, written := sum.AuditLog, sum.Written
	var problems []string
	// The demo leaves the verification key next to the log: a real
	// deployment moves it offline.
	var keys []audit.VerifyKey
	names, _ := filepath.Glob(path + ".key*")
	for _, name := range names {
		k, err := audit.ReadKeyFile(name)
		if err != nil {
			return 0, []string{fmt.Sprintf("audit key: %v", err)}
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return 0, []string{fmt.Sprintf("audit log %s: no verification key %s.key", path, path)}
	}
	sum.AuditKey = keys[0].Path
	f, err := os.Open(path)
	if err != nil {
		return 0, []string{fmt.Sprintf("audit log: %v", err)}
	}
	defer f.Close()
	rep, err := audit.CheckSealed(f, nil, keys)
	n := rep.Records
	if err != nil {
		return n, []string{fmt.Sprintf("audit log %s does not verify with its key: %v", path, err)}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return n, []string{err.Error()}
	}
	// Records of drops and renames by class and outbox sequence.
	type key struct {
		class string
		seq   uint64
	}
	ddl := map[key]int{}
	bursts := 0
	for r, err := range audit.Query(f, audit.Filter{}) {
		if err != nil {
			return n, []string{fmt.Sprintf("audit log: %v", err)}
		}
		switch r.Class {
		case audit.ClassDrop, audit.ClassRename:
			ddl[key{r.Class, r.Seq}]++
		case audit.ClassMassDelete:
			if r.NS == nil || *r.NS != SessionsNS {
				problems = append(problems, fmt.Sprintf("unexpected mass delete record %d for %v", r.Index, r.NS))
			}
			bursts++
		}
	}
	wantDDL := 0
	for after := uint64(0); ; {
		recs, err := ob.Read(after, 10000, 0)
		if err != nil || len(recs) == 0 {
			break
		}
		for _, r := range recs {
			ev, err := change.Parse(r.Raw)
			if err != nil || ev.OperationType != change.OpDrop && ev.OperationType != change.OpRename {
				continue
			}
			wantDDL++
			if n := ddl[key{ev.OperationType, r.Seq}]; n != 1 {
				problems = append(problems, fmt.Sprintf("%s at outbox sequence %d has %d audit records, want 1", ev.OperationType, r.Seq, n))
			}
		}
		after = recs[len(recs)-1].Seq
	}
	if len(ddl) != wantDDL {
		problems = append(problems, fmt.Sprintf("audit log has drop and rename records for %d events, the outbox has %d drops and renames", len(ddl), wantDDL))
	}
	// A delete phase wholly written by this run must have produced a burst.
	first := opts.Ops - written
	for b := 0; b*BlockOps < opts.Ops; b++ {
		start := b*BlockOps + sessionsStart + sessionsN
		if start >= first && start+sessionsN <= opts.Ops && bursts == 0 {
			problems = append(problems, fmt.Sprintf("operations %d-%d deleted %d sessions in a burst, but the audit log has no mass delete record", start, start+sessionsN-1, sessionsN))
			break
		}
	}
	return n, problems
}

// verifyReplica compares the replica with the source, document by document,
// as `godwit verify` does.
func verifyReplica(ctx context.Context, cfg *config.Config) []string {
	p := replicate.Pipelines(cfg)[0]
	src, err := mongodb.Open(ctx, p.SourceURI, p.Dir)
	if err != nil {
		return []string{err.Error()}
	}
	defer src.Close(ctx)
	dst, err := mongodb.Open(ctx, p.Config.Target, p.Dir)
	if err != nil {
		return []string{err.Error()}
	}
	defer dst.Close(ctx)
	var out strings.Builder
	rep, err := replicate.Verify(ctx, src.Client, dst.Client, replicate.VerifyConfig(p.Config, p.MetadataDB, &out))
	if err != nil {
		return []string{fmt.Sprintf("verify replica: %v", err)}
	}
	if !rep.Equal {
		return []string{"the replica differs from the source:\n" + out.String()}
	}
	return nil
}

// addBrokerSinks adds the kafka and nats sinks the options ask for.
func addBrokerSinks(cfg *config.Config, opts Options) error {
	if len(opts.Kafka) > 0 {
		cfg.Sinks = append(cfg.Sinks, config.Sink{ID: "kafka", Type: "kafka",
			Settings: &kafka.Config{Brokers: opts.Kafka, Topic: "godwit-demo.{db}.{coll}", CreateTopics: true}})
	}
	if opts.NATS != "" {
		cfg.Sinks = append(cfg.Sinks, config.Sink{ID: "nats", Type: "nats",
			Settings: &nats.Config{Servers: []string{opts.NATS}, Prefix: "godwit-demo", Stream: &nats.Stream{Name: "GODWIT_DEMO", Create: true}}})
	}
	return cfg.Validate()
}

// verifyBrokerSinks checks that the kafka and nats sinks' cursors reached
// the end of the outbox with nothing parked: the brokers acknowledged every
// event.
func verifyBrokerSinks(ob *outbox.Outbox, cfg *config.Config, sinks map[string]outbox.SinkState) []string {
	var problems []string
	last := ob.LastSeq()
	for _, sc := range cfg.Sinks {
		if sc.Type != "kafka" && sc.Type != "nats" {
			continue
		}
		st := sinks[sc.ID]
		if st.Acked != last || st.Parked != 0 {
			problems = append(problems, fmt.Sprintf("sink %s: the broker acknowledged events up to %d of %d (%d parked)", sc.ID, st.Acked, last, st.Parked))
		}
	}
	return problems
}
