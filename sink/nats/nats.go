// Package nats is a sink that publishes change events to NATS JetStream.
//
// # Basics
//
// Each event becomes one message on a subject from a template such as
// "{prefix}.{db}.{coll}.{op}", with the event in the configured envelope
// (package envelope) as its data and godwit's headers (source, outbox
// sequence, operation, namespace, cluster time). Messages are published
// asynchronously; Deliver returns only after JetStream acknowledged every
// one, so the runner acknowledges an outbox event only once it is stored.
//
// Every message carries Nats-Msg-Id "<source>:<seq>". JetStream drops a
// message whose id it saw within the stream's duplicate window, so the
// events a crash makes godwit publish again are stored once.
//
// # Caveats
//
//   - Exactly once holds within the duplicate window (default 2 minutes); a
//     redelivery after a longer outage is stored again, with the same
//     godwit-seq header.
//   - The message id is unique per outbox: two godwit instances publishing
//     into one stream need distinct source ids, and an outbox deleted and
//     recreated (sequences start at 1 again) must not publish into the
//     same stream within the duplicate window.
//   - Subject tokens cannot hold '.', '*', '>' or white space: those
//     characters of database, collection and source names become '_'.
package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/envelope"
	"github.com/godwit-dev/godwit/sink/internal/brokers"
)

// Config configures the sink. Zero fields take the documented defaults.
type Config struct {
	// Servers are NATS URLs (nats://host:4222, tls://host:4222). Required.
	Servers []string `yaml:"servers"`
	// Subject is a template with {prefix}, {source}, {db}, {coll} and
	// {op}. Default "{prefix}.{db}.{coll}.{op}".
	Subject string `yaml:"subject"`
	// Prefix fills {prefix}; it may hold dots. Default "godwit".
	Prefix string `yaml:"prefix"`
	// TLS connects over TLS.
	TLS *brokers.TLS `yaml:"tls"`
	// Token authenticates with a token.
	Token brokers.Secret `yaml:"token"`
	// Username and Password authenticate with a user and password.
	Username string         `yaml:"username"`
	Password brokers.Secret `yaml:"password"`
	// CredentialsFile is a .creds file (user JWT and NKey seed).
	CredentialsFile string `yaml:"credentials_file"`
	// NKeySeedFile is a file holding a user NKey seed.
	NKeySeedFile string `yaml:"nkey_seed_file"`
	// Stream, when set, names the stream the subjects belong to; with
	// create: true godwit creates it if it is missing.
	Stream *Stream `yaml:"stream"`
	// AckTimeout bounds the wait for JetStream's acknowledgement of a
	// message; then Deliver fails and the runner retries. Default 30s.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxPending caps messages awaiting acknowledgement. Default 4096.
	MaxPending int `yaml:"max_pending"`
	// Envelope chooses the message layout: godwit (default) or debezium.
	Envelope envelope.Config `yaml:"envelope"`
}

// Stream describes the stream godwit may create. An existing stream is
// never changed.
type Stream struct {
	// Name of the stream. Required.
	Name string `yaml:"name"`
	// Create creates the stream when it does not exist. Default false.
	Create bool `yaml:"create"`
	// Subjects the stream captures. Default ["{prefix}.>"].
	Subjects []string `yaml:"subjects"`
	// Storage is file (default) or memory.
	Storage string `yaml:"storage"`
	// Replicas is the stream's replication factor. Default 1.
	Replicas int `yaml:"replicas"`
	// MaxAge drops messages older than this. Default 0: kept until
	// max_bytes.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the stream; the oldest messages go first. Default 0:
	// unbounded.
	MaxBytes int64 `yaml:"max_bytes"`
	// DuplicateWindow is how long JetStream remembers message ids: the
	// span within which redeliveries are dropped. Default 2m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
}

var placeholders = []string{"prefix", "source", "db", "coll", "op"}

// Validate names the first bad field.
func (c Config) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("servers: at least one URL (nats://host:4222) is required")
	}
	for i, s := range c.Servers {
		if s == "" || strings.ContainsAny(s, " ,") {
			return fmt.Errorf("servers[%d]: %q: one URL per entry", i, logging.RedactURI(s))
		}
	}
	if c.Subject != "" {
		t, err := brokers.ParseTemplate(c.Subject, placeholders...)
		if err != nil {
			return fmt.Errorf("subject: %v", err)
		}
		if !validSubject(t.Expand(brokers.Vars{Prefix: "p", Source: "s", DB: "d", Coll: "c", Op: "o"}, subjectClean)) {
			return fmt.Errorf("subject: %q: want dot-separated tokens without '*', '>' or spaces", c.Subject)
		}
	}
	if c.Prefix != "" && !validSubject(c.Prefix) {
		return fmt.Errorf("prefix: %q: want dot-separated tokens without '*', '>' or spaces", c.Prefix)
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	auths := 0
	for _, set := range []bool{c.Token != "", c.Username != "", c.CredentialsFile != "", c.NKeySeedFile != ""} {
		if set {
			auths++
		}
	}
	switch {
	case auths > 1:
		return errors.New("token, username, credentials_file, nkey_seed_file: choose one way to authenticate")
	case c.Username != "" && c.Password == "":
		return errors.New("password: required with username")
	case c.Password != "" && c.Username == "":
		return errors.New("username: required with password")
	case c.AckTimeout < 0:
		return errors.New("ack_timeout: must not be negative")
	case c.MaxPending < 0:
		return errors.New("max_pending: must not be negative")
	}
	if st := c.Stream; st != nil {
		switch {
		case st.Name == "" || strings.ContainsAny(st.Name, ".*> \t"):
			return fmt.Errorf("stream.name: %q: required, without '.', '*', '>' or spaces", st.Name)
		case st.Storage != "" && st.Storage != "file" && st.Storage != "memory":
			return fmt.Errorf("stream.storage: %q: use file or memory", st.Storage)
		case st.Replicas < 0 || st.Replicas > 5:
			return errors.New("stream.replicas: use 1 to 5 (0 means 1)")
		case st.MaxAge < 0 || st.MaxBytes < 0 || st.DuplicateWindow < 0:
			return errors.New("stream.max_age, max_bytes, duplicate_window: must not be negative")
		}
	}
	if err := c.Envelope.Validate(); err != nil {
		return fmt.Errorf("envelope.%w", err)
	}
	return nil
}

func validSubject(s string) bool {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// subjectClean makes a value one subject token.
func subjectClean(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// Sink publishes to JetStream.
type Sink struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	enc     *envelope.Encoder
	subject brokers.Template
	last    uint64 // highest sequence JetStream acknowledged in this process

	streamReady bool // the stream exists (or is not godwit's to create)
}

// ConnectionState is the NATS connection's state: connected,
// reconnecting, disconnected or closed.
func (s *Sink) ConnectionState() string { return strings.ToLower(s.nc.Status().String()) }

// Open validates cfg, connects, and creates the stream when asked to (or,
// when the servers cannot be reached yet, at the first delivery). The
// connection reconnects by itself for as long as godwit runs.
func Open(ctx context.Context, cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Subject == "" {
		cfg.Subject = "{prefix}.{db}.{coll}.{op}"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "godwit"
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 4096
	}
	subject, _ := brokers.ParseTemplate(cfg.Subject, placeholders...)
	enc, err := envelope.New(cfg.Envelope)
	if err != nil {
		return nil, fmt.Errorf("envelope.%w", err)
	}
	opts := []nats.Option{nats.Name("godwit"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500 * time.Millisecond)}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token.Reveal()))
	case cfg.Username != "":
		opts = append(opts, nats.UserInfo(cfg.Username, cfg.Password.Reveal()))
	case cfg.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredentialsFile))
	case cfg.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	}
	servers := strings.Join(cfg.Servers, ",")
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %s", redactServers(cfg.Servers), logging.RedactText(err.Error()))
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending), jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		nc.Close()
		return nil, err
	}
	s := &Sink{cfg: cfg, nc: nc, js: js, enc: enc, subject: subject}
	s.streamReady = cfg.Stream == nil || !cfg.Stream.Create
	if !s.streamReady && nc.IsConnected() {
		// A server that is down now is not an error: the first delivery
		// creates the stream, and the runner retries until it can.
		if err := s.createStream(ctx, cfg.Stream); err == nil {
			s.streamReady = true
		}
	}
	return s, nil
}

func redactServers(servers []string) string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = logging.RedactURI(s)
	}
	return strings.Join(out, ",")
}

// StreamConfig returns the configuration Open creates a missing stream
// with: the documented defaults applied to st.
func (s *Sink) StreamConfig(st *Stream) jetstream.StreamConfig {
	sc := jetstream.StreamConfig{Name: st.Name, Subjects: st.Subjects, Storage: jetstream.FileStorage,
		Replicas: max(st.Replicas, 1), MaxAge: st.MaxAge, MaxBytes: -1, Duplicates: st.DuplicateWindow}
	if len(sc.Subjects) == 0 {
		sc.Subjects = []string{s.cfg.Prefix + ".>"}
	}
	if st.Storage == "memory" {
		sc.Storage = jetstream.MemoryStorage
	}
	if st.MaxBytes > 0 {
		sc.MaxBytes = st.MaxBytes
	}
	if sc.Duplicates == 0 {
		sc.Duplicates = 2 * time.Minute
	}
	return sc
}

func (s *Sink) createStream(ctx context.Context, st *Stream) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	if _, err := s.js.Stream(ctx, st.Name); err == nil {
		return nil // an existing stream is the user's: leave it as it is
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", st.Name, err)
	}
	_, err := s.js.CreateStream(ctx, s.StreamConfig(st))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", st.Name, err)
	}
	return nil
}

// SubjectOf returns the subject of an event.
func (s *Sink) SubjectOf(source, db, coll, op string) string {
	return s.subject.Expand(brokers.Vars{Prefix: s.cfg.Prefix, Source: source, DB: db, Coll: coll, Op: op}, subjectClean)
}

// MsgID returns the Nats-Msg-Id of an outbox record.
func MsgID(source string, seq uint64) string {
	return source + ":" + strconv.FormatUint(seq, 10)
}

// Deliver implements sink.Sink: it publishes the batch asynchronously and
// returns once JetStream acknowledged every message.
func (s *Sink) Deliver(ctx context.Context, batch []outbox.Record) error {
	if !s.streamReady {
		if err := s.createStream(ctx, s.cfg.Stream); err != nil {
			return err
		}
		s.streamReady = true
	}
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	at := make([]int, 0, len(batch)) // future → index in batch
	var stopErr error
	n := len(batch)
	for i, r := range batch {
		if r.Seq <= s.last {
			continue // replay of what JetStream already has
		}
		m, ok, err := s.enc.Encode(r)
		if err != nil {
			stopErr, n = sink.Permanent(err), i
			break
		}
		if !ok {
			continue
		}
		msg := nats.NewMsg(s.SubjectOf(r.Source, m.Event.NS.DB, m.Event.NS.Coll, m.Event.OperationType))
		msg.Data = m.Value
		for _, h := range m.Headers {
			msg.Header[h.Key] = []string{h.Value}
		}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithMsgID(MsgID(r.Source, r.Seq)))
		if err != nil {
			stopErr, n = fmt.Errorf("publish event %d to %s: %w", r.Seq, msg.Subject, err), i
			break
		}
		futures = append(futures, f)
		at = append(at, i)
	}

	failed, err := n, error(nil)
wait:
	for k, f := range futures {
		select {
		case <-f.Ok():
		case e := <-f.Err():
			failed, err = at[k], fmt.Errorf("publish event %d to %s: %w", batch[at[k]].Seq, f.Msg().Subject, e)
			break wait
		case <-ctx.Done():
			failed, err = at[k], ctx.Err()
			break wait
		}
	}
	if err == nil {
		err = stopErr
	}
	if failed > 0 {
		s.last = max(s.last, batch[failed-1].Seq)
	}
	switch {
	case err == nil:
		return nil
	case failed == 0:
		return err
	}
	return &sink.PartialError{Delivered: failed, Err: err}
}

// Close implements sink.Closer. Publishes still awaiting an acknowledgement
// belong to deliveries that already failed: the runner did not acknowledge
// them and delivers them again on the next start, so Close does not wait.
func (s *Sink) Close(context.Context) error {
	s.nc.Close()
	return nil
}
