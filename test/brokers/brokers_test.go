// Package brokers drives the built godwit binary against Kafka (franz-go's
// in-process kfake cluster) and NATS JetStream (nats-server in process). It
// is apart from package test so that its subprocess runs have their own
// test-binary time budget.
package brokers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/godwit-dev/godwit/internal/testwait"
)

var godwit string // path of the binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "godwit-brokers-")
	if err != nil {
		panic(err)
	}
	godwit = filepath.Join(dir, "godwit")
	build := exec.Command("go", "build", "-o", godwit, "../../cmd/godwit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building godwit:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type demoSummary struct {
	Captured  uint64            `json:"captured"`
	Delivered map[string]uint64 `json:"delivered"`
	Verified  bool              `json:"verified"`
	Problems  []string          `json:"problems"`
}

// runDemo runs the demo to completion and decodes its last output line.
func runDemo(t *testing.T, args ...string) demoSummary {
	t.Helper()
	cmd := exec.Command(godwit, append([]string{"demo", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var s demoSummary
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &s); jerr != nil {
		t.Fatalf("demo's last line is not JSON (%v): %q\nstderr:\n%s", jerr, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("demo exited with %v: %+v\nstderr:\n%s", err, s, stderr.String())
	}
	return s
}

// crashRNG returns the random source choosing the kill moments, seeded
// from the clock or GODWIT_CRASH_SEED, and logs the seed to replay.
func crashRNG(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("GODWIT_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("crash seed %d (GODWIT_CRASH_SEED=%d to replay)", seed, seed)
	return rand.New(rand.NewPCG(seed, 2))
}

// brokers starts franz-go's in-process Kafka-protocol cluster and the real
// nats-server (JetStream, file storage) for the godwit binary to deliver to.
func brokers(t *testing.T) (kafkaAddr, natsURL string) {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(testwait.Long) {
		t.Fatal("nats-server did not start")
	}
	return kc.ListenAddrs()[0], ns.ClientURL()
}

// kafkaSeqs counts the records of every godwit-demo topic per godwit-seq.
func kafkaSeqs(t *testing.T, addr string) map[uint64]int {
	t.Helper()
	ctx := testwait.Context(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, "godwit-demo.") {
			names = append(names, name)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	cl.AddConsumeTopics(names...)
	seqs := map[uint64]int{}
	for read := int64(0); read < total; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", read, total, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			for _, h := range r.Headers {
				if h.Key == "godwit-seq" {
					n, _ := strconv.ParseUint(string(h.Value), 10, 64)
					seqs[n]++
				}
			}
		})
	}
	return seqs
}

// natsSeqs counts the messages of the demo's stream per godwit-seq.
func natsSeqs(t *testing.T, url string) map[uint64]int {
	t.Helper()
	ctx := testwait.Context(t)
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	str, err := js.Stream(ctx, "GODWIT_DEMO")
	if err != nil {
		t.Fatal(err)
	}
	st := str.CachedInfo().State
	seqs := map[uint64]int{}
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := str.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseUint(m.Header.Get("godwit-seq"), 10, 64)
		seqs[n]++
	}
	return seqs
}

// checkSeqs asserts that seqs holds 1..n, each at least once, and returns
// the number of duplicates.
func checkSeqs(t *testing.T, broker string, seqs map[uint64]int, n uint64) int {
	t.Helper()
	dups := 0
	for s := uint64(1); s <= n; s++ {
		if seqs[s] == 0 {
			t.Fatalf("%s lacks event %d", broker, s)
		}
		dups += seqs[s] - 1
	}
	if uint64(len(seqs)) != n {
		t.Fatalf("%s holds %d distinct events, want %d", broker, len(seqs), n)
	}
	return dups
}

// TestDemo_BrokerSinksSurviveKill9 runs `godwit demo --kafka … --nats …`,
// kills it with SIGKILL while it publishes (after a random number of
// messages), restarts it each time, and checks the brokers: every event in
// Kafka at least once, duplicates bounded by one runner batch per kill;
// every event in JetStream exactly once; the demo's summary has delivered
// per sink.
func TestDemo_BrokerSinksSurviveKill9(t *testing.T) {
	rng := crashRNG(t)
	kafkaAddr, natsURL := brokers(t)
	const ops, kills, batch = 600, 5, 1000
	dir := t.TempDir()
	args := []string{"demo", "--json", "--ops", strconv.Itoa(ops), "--data", dir, "--kafka", kafkaAddr, "--nats", natsURL}
	// Kill while godwit publishes: after it published a random number of
	// messages in this run (seen by a plain NATS subscriber).
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	published := make(chan struct{}, 1<<16)
	if _, err := nc.Subscribe("godwit-demo.>", func(*natsgo.Msg) {
		select {
		case published <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t)
	killed := 0
	for attempt := 0; killed < kills && attempt < 3*kills; attempt++ {
		for len(published) > 0 {
			<-published
		}
		cmd := exec.Command(godwit, args...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		seen, killAt := 0, 1+rng.IntN(40)
	run:
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("demo failed on its own before the kill (run %d): %v", attempt, err)
				}
				attempt = 3 * kills // finished: the workload is complete
				break run
			case <-published:
				if seen++; seen >= killAt {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					<-done
					killed++
					break run
				}
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				t.Fatal(ctx.Err())
			}
		}
	}
	t.Logf("killed godwit %d times", killed)
	s := runDemo(t, args[2:]...)
	if !s.Verified || s.Captured != ops || s.Delivered["kafka"] != ops || s.Delivered["nats"] != ops {
		t.Fatalf("after %d kills: %+v", killed, s)
	}
	dups := checkSeqs(t, "kafka", kafkaSeqs(t, kafkaAddr), ops)
	if dups > killed*batch {
		t.Fatalf("kafka has %d duplicates after %d kills, want at most %d", dups, killed, killed*batch)
	}
	t.Logf("kafka: every event present, %d duplicates identified by godwit-seq", dups)
	if dups := checkSeqs(t, "nats", natsSeqs(t, natsURL), ops); dups != 0 {
		t.Fatalf("nats stored %d events twice: the duplicate window should drop redeliveries", dups)
	}
}
