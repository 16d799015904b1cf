package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/demo/guests"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/rpc"
)

// Authentication events are queued durably before ReportAuthEvent answers:
// kill -9 at random moments while events are reported and run, restart,
// and every event godwit acknowledged has run its function.
func TestAuthTrigger_SurvivesKill9(t *testing.T) {
	rng := crashRNG(t, 2)

	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	wasm, err := guests.Wasm("auditenricher")
	if err != nil {
		t.Fatal(err)
	}
	wasmPath := filepath.Join(dir, "auditenricher.wasm")
	if err := os.WriteFile(wasmPath, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	addr := d.addr(t, "gRPC API listening")
	run := func(args ...string) string {
		t.Helper()
		out, err := cli(t, nil, append(args, "--addr", addr, "--json")...)
		if err != nil {
			t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &v); err != nil || v.ID == "" {
			t.Fatalf("no id in %q: %v", out, err)
		}
		return v.ID
	}
	fnID := run("function", "create", "--user", "app", "--name", "audit", "--wasm", wasmPath)
	trID := run("trigger", "create", "--user", "app", "--name", "logins", "--type", "authentication", "--function", fnID,
		"--auth-ops", "login", "--writes", "audit.*", "--write-source", "local")

	// Report events from two clients until the kill; remember those godwit
	// answered for: they were queued.
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	var acked []string
	next := 0
	report := func(ctx context.Context, c pb.TriggerServiceClient, wait bool) (*pb.ReportAuthEventResponse, string, error) {
		mu.Lock()
		n := next
		next++
		mu.Unlock()
		at := base.Add(time.Duration(n) * time.Millisecond)
		user := fmt.Sprintf("user%d", n)
		res, err := c.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: "login", Provider: "oidc", UserId: user,
			Time: timestamppb.New(at), Wait: wait})
		return res, fmt.Sprintf("auth:login:oidc:%s:%d", user, at.UnixNano()), err
	}
	const kills = 8
	for k := 0; k < kills; k++ {
		if k > 0 {
			d = startDaemon(t, cfg)
			addr = d.addr(t, "gRPC API listening")
		}
		conn, err := rpc.Dial(rpc.ClientConfig{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		c := pb.NewTriggerServiceClient(conn)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					res, id, err := report(ctx, c, false)
					if err != nil {
						return // killed
					}
					if !slices.Equal(res.Queued, []string{trID}) {
						t.Errorf("report answered %v, want queued for %s", res, trID)
						return
					}
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}()
		}
		// Let some events through, then kill at a random moment.
		mu.Lock()
		from := len(acked)
		mu.Unlock()
		delay := time.Duration(50+rng.IntN(400)) * time.Millisecond
		deadline := time.After(testwait.Long)
		for waiting := true; waiting; {
			select {
			case <-time.After(delay):
				mu.Lock()
				waiting = len(acked) == from
				mu.Unlock()
			case <-deadline:
				t.Fatalf("no report answered within 30s of start %d:\n%s", k, d.logs())
			}
		}
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		cancel()
		wg.Wait()
		conn.Close()
	}

	// Restart; a last event reported with wait is handled after every
	// earlier one (one ordered trigger, one queue).
	d = startDaemon(t, cfg)
	addr = d.addr(t, "gRPC API listening")
	conn, err := rpc.Dial(rpc.ClientConfig{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	res, last, err := report(ctx, pb.NewTriggerServiceClient(conn), true)
	if err != nil || !slices.Equal(res.Triggered, []string{trID}) {
		t.Fatalf("last report: %v %v\n%s", res, err, d.logs())
	}
	acked = append(acked, last)
	tr, err := pb.NewTriggerServiceClient(conn).GetTrigger(ctx, &pb.GetTriggerRequest{Id: trID})
	if err != nil || tr.GetStatus().GetDeadLetters() != 0 {
		t.Fatalf("trigger after the kills: %v %v", tr, err)
	}
	// The CLI reports too, and lists no dead letters.
	out, err := cli(t, nil, "trigger", "report-auth", "--addr", addr, "--auth-op", "login", "--provider", "oidc",
		"--auth-user", "cli", "--wait")
	if err != nil || !strings.Contains(out, "queued as #") || !strings.Contains(out, "triggered: ["+trID+"]") {
		t.Fatalf("godwit trigger report-auth --wait: %v\n%s", err, out)
	}
	out, err = cli(t, nil, "trigger", "report-auth", "--addr", addr, "--auth-op", "delete", "--provider", "oidc", "--auth-user", "cli")
	if err != nil || !strings.Contains(out, "nothing queued") {
		t.Fatalf("report-auth for no trigger: %v\n%s", err, out)
	}
	if out, err := cli(t, nil, "trigger", "dead-letters", trID, "--addr", addr); err != nil || strings.TrimSpace(out) != "no dead letters" {
		t.Fatalf("godwit trigger dead-letters: %v\n%s", err, out)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.logs())
	}

	src, err := mongodb.Open(ctx, "lungo:source.lungo", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	cur, err := src.Client.Database("audit").Collection("enriched").Find(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for _, d := range docs {
		ran[d.ID] = true
	}
	var lost []string
	for _, id := range acked {
		if !ran[id] {
			lost = append(lost, id)
		}
	}
	t.Logf("%d kills, %d events acknowledged, %d entries written", kills, len(acked), len(docs))
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged events never ran their function, e.g. %v", len(lost), len(acked), lost[:min(5, len(lost))])
	}
}
