package replicate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// The crash test runs the replicator in a child process (this test binary,
// re-executed) and kills it with SIGKILL at random points: during the
// initial copy, then while it streams. The child writes a deterministic
// workload to the source; each operation commits together with the
// workload's progress, so a killed child continues where the source
// stopped.
const (
	childEnv     = "GODWIT_REPLICATE_CHILD"
	childOps     = 300
	childSeedDoc = 120 // per collection
)

var childColls = []string{"orders", "items", "users"}

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		if err := runChild(dir, os.Getenv(childEnv+"_TARGET"), os.Getenv(childEnv+"_FINAL") != ""); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSink_SurvivesSIGKILL(t *testing.T) {
	survivesSIGKILL(t, "")
}

// survivesSIGKILL runs the crash test into target: a mongodb:// URI, or ""
// for an embedded target file.
func survivesSIGKILL(t *testing.T, target string) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := killDir(t)
	ctx := testCtx(t)
	src, err := mongodb.Open(ctx, "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range childColls {
		insertMany(t, src.Client, "shop", c, 1+i*1000, childSeedDoc)
	}
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}

	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	copied := map[string]int{} // collection → runs that finished copying it
	// collection → a killed run copied its last batch but printed no
	// "collection copied": the kill may have landed after the copy was
	// marked done, before the line.
	unlogged := map[string]bool{}
	// Run 1 dies during the initial copy; runs 2 to 4 while streaming.
	copyKill := 1 + rnd.IntN(10)
	triggers := []func(line childLine) bool{
		func(l childLine) bool { return l.Message == "copy progress" && l.n() >= copyKill },
	}
	op := 0
	for i := 0; i < 3; i++ {
		op += 20 + rnd.IntN(60)
		at := op
		triggers = append(triggers, func(l childLine) bool { return l.Message == "op" && l.Op >= at })
	}
	for run, trigger := range triggers {
		lines, killed := runChildUntil(t, dir, target, false, trigger)
		if !killed {
			t.Fatalf("run %d ended before it could be killed", run+1)
		}
		full := map[string]bool{}
		for _, l := range lines {
			switch l.Message {
			case "copy progress":
				full[l.NS] = l.Copied == l.Of
			case "collection copied":
				copied[l.NS]++
				delete(full, l.NS)
			}
		}
		for ns, done := range full {
			if done {
				unlogged[ns] = true
			}
		}
	}
	lines, _ := runChildUntil(t, dir, target, true, nil)
	for _, l := range lines {
		if l.Message == "collection copied" {
			copied[l.NS]++
		}
	}
	for _, c := range childColls {
		if n := copied["shop."+c]; n != 1 && !(n == 0 && unlogged["shop."+c]) {
			t.Errorf("shop.%s was copied to the end %d times, want once: a restarted sync copies only unfinished collections", c, n)
		}
	}

	src, err = mongodb.Open(ctx, "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	dst, err := mongodb.Open(ctx, childTarget(dir, target), "")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(ctx)
	mustEqual(t, src.Client, dst.Client, replicate.VerifyOptions{Include: []string{"shop.*"}, MetadataDB: meta})
	if n := count(t, src.Client, meta, "workload"); n != 1 {
		t.Fatalf("workload progress missing")
	}
}

// killDir returns a directory for the crash test's files, in memory when
// the system has /dev/shm: SIGKILL loses nothing the kernel already has, so
// the test is about kill points, not about fsync latency.
func killDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "godwit-replicate-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

type childLine struct {
	Message string `json:"message"`
	NS      string `json:"ns"`
	Copied  int64  `json:"copied"`
	Of      int64  `json:"of"`
	Op      int    `json:"op"`
	count   int
}

func (l childLine) n() int { return l.count }

// runChildUntil runs a child and kills it with SIGKILL as soon as trigger
// accepts one of its log lines (nil: let it finish, which it must).
func runChildUntil(t *testing.T, dir, target string, final bool, trigger func(childLine) bool) ([]childLine, bool) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("child run (final %v) took %v", final, time.Since(start)) }()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childEnv+"_TARGET="+target)
	if final {
		cmd.Env = append(cmd.Env, childEnv+"_FINAL=1")
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(testwait.Long, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var lines []childLine
	killed := false
	progress := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var l childLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if l.Message == "copy progress" {
			progress++
			l.count = progress
		}
		lines = append(lines, l)
		if !killed && trigger != nil && trigger(l) {
			_ = cmd.Process.Kill() // SIGKILL
			killed = true
		}
	}
	err = cmd.Wait()
	if final && err != nil {
		t.Fatalf("final run failed: %v\n%s", err, stderr.String())
	}
	if !killed && !final {
		t.Logf("child stderr:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if killed && err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return lines, killed
}

// runChild is the replicator process: capture, initial sync, runner, and
// the workload, all on files in dir.
// childTarget is the target deployment of a crash test in dir.
func childTarget(dir, target string) string {
	if target == "" {
		return "lungo:" + filepath.Join(dir, "target.lungo")
	}
	return target
}

func runChild(dir, target string, final bool) error {
	// Every commit of a file-backed embedded engine rewrites the file,
	// oplog included: a short oplog keeps the crash test fast. Capture
	// stays far closer to the end than this.
	mongodb.EmbeddedOplogSize = 600
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := zerolog.New(os.Stdout).Level(zerolog.DebugLevel)
	src, err := mongodb.Open(ctx, "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		return err
	}
	dst, err := mongodb.Open(ctx, childTarget(dir, target), "")
	if err != nil {
		return err
	}
	// Retention off: the final run scans the outbox for its sentinel.
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{KeepAcked: true})
	if err != nil {
		return err
	}
	defer ob.Close(context.Background())
	cfg := replicate.Config{ID: "k", Source: "src", Target: childTarget(dir, target), Include: []string{"shop.*"}, CopyBatchSize: 20, Workers: 3}
	s, err := replicate.Open(ctx, cfg, dst, meta, log)
	if err != nil {
		return err
	}
	r := sink.NewRunner(outbox.SinkCursor("k"), ob, s, sink.RunnerConfig{BatchSize: 100, Policy: sink.PolicyHalt}, log)
	if _, err := r.Register(); err != nil {
		return err
	}
	c := capture.New(capture.Config{ID: "src", MetadataDatabase: meta, BatchInterval: 5 * time.Millisecond,
		CheckpointInterval: time.Millisecond}, src, ob, replicate.NewEchoFilter(meta), zerolog.Nop())
	capDone := make(chan error, 1)
	go func() { capDone <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-capDone:
		return fmt.Errorf("capture: %v", err)
	}
	// A first start has no stored resume token: capture one event so that
	// a restart resumes from here rather than from "now".
	if st, _, _ := ob.Source("src"); len(st.Token) == 0 {
		if _, err := src.Client.Database("shop").Collection("control").InsertOne(ctx, bson.D{{Key: "started", Value: time.Now()}}); err != nil {
			return err
		}
		if err := waitSourceEvents(ctx, ob, "src", 1); err != nil {
			return err
		}
	}
	if err := s.InitialSync(ctx, src); err != nil {
		return err
	}
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()

	if err := childWorkload(ctx, src.Client, log); err != nil {
		return err
	}
	if !final {
		<-ctx.Done() // wait for the kill
	}
	// Everything before a sentinel write is captured once the sentinel is.
	res, err := src.Client.Database("other").Collection("sentinel").InsertOne(ctx, bson.D{{Key: "at", Value: time.Now()}})
	if err != nil {
		return err
	}
	seq, err := waitFor(ctx, ob, func(ev *change.Event) bool {
		id, _ := ev.DocumentID()
		return ev.NS.DB == "other" && id.Equal(bsonValue(res.InsertedID))
	})
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, testwait.Long)
	defer wcancel()
	if err := r.WaitAcked(wctx, seq); err != nil {
		return err
	}
	cancel()
	if err := <-runDone; err != nil {
		return err
	}
	<-capDone
	_ = dst.Close(context.Background())
	_ = src.Close(context.Background())
	log.Info().Msg("done")
	return nil
}

func childWorkload(ctx context.Context, c lungo.IClient, log zerolog.Logger) error {
	progress := c.Database(meta).Collection("workload")
	var p struct {
		Next int `bson:"next"`
	}
	if err := progress.FindOne(ctx, bson.D{{Key: "_id", Value: "w"}}).Decode(&p); err != nil && !strings.Contains(err.Error(), "no documents") {
		return err
	}
	for i := p.Next; i < childOps; i++ {
		rnd := rand.New(rand.NewPCG(42, uint64(i)))
		coll := c.Database("shop").Collection(childColls[rnd.IntN(len(childColls))])
		id := int32(1 + rnd.IntN(2400))
		f := bson.D{{Key: "_id", Value: id}}
		kind := rnd.IntN(7)
		err := c.UseSession(ctx, func(sc lungo.ISessionContext) error {
			_, err := sc.WithTransaction(sc, func(tc lungo.ISessionContext) (any, error) {
				var err error
				switch kind {
				case 0:
					_, err = coll.ReplaceOne(tc, f, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: fmt.Sprint("r", i)}, {Key: "n", Value: int32(i)}}, options.Replace().SetUpsert(true))
				case 1, 2:
					_, err = coll.UpdateOne(tc, f, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(1)}}}})
				case 3:
					_, err = coll.UpdateOne(tc, f, bson.D{{Key: "$set", Value: bson.D{{Key: "sub.x", Value: i}, {Key: "w", Value: "set"}}}})
				case 4:
					_, err = coll.UpdateOne(tc, f, bson.D{{Key: "$push", Value: bson.D{{Key: "list", Value: i}}}, {Key: "$unset", Value: bson.D{{Key: "w", Value: ""}}}})
				default:
					_, err = coll.DeleteOne(tc, f)
				}
				if err != nil {
					return nil, err
				}
				_, err = progress.UpdateOne(tc, bson.D{{Key: "_id", Value: "w"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "next", Value: i + 1}}}}, options.Update().SetUpsert(true))
				return nil, err
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("workload operation %d: %w", i, err)
		}
		log.Info().Int("op", i+1).Msg("op")
	}
	return nil
}

// waitSourceEvents waits until capture stored n events of source id.
func waitSourceEvents(ctx context.Context, ob *outbox.Outbox, id string, n uint64) error {
	var captured uint64
	err := ob.WaitUntil(ctx, func(v outbox.View) (bool, error) {
		st, _, err := v.Source(id)
		captured = st.Captured
		return captured >= n, err
	})
	if err != nil {
		return fmt.Errorf("source %s captured %d events, want %d: %w", id, captured, n, err)
	}
	return nil
}

// waitFor waits until an event matching fn is in the outbox and returns its
// sequence.
func waitFor(ctx context.Context, ob *outbox.Outbox, fn func(*change.Event) bool) (uint64, error) {
	after := uint64(0)
	if o := ob.Stats().Oldest; o > 0 {
		after = o - 1
	}
	for {
		recs, err := ob.Read(after, 1000, 0)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			if ev, err := change.Parse(r.Raw); err == nil && fn(ev) {
				return r.Seq, nil
			}
			after = r.Seq
		}
		if len(recs) == 0 {
			if err := ob.Wait(ctx, after); err != nil {
				return 0, err
			}
		}
	}
}

func bsonValue(v any) bson.RawValue {
	raw, _ := bson.Marshal(bson.D{{Key: "v", Value: v}})
	return bson.Raw(raw).Lookup("v")
}
