package client_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/client"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// The crash test runs the daemon in a child process: this test binary,
// re-executed with childEnv set, runs a godwit server (the same
// server.Open/Run as `godwit serve`) and a writer inserting into its
// embedded source without pause. The built godwit binary cannot be the
// child: nothing outside its process can write into an embedded source
// (the engine's file belongs to one process), and `godwit demo --rate`
// re-verifies its whole workload on every restart.
const (
	childEnv     = "GODWIT_CLIENT_TEST_CHILD"
	childAddrEnv = "GODWIT_CLIENT_TEST_ADDR"
)

func childYAML(addr string) string {
	return fmt.Sprintf(`
api: {http_addr: "off", grpc_addr: %q}
sources: [{id: shop, uri: "lungo:source.lungo"}]
outbox: {keep_acked: true}
`, addr)
}

// runChild serves godwit from dir on addr and writes {_id: n, n: n} into
// shop.ticks, continuing after the documents already there, until killed.
func runChild(dir, addr string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	_, _, err := openServer(dir, childYAML(addr))
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	conn, err := mongodb.Open(ctx, "lungo:"+filepath.Join(dir, "source.lungo"), "")
	if err != nil {
		fail(err)
	}
	ticks := conn.Client.Database("shop").Collection("ticks")
	n, err := ticks.CountDocuments(ctx, bson.M{})
	if err != nil {
		fail(err)
	}
	fmt.Println("ready")
	for ; ; n++ {
		if _, err := ticks.InsertOne(ctx, bson.M{"_id": n, "n": n}); err != nil {
			fail(err)
		}
	}
}

// child is a running daemon process.
type child struct {
	cmd    *exec.Cmd
	exited chan error
}

func startChild(t *testing.T, dir, addr string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childAddrEnv+"="+addr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { c.kill(t) })
	select {
	case <-ready:
	case err := <-c.exited:
		c.exited <- err
		t.Fatalf("the daemon child exited before it was ready: %v", err)
	case <-time.After(testwait.Long):
		t.Fatal("the daemon child did not get ready")
	}
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill(t *testing.T) {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-c.exited:
		c.exited <- err
	case <-time.After(testwait.Long):
		t.Fatal("the daemon child did not die")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStream_ResumesAfterKill9 reads a durable subscription while its
// daemon is killed with SIGKILL and restarted three times. The stream
// reconnects by itself; the application sees every event in order, each
// once; the events are exactly the outbox's, and the documents' n are
// exactly the writer's (no gap at the source either). The application
// acks a few events behind, so godwit sends those again after each
// restart: the stream must not hand them out twice. A new stream of the
// subscription starts after the last acknowledged event. A live stream
// read only after the last restart gets the same events.
func TestStream_ResumesAfterKill9(t *testing.T) {
	ctx := testwait.Context(t)
	dir, addr := t.TempDir(), freeAddr(t)
	daemon := startChild(t, dir, addr)

	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reconnects := 0
	s, err := c.Subscribe(ctx, client.Filter{Namespaces: []string{"shop.ticks"}}, client.Durable("crash"),
		client.FromSequence(1), client.AckEvery(10, 50*time.Millisecond), client.Backoff(20*time.Millisecond, time.Second),
		client.OnReconnect(func(error, int, time.Duration) { reconnects++ }))
	if err != nil {
		t.Fatal(err)
	}
	// A live stream, read only at the end: it reconnects from the
	// sequence after the last one it saw, across the restarts.
	live, err := c.Subscribe(ctx, client.Filter{Namespaces: []string{"shop.ticks"}},
		client.Backoff(20*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	liveStart := live.Started().Start
	var seqs []uint64
	var ns []int64
	const kills, per, lag = 3, 40, 5
	read := func(n int) {
		t.Helper()
		for range n {
			if !s.Next(ctx) {
				t.Fatalf("after %d events: %v", len(seqs), s.Err())
			}
			var doc struct {
				N int64 `bson:"n"`
			}
			if err := s.Event().Decode(&doc); err != nil {
				t.Fatal(err)
			}
			seqs, ns = append(seqs, s.Event().Sequence), append(ns, doc.N)
			// Handled in a pipeline: the last few events are not acked yet
			// when the daemon dies, so its durable cursor is behind what
			// the stream has handed out, and it sends them again.
			if len(seqs) > lag {
				if err := s.AckSequence(seqs[len(seqs)-1-lag]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for range kills {
		read(per)
		daemon.kill(t)
		daemon = startChild(t, dir, addr)
	}
	read(per)
	if err := s.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // the last acks reach the daemon
		t.Fatal(err)
	}
	last := seqs[len(seqs)-1]
	s2, err := c.Subscribe(ctx, client.Filter{Namespaces: []string{"shop.ticks"}}, client.Durable("crash"))
	if err != nil {
		t.Fatal(err)
	}
	if st := s2.Started(); !st.Resumed || st.Start != last+1 {
		t.Errorf("a new stream started at %+v, want resumed at %d (after the last ack)", st, last+1)
	}
	s2.Close()
	liveWant := seqs[slices.IndexFunc(seqs, func(seq uint64) bool { return seq >= liveStart }):]
	var liveSeqs []uint64
	for len(liveSeqs) < len(liveWant) && live.Next(ctx) {
		liveSeqs = append(liveSeqs, live.Event().Sequence)
	}
	if !slices.Equal(liveSeqs, liveWant) {
		t.Errorf("the live stream (started at %d) read %v, want %v", liveStart, brief(liveSeqs), brief(liveWant))
	}
	daemon.kill(t)

	if reconnects == 0 {
		t.Error("the stream never reconnected: the kills did not reach it")
	}
	for i := range ns {
		if ns[i] != int64(i) {
			t.Fatalf("documents n = %v…, want 0, 1, 2, … without gaps or repeats (at index %d)", ns[:i+1], i)
		}
	}
	// What the application received is the outbox, in order, once each.
	cfg, err := config.Parse([]byte(childYAML(addr)), dir)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(cfg.Outbox.Path, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	var want []uint64
	for pos := uint64(0); pos < last; {
		recs, err := ob.Read(pos, 1000, 1<<20)
		if err != nil || len(recs) == 0 {
			t.Fatalf("outbox read after %d: %d records, %v", pos, len(recs), err)
		}
		for _, r := range recs {
			if ev, err := change.Parse(r.Raw); err == nil && ev.NS.String() == "shop.ticks" && r.Seq <= last {
				want = append(want, r.Seq)
			}
			pos = r.Seq
		}
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("received %d events %v\nthe outbox holds %d: %v", len(seqs), brief(seqs), len(want), brief(want))
	}
	t.Logf("%d events across %d SIGKILLs, %d reconnect attempts, 0 duplicates", len(seqs), kills, reconnects)
}

func brief(s []uint64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return strings.TrimSuffix(fmt.Sprint(s[:10]), "]") + " … " + strings.TrimPrefix(fmt.Sprint(s[len(s)-10:]), "[")
}
