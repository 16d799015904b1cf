package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/envelope"
	"github.com/godwit-dev/godwit/sink/internal/brokers"
	"github.com/godwit-dev/godwit/sink/internal/brokertest"
	"github.com/godwit-dev/godwit/sink/nats"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

func TestMain(m *testing.M) {
	if brokertest.IsChild() {
		brokertest.RunChild(func() (sink.Sink, error) {
			var cfg nats.Config
			if err := json.Unmarshal(brokertest.ChildConfig(), &cfg); err != nil {
				return nil, err
			}
			return nats.Open(context.Background(), cfg)
		})
	}
	os.Exit(m.Run())
}

// startServer runs the real nats-server in process, JetStream on, storing
// files in storeDir.
func startServer(t testing.TB, storeDir string, port int, edit ...func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true}
	for _, e := range edit {
		e(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(testwait.Long) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func open(t testing.TB, cfg nats.Config) *nats.Sink {
	t.Helper()
	s, err := nats.Open(testwait.Context(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// readStream returns every message of the stream, in stream order.
func readStream(t testing.TB, url, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testwait.Context(t)
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	str, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	st := str.CachedInfo().State
	var out []*jetstream.RawStreamMsg
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := str.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// checkExactlyOnce asserts that msgs are the events of want, each once, in
// outbox order, with their godwit headers and message ids.
func checkExactlyOnce(t testing.TB, msgs []*jetstream.RawStreamMsg, want []outbox.Record) {
	t.Helper()
	if len(msgs) != len(want) {
		seqs := make([]string, len(msgs))
		for i, m := range msgs {
			seqs[i] = m.Header.Get(envelope.HeaderSeq)
		}
		if len(seqs) > 40 {
			seqs = append(seqs[:40], "…")
		}
		t.Fatalf("%d messages in the stream, want %d (seqs %s)", len(msgs), len(want), strings.Join(seqs, " "))
	}
	for i, m := range msgs {
		w := want[i]
		if got := m.Header.Get(envelope.HeaderSeq); got != strconv.FormatUint(w.Seq, 10) {
			t.Fatalf("message %d has seq %s, want %d", i, got, w.Seq)
		}
		if got := m.Header.Get(natsgo.MsgIdHdr); got != nats.MsgID(w.Source, w.Seq) {
			t.Fatalf("message %d: Nats-Msg-Id %q", i, got)
		}
		var d bson.D
		if err := bson.UnmarshalExtJSON(m.Data, false, &d); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		ev, _ := change.Parse(w.Raw)
		if d.Map()["operationType"] != ev.OperationType || m.Header.Get(envelope.HeaderOperation) != ev.OperationType {
			t.Fatalf("message %d is not event %d", i, w.Seq)
		}
	}
}

func TestSink_Conformance(t *testing.T) {
	srv := startServer(t, t.TempDir(), -1)
	var mu sync.Mutex
	streams := map[string]int{}
	id := func(dir string) int {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := streams[dir]; !ok {
			streams[dir] = len(streams)
		}
		return streams[dir]
	}
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			n := id(dir)
			s, err := nats.Open(testwait.Context(t), nats.Config{Servers: []string{srv.ClientURL()}, Prefix: fmt.Sprintf("conf%d", n),
				Stream: &nats.Stream{Name: fmt.Sprintf("CONF%d", n), Create: true}})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			checkExactlyOnce(t, readStream(t, srv.ClientURL(), fmt.Sprintf("CONF%d", id(dir))), want)
		},
	})
}

func records(events [][]byte) []outbox.Record {
	out := make([]outbox.Record, len(events))
	for i, ev := range events {
		out[i] = outbox.Record{Seq: uint64(i + 1), Source: "shop", CapturedAt: time.Now(), Raw: ev}
	}
	return out
}

func TestSink_Deliver(t *testing.T) {
	srv := startServer(t, t.TempDir(), -1)
	ctx := testwait.Context(t)
	recs := records(brokertest.Events(30, 3, 300))

	t.Run("SubjectsHeadersAndStreamDefaults", func(t *testing.T) {
		s := open(t, nats.Config{Servers: []string{srv.ClientURL()}, Prefix: "acme.cdc", Stream: &nats.Stream{Name: "CDC", Create: true}})
		if err := s.Deliver(ctx, recs); err != nil {
			t.Fatal(err)
		}
		msgs := readStream(t, srv.ClientURL(), "CDC")
		checkExactlyOnce(t, msgs, recs)
		if got := msgs[0].Subject; got != "acme.cdc.shop.orders.insert" {
			t.Errorf("subject %q, want acme.cdc.shop.orders.insert", got)
		}
		nc, _ := natsgo.Connect(srv.ClientURL())
		defer nc.Close()
		js, _ := jetstream.New(nc)
		str, err := js.Stream(ctx, "CDC")
		if err != nil {
			t.Fatal(err)
		}
		cfg := str.CachedInfo().Config
		if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 2*time.Minute || cfg.Replicas != 1 || cfg.Subjects[0] != "acme.cdc.>" {
			t.Errorf("created stream %+v", cfg)
		}
	})
	t.Run("NamesBecomeSubjectTokens", func(t *testing.T) {
		s := open(t, nats.Config{Servers: []string{srv.ClientURL()}})
		if got := s.SubjectOf("a", "shop", "orders.archive v2", "update"); got != "godwit.shop.orders_archive_v2.update" {
			t.Errorf("subject %q", got)
		}
	})
	t.Run("ExistingStreamIsLeftAlone", func(t *testing.T) {
		nc, _ := natsgo.Connect(srv.ClientURL())
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}, Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
		s := open(t, nats.Config{Servers: []string{srv.ClientURL()}, Prefix: "mine", Stream: &nats.Stream{Name: "MINE", Create: true}})
		if err := s.Deliver(ctx, recs[:3]); err != nil {
			t.Fatal(err)
		}
		str, _ := js.Stream(ctx, "MINE")
		if info := str.CachedInfo(); info.Config.Storage != jetstream.MemoryStorage || info.State.Msgs != 3 {
			t.Errorf("stream %+v %+v", info.Config, info.State)
		}
	})
	t.Run("NoStreamIsAnError", func(t *testing.T) {
		s := open(t, nats.Config{Servers: []string{srv.ClientURL()}, Prefix: "nostream", AckTimeout: 2 * time.Second})
		if err := s.Deliver(ctx, recs[:2]); err == nil {
			t.Fatal("publishing to subjects no stream captures succeeded: the events would be lost")
		}
	})
}

func TestSink_Auth(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	recs := records(brokertest.Events(1, 1, 100))
	for _, tc := range []struct {
		name      string
		server    func(*server.Options)
		good, bad nats.Config
		secret    string
	}{
		{"Token", func(o *server.Options) { o.Authorization = "tok-123456" },
			nats.Config{Token: "tok-123456"}, nats.Config{Token: "tok-wrong-999"}, "tok-wrong-999"},
		{"UserPassword", func(o *server.Options) { o.Username, o.Password = "godwit", "pw-123456" },
			nats.Config{Username: "godwit", Password: "pw-123456"}, nats.Config{Username: "godwit", Password: "pw-wrong-999"}, "pw-wrong-999"},
		{"NKey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			nats.Config{NKeySeedFile: seedFile}, nats.Config{Token: "tok-wrong-999"}, "tok-wrong-999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, t.TempDir(), -1, tc.server)
			ctx := testwait.Context(t)
			good := tc.good
			good.Servers, good.Stream = []string{srv.ClientURL()}, &nats.Stream{Name: "AUTH", Create: true}
			if err := open(t, good).Deliver(ctx, recs); err != nil {
				t.Fatal(err)
			}
			bad := tc.bad
			bad.Servers, bad.AckTimeout = []string{srv.ClientURL()}, 2*time.Second
			s, err := nats.Open(ctx, bad)
			if err == nil {
				err = s.Deliver(ctx, recs)
				_ = s.Close(ctx)
			}
			if err == nil {
				t.Fatal("wrong credentials delivered")
			}
			if strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	srv := []string{"nats://h:4222"}
	for _, tc := range []struct {
		cfg   nats.Config
		field string
	}{
		{nats.Config{}, "servers:"},
		{nats.Config{Servers: []string{"nats://a:1,nats://b:1"}}, "servers[0]:"},
		{nats.Config{Servers: srv, Subject: "{prefix}.{collection}"}, "subject:"},
		{nats.Config{Servers: srv, Subject: "a.*.{db}"}, "subject:"},
		{nats.Config{Servers: srv, Prefix: "a..b"}, "prefix:"},
		{nats.Config{Servers: srv, Token: "t", Username: "u", Password: "p"}, "token, username"},
		{nats.Config{Servers: srv, Username: "u"}, "password:"},
		{nats.Config{Servers: srv, Stream: &nats.Stream{}}, "stream.name:"},
		{nats.Config{Servers: srv, Stream: &nats.Stream{Name: "S", Storage: "disk"}}, "stream.storage:"},
		{nats.Config{Servers: srv, Envelope: envelope.Config{Encoding: "xml"}}, "envelope.encoding:"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	cfg := nats.Config{Servers: srv, Token: "tok-hunter2"}
	dump, _ := json.Marshal(cfg)
	if s := fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, dump); strings.Contains(s, "tok-hunter2") {
		t.Fatalf("the token prints: %s", s)
	}
	err := nats.Config{Servers: []string{"nats://u:pw-secret@h:4222", ""}}.Validate()
	if err == nil || strings.Contains(err.Error(), "pw-secret") {
		t.Fatalf("got %v", err)
	}
}

// TestSink_ServerDown: nats-server stops; the runner retries, the outbox
// fills to its bound and capture pauses, nothing is parked; the server
// restarts on the same port and files and every event is stored once.
func TestSink_ServerDown(t *testing.T) {
	store := t.TempDir()
	srv := startServer(t, store, -1)
	url, p := srv.ClientURL(), srvPort(t, srv)
	s := open(t, nats.Config{Servers: []string{url}, Prefix: "down", AckTimeout: time.Second, Stream: &nats.Stream{Name: "DOWN", Create: true}})
	want := brokertest.BackPressure(t, s, srv.Shutdown, func() { srv = startServer(t, store, p) })
	checkExactlyOnce(t, readStream(t, url, "DOWN"), want)
}

func srvPort(t testing.TB, s *server.Server) int {
	t.Helper()
	u := s.ClientURL()
	p, err := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSink_SurvivesSIGKILL kills a child running outbox + runner + nats
// sink three times while it publishes, then lets it finish: JetStream's
// duplicate window drops every redelivery, so each event is stored once.
func TestSink_SurvivesSIGKILL(t *testing.T) {
	srv := startServer(t, t.TempDir(), -1)
	cfg, _ := json.Marshal(nats.Config{Servers: []string{srv.ClientURL()}, Prefix: "crash", Stream: &nats.Stream{Name: "CRASH", Create: true}})
	kills := []int{400, 700, 900}
	midway := brokertest.Crash(t, cfg, kills...)
	t.Logf("%d of %d kills hit while events were undelivered", midway, len(kills))
	want := make([]outbox.Record, brokertest.CrashEvents)
	for i, ev := range brokertest.Events(brokertest.CrashEvents, 100, 256) {
		want[i] = outbox.Record{Seq: uint64(i + 1), Source: "src", Raw: ev}
	}
	checkExactlyOnce(t, readStream(t, srv.ClientURL(), "CRASH"), want)
}

// TestSink_RealServer runs the conformance suite against a real NATS
// server with JetStream.
func TestSink_RealServer(t *testing.T) {
	url := os.Getenv("GODWIT_TEST_NATS_URL")
	if url == "" {
		t.Skip("GODWIT_TEST_NATS_URL (nats://host:4222) is not set")
	}
	run := time.Now().UnixNano() % 1e9
	var mu sync.Mutex
	streams := map[string]int{}
	name := func(dir string) string {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := streams[dir]; !ok {
			streams[dir] = len(streams)
		}
		return fmt.Sprintf("godwit_test_%d_%d", run, streams[dir])
	}
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			s, err := nats.Open(testwait.Context(t), nats.Config{Servers: []string{url}, Prefix: name(dir),
				Stream: &nats.Stream{Name: name(dir), Create: true, MaxAge: time.Hour}})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			checkExactlyOnce(t, readStream(t, url, name(dir)), want)
		},
	})
}

func TestSink_TLS(t *testing.T) {
	files := brokertest.NewTLS(t)
	srv := startServer(t, t.TempDir(), -1, func(o *server.Options) { o.TLSConfig, o.TLSTimeout = files.Server(true), 5 })
	ctx := testwait.Context(t)
	recs := records(brokertest.Events(1, 1, 100))
	s := open(t, nats.Config{Servers: []string{srv.ClientURL()}, Stream: &nats.Stream{Name: "TLS", Create: true},
		TLS: &brokers.TLS{CA: files.CA, Cert: files.ClientCert, Key: files.ClientKey}})
	if err := s.Deliver(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// Mutual TLS: without a client certificate the server refuses.
	anon, err := nats.Open(ctx, nats.Config{Servers: []string{srv.ClientURL()}, AckTimeout: 2 * time.Second, TLS: &brokers.TLS{CA: files.CA}})
	if err == nil {
		err = anon.Deliver(ctx, recs)
		_ = anon.Close(ctx)
	}
	if err == nil {
		t.Fatal("delivered without the client certificate the server requires")
	}
}

// TestSink_CredentialsFile authenticates with a .creds file (user JWT and
// NKey seed) against nats-server in operator (decentralized auth) mode.
func TestSink_CredentialsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()

	oc := jwt.NewOperatorClaims(opub)
	oc.SystemAccount = spub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	sysJWT, _ := jwt.NewAccountClaims(spub).Encode(okp)
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(spub, sysJWT); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(apub, accJWT); err != nil {
		t.Fatal(err)
	}
	userJWT, err := jwt.NewUserClaims(upub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "godwit.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, t.TempDir(), -1, func(o *server.Options) {
		o.TrustedOperators, o.AccountResolver, o.SystemAccount = []*jwt.OperatorClaims{operator}, resolver, spub
	})
	ctx := testwait.Context(t)
	s := open(t, nats.Config{Servers: []string{srv.ClientURL()}, CredentialsFile: credsFile, Stream: &nats.Stream{Name: "CREDS", Create: true}})
	if err := s.Deliver(ctx, records(brokertest.Events(3, 1, 100))); err != nil {
		t.Fatal(err)
	}
	anon, err := nats.Open(ctx, nats.Config{Servers: []string{srv.ClientURL()}, AckTimeout: 2 * time.Second})
	if err == nil {
		err = anon.Deliver(ctx, records(brokertest.Events(1, 1, 100)))
		_ = anon.Close(ctx)
	}
	if err == nil {
		t.Fatal("delivered without credentials")
	}
}

// TestSink_StartsWhileServerIsDown: godwit starts while NATS is down; Open
// does not fail or wait, and once the server is up the runner's retries
// create the stream and deliver.
func TestSink_StartsWhileServerIsDown(t *testing.T) {
	store := t.TempDir()
	srv := startServer(t, store, -1)
	url, port := srv.ClientURL(), srvPort(t, srv)
	srv.Shutdown()
	ctx := testwait.Context(t)
	s, err := nats.Open(ctx, nats.Config{Servers: []string{url}, Prefix: "late", AckTimeout: time.Second, Stream: &nats.Stream{Name: "LATE", Create: true}})
	if err != nil {
		t.Fatalf("open while the server is down: %v", err)
	}
	defer s.Close(ctx)
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	want := records(brokertest.Events(5, 2, 100))
	raws := make([][]byte, len(want))
	for i, r := range want {
		raws[i] = r.Raw
		want[i].Source = "src"
	}
	if _, err := ob.Append(ctx, "src", raws, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	failed := make(chan struct{}, 100)
	r := sink.NewRunner(outbox.SinkCursor("late"), ob, s, sink.RunnerConfig{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxAttempts: 1 << 30,
		OnDeliver: func(_ time.Duration, _ int, err error) {
			if err != nil {
				select {
				case failed <- struct{}{}:
				default:
				}
			}
		}}, zerolog.Nop())
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	defer func() { stop(); <-ran }()
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("delivery did not fail while the server was down")
	}
	startServer(t, store, port)
	if err := r.WaitAcked(ctx, 5); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, readStream(t, url, "LATE"), want)
}
