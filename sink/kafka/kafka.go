// Package kafka is a sink that produces change events to Apache Kafka (or
// any Kafka-protocol broker: Redpanda, WarpStream, ...) with franz-go.
//
// # Basics
//
// Each event becomes one record: the key is the document key (so every
// change of one document lands on one partition, in order), the value is
// the event in the configured envelope (package envelope), and the headers
// name the source, outbox sequence, operation, namespace and cluster time.
// The topic comes from a template such as "{prefix}.{db}.{coll}".
//
// The producer is idempotent with acks=all. Deliver returns only after the
// brokers acknowledged every record of the batch, so the runner acknowledges
// an outbox event only once Kafka has it.
//
// # Caveats
//
// Delivery is at least once. Within one process an event acknowledged by
// Kafka is never produced again; after a crash the events delivered but not
// yet acknowledged in the outbox (at most one runner batch) are produced
// again, with the same godwit-source and godwit-seq headers: consumers that
// must not see duplicates skip a (source, seq) they already processed.
// A record that failed (the brokers were down past delivery_timeout) and is
// retried can land after later records of other documents; franz-go fails
// every later record of the same partition with it, so per-document order
// holds.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/envelope"
	"github.com/godwit-dev/godwit/sink/internal/brokers"
)

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Config configures the sink. Zero fields take the documented defaults.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// Topic is the topic, or a template of one with {prefix}, {source},
	// {db} and {coll}. Default "{prefix}.{db}.{coll}". Characters Kafka
	// does not allow in a topic name become '_'.
	Topic string `yaml:"topic"`
	// Prefix fills {prefix}. Default "godwit".
	Prefix string `yaml:"prefix"`
	// ClientID is the Kafka client id. Default "godwit".
	ClientID string `yaml:"client_id"`
	// TLS connects over TLS.
	TLS *brokers.TLS `yaml:"tls"`
	// SASL authenticates.
	SASL *SASL `yaml:"sasl"`
	// Compression is none, gzip, snappy (default), lz4 or zstd.
	Compression string `yaml:"compression"`
	// Linger is how long a partition waits for more records before a
	// produce request. Default 0: Deliver hands over a whole batch at once.
	Linger time.Duration `yaml:"linger"`
	// BatchMaxBytes caps one record batch. Default 1 MiB (the broker's
	// default message.max.bytes).
	BatchMaxBytes int32 `yaml:"batch_max_bytes"`
	// DeliveryTimeout bounds how long a record is retried inside the
	// producer before Deliver fails (and the runner retries with backoff).
	// Default 30s; at least 1s.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
	// Tombstones produces a record with a null value after each delete, for
	// compacted topics. Default false.
	Tombstones bool `yaml:"tombstones"`
	// CreateTopics asks the brokers to create missing topics (they still
	// need auto.create.topics.enable). Default false.
	CreateTopics bool `yaml:"create_topics"`
	// Envelope chooses the record layout: godwit (default) or debezium.
	Envelope envelope.Config `yaml:"envelope"`
}

// SASL is a mechanism and its credentials.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `yaml:"mechanism"`
	// Username and Password are the credentials. The password never
	// appears in logs, status or errors.
	Username string         `yaml:"username"`
	Password brokers.Secret `yaml:"password"`
}

var placeholders = []string{"prefix", "source", "db", "coll"}

// Validate names the first bad field.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("brokers: at least one host:port is required")
	}
	for i, b := range c.Brokers {
		if b == "" || strings.Contains(b, "://") || !strings.Contains(b, ":") {
			return fmt.Errorf("brokers[%d]: %q: want host:port, without a scheme", i, b)
		}
	}
	if c.Topic != "" {
		t, err := brokers.ParseTemplate(c.Topic, placeholders...)
		if err != nil {
			return fmt.Errorf("topic: %v", err)
		}
		name := t.Expand(brokers.Vars{Prefix: "p", Source: "s", DB: "d", Coll: "c"}, topicClean)
		if name != topicClean(name) || len(name) > 249 {
			return fmt.Errorf("topic: %q: a topic name has at most 249 of the characters a-z A-Z 0-9 . _ -", c.Topic)
		}
	}
	if c.Prefix != "" && topicClean(c.Prefix) != c.Prefix {
		return fmt.Errorf("prefix: %q: use the characters a-z A-Z 0-9 . _ -", c.Prefix)
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if s := c.SASL; s != nil {
		switch s.Mechanism {
		case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		default:
			return fmt.Errorf("sasl.mechanism: %q: use %s, %s or %s", s.Mechanism, MechanismPlain, MechanismScramSHA256, MechanismScramSHA512)
		}
		if s.Username == "" {
			return errors.New("sasl.username: required")
		}
		if s.Password == "" {
			return errors.New("sasl.password: required")
		}
	}
	if _, err := compression(c.Compression); err != nil {
		return err
	}
	switch {
	case c.Linger < 0:
		return errors.New("linger: must not be negative")
	case c.BatchMaxBytes < 0:
		return errors.New("batch_max_bytes: must not be negative")
	case c.DeliveryTimeout != 0 && c.DeliveryTimeout < time.Second:
		return errors.New("delivery_timeout: want at least 1s (0 means the default, 30s)")
	}
	if err := c.Envelope.Validate(); err != nil {
		return fmt.Errorf("envelope.%w", err)
	}
	return nil
}

func compression(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "snappy":
		return kgo.SnappyCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("compression: %q: use none, gzip, snappy, lz4 or zstd", name)
}

// topicClean replaces what Kafka does not allow in a topic name.
func topicClean(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

// Sink produces to Kafka.
type Sink struct {
	cfg    Config
	client *kgo.Client
	enc    *envelope.Encoder
	topic  brokers.Template
	last   uint64 // highest sequence Kafka acknowledged in this process
	conns  *connTracker
}

// connTracker counts the client's open connections per broker, from
// franz-go's connect and disconnect hooks, for status.
type connTracker struct {
	mu      sync.Mutex
	open    map[int32]int // broker node id → open connections
	lastErr string        // the last failed dial, redacted
}

func (c *connTracker) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.lastErr = logging.RedactText(err.Error())
		return
	}
	c.open[meta.NodeID]++
}

func (c *connTracker) OnBrokerDisconnect(meta kgo.BrokerMetadata, _ net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[meta.NodeID]--; c.open[meta.NodeID] <= 0 {
		delete(c.open, meta.NodeID)
	}
}

// ConnectionState says to how many brokers the client is connected, or
// why it is connected to none (it connects lazily: "not connected yet"
// before the first delivery).
func (s *Sink) ConnectionState() string {
	c := s.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(c.open) > 0:
		return fmt.Sprintf("connected to %d broker(s)", len(c.open))
	case c.lastErr != "":
		return "no broker connected: " + c.lastErr
	default:
		return "not connected yet"
	}
}

// Open validates cfg and creates the client. Connections are made lazily:
// an unreachable broker shows up as delivery errors, which the runner
// retries.
func Open(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Topic == "" {
		cfg.Topic = "{prefix}.{db}.{coll}"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "godwit"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "godwit"
	}
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = 30 * time.Second
	}
	if cfg.BatchMaxBytes == 0 {
		cfg.BatchMaxBytes = 1 << 20
	}
	topic, _ := brokers.ParseTemplate(cfg.Topic, placeholders...)
	enc, err := envelope.New(cfg.Envelope)
	if err != nil {
		return nil, fmt.Errorf("envelope.%w", err)
	}
	codec, _ := compression(cfg.Compression)
	conns := &connTracker{open: map[int32]int{}}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence is on by default and needs all acks
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(cfg.BatchMaxBytes),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.WithHooks(conns),
	}
	if cfg.CreateTopics {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if s := cfg.SASL; s != nil {
		switch s.Mechanism {
		case MechanismPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsMechanism()))
		case MechanismScramSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha256Mechanism()))
		case MechanismScramSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha512Mechanism()))
		}
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &Sink{cfg: cfg, client: client, enc: enc, topic: topic, conns: conns}, nil
}

// TopicOf returns the topic an event of namespace db.coll from source goes
// to.
func (s *Sink) TopicOf(source, db, coll string) string {
	return s.topic.Expand(brokers.Vars{Prefix: s.cfg.Prefix, Source: source, DB: db, Coll: coll}, topicClean)
}

// Deliver implements sink.Sink: it produces the batch and returns once
// every record was acknowledged by the brokers (acks=all).
func (s *Sink) Deliver(ctx context.Context, batch []outbox.Record) error {
	recs := make([]*kgo.Record, 0, len(batch))
	at := make(map[*kgo.Record]int, len(batch)) // record → index in batch
	var encErr error
	n := len(batch) // events to produce: a permanent error stops before it
	for i, r := range batch {
		if r.Seq <= s.last {
			continue // replay of what Kafka already has
		}
		m, ok, err := s.enc.Encode(r)
		if err != nil {
			encErr, n = sink.Permanent(err), i
			break
		}
		if !ok {
			continue // the envelope has no form for it (Debezium and DDL)
		}
		rec := &kgo.Record{Topic: s.TopicOf(r.Source, m.Event.NS.DB, m.Event.NS.Coll), Key: m.Key, Value: m.Value,
			Headers: make([]kgo.RecordHeader, len(m.Headers))}
		for j, h := range m.Headers {
			rec.Headers[j] = kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)}
		}
		recs = append(recs, rec)
		at[rec] = i
		if s.cfg.Tombstones && m.Tombstone() {
			ts := &kgo.Record{Topic: rec.Topic, Key: m.Key, Headers: make([]kgo.RecordHeader, 0, len(m.Headers))}
			for _, h := range rec.Headers {
				if h.Key == envelope.HeaderOperation {
					h.Value = []byte("tombstone")
				}
				if h.Key != envelope.HeaderContentType {
					ts.Headers = append(ts.Headers, h)
				}
			}
			recs = append(recs, ts)
			at[ts] = i
		}
	}

	failed, err := n, error(nil)
	if len(recs) > 0 {
		for _, res := range s.client.ProduceSync(ctx, recs...) {
			if res.Err != nil && at[res.Record] < failed {
				failed, err = at[res.Record], fmt.Errorf("produce event %d to %s: %w", batch[at[res.Record]].Seq, res.Record.Topic, res.Err)
			}
		}
	}
	if err == nil {
		err = encErr
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

// Close implements sink.Closer: it waits for records in flight, then closes
// the connections.
func (s *Sink) Close(ctx context.Context) error {
	err := s.client.Flush(ctx)
	s.client.Close()
	return err
}
