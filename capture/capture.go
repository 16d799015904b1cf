// Package capture turns a MongoDB change stream into outbox records.
//
// A Source opens the change stream of one deployment at its stored resume
// token (startAfter), reads events in groups (up to BatchSize events, or
// whatever arrived within BatchInterval), drops what the configuration
// excludes, and appends the rest together with the resume token that covers
// them in one outbox transaction. The stored token therefore never runs
// ahead of what is durable.
//
// # Real deployments and the embedded engine
//
// On a real deployment, namespace and operation-type filters are pushed to
// the server as a $match stage, the post-batch resume token of empty getMore
// batches is persisted (so an idle or fully filtered stream does not fall off
// the oplog), and events split by $changeStreamSplitLargeEvent are
// reassembled. The embedded engine accepts no pipeline: the same filters run
// client-side. Filters always run client-side too, so both paths keep exactly
// the same events.
//
// # Caveats
//
//   - Errors are sorted by the change-streams specification's rules:
//     resumable ones (network, ResumableChangeStreamError, the spec's codes)
//     reconnect with backoff; Unauthorized and unknown server errors retry
//     slowly in state failing; errors retrying cannot fix (no change
//     streams, an option or stage the server lacks, an event over 16 MiB, a
//     bad regex) halt with a reason in plain words until godwit restarts,
//     keeping the stored token.
//   - When the source's history no longer reaches the stored token
//     (ChangeStreamHistoryLost, code 286; 280 "resume token was not found";
//     lungo.ErrLostOplogPosition), the source halts and stays halted across
//     restarts until an explicit `godwit resync`. It never silently restarts
//     from "now".
//   - A source with no stored token starts at "now": writes before the first
//     start are not captured (replication's initial sync copies them).
//   - Events whose operationType godwit does not know are stored unchanged.
package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/backoff"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// Sentinel errors.
var (
	// ErrHalted is returned by Run when the source halts: its history no
	// longer reaches the stored token or the token is unusable (stored in
	// the outbox until `godwit resync`), or the deployment or configuration
	// cannot give a change stream (until godwit restarts). Status().Reason
	// says why and what to do.
	ErrHalted = errors.New("source halted")
)

// Config configures one source.
type Config struct {
	// ID names the source in the outbox, logs and status.
	ID string
	// Database and Collection narrow the watch scope; both empty watches
	// the whole deployment.
	Database, Collection string
	// Filter keeps or drops namespaces (Include, Ignore). Its MetadataDB
	// and operation rules are ignored: MetadataDatabase and OperationTypes
	// set them.
	Filter change.Filter
	// OperationTypes keeps only these known operation types (empty: all).
	// Unknown operation types are always kept.
	OperationTypes []string
	// FullDocument is the fullDocument option ("updateLookup",
	// "whenAvailable", "required", or "" for the server default).
	FullDocument string
	// FullDocumentBeforeChange is the pre-image option ("whenAvailable",
	// "required", or "" for none).
	FullDocumentBeforeChange string
	// ShowExpandedEvents asks a real server (6.0+) for DDL events such as
	// create, createIndexes and modify.
	ShowExpandedEvents bool
	// SplitLargeEvents appends $changeStreamSplitLargeEvent (7.0+, 6.0.9+)
	// so events over 16 MiB arrive as fragments, which capture reassembles.
	SplitLargeEvents bool
	// MetadataDatabase is godwit's own database: always ignored.
	MetadataDatabase string
	// BatchSize is the most events per outbox append. Default 1000.
	BatchSize int
	// BatchInterval is the longest a batch stays open. Default 100ms.
	BatchInterval time.Duration
	// MaxAwaitTime is how long a real server holds an empty getMore.
	// Default 1s.
	MaxAwaitTime time.Duration
	// MinBackoff and MaxBackoff bound reconnect waits. Defaults 100ms, 30s.
	MinBackoff, MaxBackoff time.Duration
	// OnHalt, when set, is called once when the source halts (not when it
	// starts already halted), so the daemon can audit the gap.
	OnHalt func(id, reason string)
	// CheckpointInterval is how often a checkpoint without events (a token
	// that moved past filtered events, or a post-batch token) is written.
	// Default 1s.
	CheckpointInterval time.Duration
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.BatchInterval <= 0 {
		c.BatchInterval = 100 * time.Millisecond
	}
	if c.MaxAwaitTime <= 0 {
		c.MaxAwaitTime = time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = time.Second
	}
	if c.MetadataDatabase == "" {
		c.MetadataDatabase = "godwit"
	}
}

// EchoFilter recognises events written by godwit's own replicator so that
// capture drops them. Observe is called for every event, in stream order;
// Pending reports that a marked transaction was only partly seen, in which
// case capture does not checkpoint inside it.
type EchoFilter interface {
	Observe(ev *change.Event) (drop bool)
	Pending() bool
}

// Status is a snapshot of a source.
type Status struct {
	ID        string    `json:"id"`
	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	Captured  uint64    `json:"captured"`
	Filtered  uint64    `json:"filtered"`
	LastEvent time.Time `json:"last_event_time,omitempty"`
}

// State is what a source is doing now, as status shows it: the stored
// states of the outbox (running, halted) and those only a running
// process has.
type State string

// States reported in Status.
const (
	// StateStarting: Run has not opened the stream yet.
	StateStarting State = "starting"
	// StateRunning: the stream is open and events are captured.
	StateRunning = State(outbox.StateRunning)
	// StateHalted: capture stopped until someone acts; Reason says how
	// (the state is stored: a restart stays halted).
	StateHalted = State(outbox.StateHalted)
	// StateReconnecting: the stream failed in a way the change-streams
	// specification calls resumable (network, failover); capture reopens it
	// with backoff.
	StateReconnecting State = "reconnecting"
	// StateFailing: the server refused the stream in a way that needs
	// someone to act (a missing privilege, an unexpected server error);
	// capture retries slowly and LastError says what is wrong.
	StateFailing State = "failing"
	// StateStopped: Run returned after its context ended.
	StateStopped State = "stopped"
)

// Source captures one deployment's change stream.
type Source struct {
	cfg  Config
	conn *mongodb.Conn
	ob   *outbox.Outbox
	log  zerolog.Logger
	echo EchoFilter

	ready      chan struct{}
	readyOnce  sync.Once
	halted     chan struct{}
	haltedOnce sync.Once

	mu     sync.Mutex
	status Status
}

// New returns a source. It opens nothing until Run. echo may be nil.
func New(cfg Config, conn *mongodb.Conn, ob *outbox.Outbox, echo EchoFilter, log zerolog.Logger) *Source {
	cfg.defaults()
	return &Source{cfg: cfg, conn: conn, ob: ob, echo: echo,
		log:   log.With().Str("source", cfg.ID).Logger(),
		ready: make(chan struct{}), halted: make(chan struct{}),
		status: Status{ID: cfg.ID, State: StateStarting}}
}

// Ready is closed once the change stream is open: every write after that
// moment will be captured.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Halted is closed once the source halts (its reason is in Status, and
// OnHalt has returned).
func (s *Source) Halted() <-chan struct{} { return s.halted }

// Status returns a snapshot.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Source) set(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}

// Pipeline returns the change-stream pipeline sent to a real server.
func (s *Source) Pipeline() bson.A {
	return Pipeline(s.cfg)
}

// Fingerprint identifies the stream's shape: scope, pipeline and options.
// It is stored with the token so a changed configuration is noticed.
func (s *Source) Fingerprint() string {
	b, _ := json.Marshal(struct {
		DB, Coll, FullDoc, Pre string
		Expanded               bool
		Pipeline               string
	}{s.cfg.Database, s.cfg.Collection, s.cfg.FullDocument, s.cfg.FullDocumentBeforeChange,
		s.cfg.ShowExpandedEvents, fmt.Sprint(Pipeline(s.cfg))})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Run captures until ctx ends (nil) or the source halts (ErrHalted).
func (s *Source) Run(ctx context.Context) error {
	st, _, err := s.ob.Source(s.cfg.ID)
	if err != nil {
		return s.halt(fmt.Sprintf("stored state is unreadable: %v; run `godwit resync --config FILE --source %s`", err, s.cfg.ID), true)
	}
	if st.State == outbox.StateHalted {
		s.set(func(x *Status) { x.State, x.Reason, x.Captured = StateHalted, st.Reason, st.Captured })
		s.haltedOnce.Do(func() { close(s.halted) })
		s.log.Error().Str("reason", st.Reason).Msg("source is halted; not capturing")
		return fmt.Errorf("source %s: %w: %s", s.cfg.ID, ErrHalted, st.Reason)
	}
	s.set(func(x *Status) { x.Captured = st.Captured })
	fp := s.Fingerprint()
	if st.Fingerprint != "" && st.Fingerprint != fp && len(st.Token) > 0 {
		s.log.Warn().Str("stored", st.Fingerprint).Str("now", fp).
			Msg("filters or watch scope changed since the stored token; events the old filters dropped are not captured again")
	}

	if !s.conn.Embedded {
		s.checkPrivileges(ctx)
	}
	attempt := 0
	for ctx.Err() == nil {
		err := s.stream(ctx, fp)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			// The stream ended cleanly (an invalidate): reopen after it.
			s.log.Info().Msg("change stream invalidated; reopening after the invalidate event")
			attempt = 0
			continue
		}
		var halt haltError
		if errors.As(err, &halt) {
			return s.halt(halt.reason, halt.persistent)
		}
		if errors.Is(err, errStreamHealthy) {
			attempt = 0
		}
		attempt++
		wait := backoff.Delay(s.cfg.MinBackoff, s.cfg.MaxBackoff, attempt)
		state, logMsg := StateReconnecting, "change stream failed; reconnecting"
		var failing failingError
		if errors.As(err, &failing) {
			state, logMsg = StateFailing, "the server refused the change stream; retrying"
			if failing.slow {
				wait = s.cfg.MaxBackoff
			}
		}
		msg := logging.RedactText(err.Error())
		if failing.unauthorized {
			if missing, known := s.MissingPrivileges(ctx); known && len(missing) > 0 {
				msg += "; the server says the user lacks " + strings.Join(missing, " and ")
			}
		}
		s.set(func(x *Status) { x.State, x.LastError = state, msg })
		s.log.Warn().Str("uri", s.conn.Redacted).Str("error", msg).Dur("retry_in", wait).Int("attempt", attempt).Msg(logMsg)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	s.set(func(x *Status) { x.State = StateStopped })
	return nil
}

// errStreamHealthy marks a stream that ran and delivered before failing, so
// the backoff restarts from its minimum.
var errStreamHealthy = errors.New("stream ended")

// errCursorClosed is a change stream whose cursor the server closed (id 0)
// without an invalidate event.
var errCursorClosed = errors.New("the server closed the change stream cursor without an invalidate event; reopening at the stored token")

// splitHalt stops the source on a split event it cannot reassemble. The
// stored token is before the event, so a restart reads it again.
func (s *Source) splitHalt(what string) error {
	return haltError{reason: fmt.Sprintf("%s; capture stopped rather than store part of an event: the stored position is before it, so restarting godwit reads it again", what)}
}

// halt stops the source with reason: logged, in status (and so /readyz),
// audited through OnHalt, and when persistent stored in the outbox so the
// source stays halted across restarts until `godwit resync`.
func (s *Source) halt(reason string, persistent bool) error {
	if persistent {
		if err := s.ob.UpdateSource(s.cfg.ID, func(st *outbox.SourceState) {
			st.State, st.Reason = outbox.StateHalted, reason
		}); err != nil {
			s.log.Error().Err(err).Msg("could not store halted state")
		}
	}
	s.set(func(x *Status) { x.State, x.Reason = StateHalted, reason })
	s.log.Error().Str("reason", reason).Bool("until_resync", persistent).Msg("source halted")
	if s.cfg.OnHalt != nil {
		s.cfg.OnHalt(s.cfg.ID, reason)
	}
	s.haltedOnce.Do(func() { close(s.halted) })
	return fmt.Errorf("source %s: %w: %s", s.cfg.ID, ErrHalted, reason)
}

func (s *Source) resyncHint() string {
	return fmt.Sprintf("run `godwit resync --config FILE --source %s` to capture again from now (audited); sinks that copy data need a new initial sync", s.cfg.ID)
}

// open opens the change stream after token, or at startAt.
func (s *Source) open(ctx context.Context, token bson.Raw, startAt *primitive.Timestamp) (lungo.IChangeStream, error) {
	opts := options.ChangeStream()
	if len(token) > 0 {
		opts.SetStartAfter(token)
	} else if startAt != nil {
		opts.SetStartAtOperationTime(startAt)
	}
	var pipeline any = bson.A{}
	if !s.conn.Embedded {
		pipeline = Pipeline(s.cfg)
		opts.SetMaxAwaitTime(s.cfg.MaxAwaitTime)
		if s.cfg.FullDocument != "" {
			opts.SetFullDocument(options.FullDocument(s.cfg.FullDocument))
		}
		if s.cfg.FullDocumentBeforeChange != "" {
			opts.SetFullDocumentBeforeChange(options.FullDocument(s.cfg.FullDocumentBeforeChange))
		}
		if s.cfg.ShowExpandedEvents {
			opts.SetShowExpandedEvents(true)
		}
	}
	c := s.conn.Client
	switch {
	case s.cfg.Collection != "":
		return c.Database(s.cfg.Database).Collection(s.cfg.Collection).Watch(ctx, pipeline, opts)
	case s.cfg.Database != "":
		return c.Database(s.cfg.Database).Watch(ctx, pipeline, opts)
	default:
		return c.Watch(ctx, pipeline, opts)
	}
}

// stream runs one change stream until it fails or ctx ends.
func (s *Source) stream(ctx context.Context, fp string) (err error) {
	st, _, err := s.ob.Source(s.cfg.ID)
	if err != nil {
		return haltError{fmt.Sprintf("stored state is unreadable: %v; %s", err, s.resyncHint()), true}
	}
	token := bson.Raw(st.Token)
	if len(token) > 0 {
		if err := token.Validate(); err != nil {
			return haltError{fmt.Sprintf("stored resume token is corrupt (%v); %s", err, s.resyncHint()), true}
		}
	}
	var startAt *primitive.Timestamp
	if len(token) == 0 {
		// First start: the start point must be durable before Ready, or a
		// crash before the first checkpoint would silently restart later.
		// The embedded engine resumes by cluster time; a real server gives
		// a resume token as soon as the stream opens (stored below).
		if st.StartAt == 0 && s.conn.Embedded {
			// Start right after the newest write that exists now.
			st.StartAt = uint64(time.Now().Unix()) << 32
			if ts, ok := s.conn.LastOplogTime(); ok {
				st.StartAt = uint64(ts.T)<<32 | uint64(ts.I) + 1
			}
			if err := s.ob.UpdateSource(s.cfg.ID, func(x *outbox.SourceState) { x.StartAt = st.StartAt }); err != nil {
				return haltError{fmt.Sprintf("storing the start point: %v", err), true}
			}
		}
		if st.StartAt != 0 {
			startAt = &primitive.Timestamp{T: uint32(st.StartAt >> 32), I: uint32(st.StartAt)}
		}
	}
	cs, err := s.open(ctx, token, startAt)
	if err != nil {
		return s.classify(err, false)
	}
	defer cs.Close(context.WithoutCancel(ctx))
	if len(token) == 0 && startAt == nil {
		if initial := cs.ResumeToken(); len(initial) > 0 {
			if _, err := s.ob.Append(ctx, s.cfg.ID, nil, outbox.Checkpoint{Token: initial, Fingerprint: fp}); err != nil {
				return fmt.Errorf("storing the initial resume token: %w", err)
			}
			token = initial
		}
	}
	s.set(func(x *Status) { x.State, x.LastError = StateRunning, "" })
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Info().Str("uri", s.conn.Redacted).Bool("resumed", len(token) > 0).Msg("change stream open")

	b := &batcher{src: s, fp: fp, stored: token, lastCheckpoint: time.Now()}
	// Whatever ends the stream, the last batch handed to the outbox is
	// written (or has failed) before stream returns.
	defer func() {
		if werr := b.wait(ctx); werr != nil && err == nil {
			err = werr
		}
	}()
	healthy := false
	for {
		var ok bool
		if s.conn.Embedded {
			ok = cs.Next(ctx)
		} else {
			ok = cs.TryNext(ctx)
		}
		if !ok {
			if ctx.Err() != nil {
				return b.flush(ctx, nil)
			}
			if err := cs.Err(); err != nil {
				if ferr := b.flush(ctx, nil); ferr != nil {
					return ferr
				}
				cerr := s.classify(err, true)
				var halt haltError
				var failing failingError
				if healthy && !errors.As(cerr, &halt) && !errors.As(cerr, &failing) {
					return fmt.Errorf("%w: %w", errStreamHealthy, cerr)
				}
				return cerr
			}
			if s.conn.Embedded {
				return errors.New("embedded change stream closed")
			}
			if cs.ID() == 0 {
				// The server closed the cursor without an invalidate: TryNext
				// would return false at once forever. Reopen at the stored
				// token, with backoff.
				if err := b.flush(ctx, nil); err != nil {
					return err
				}
				return errCursorClosed
			}
			// An empty getMore: persist the post-batch token.
			if err := b.flush(ctx, cs.ResumeToken()); err != nil {
				return err
			}
			continue
		}
		healthy = true
		start := time.Now()
		n := 0
		for {
			if inv, err := b.add(current(cs), cs.ResumeToken()); err != nil {
				return err
			} else if inv {
				// Invalidate: the stream is over. Store it, then reopen after
				// it (real servers accept startAfter an invalidate token).
				return b.flush(ctx, nil)
			}
			n++
			if n >= s.cfg.BatchSize || time.Since(start) >= s.cfg.BatchInterval {
				break
			}
			if !s.conn.Embedded && cs.RemainingBatchLength() == 0 {
				break // consumed what the server sent; don't wait on a getMore
			}
			if !cs.TryNext(ctx) {
				break
			}
		}
		if err := b.flush(ctx, nil); err != nil {
			return err
		}
	}
}

// batcher accumulates one group of events and the token that covers them.
type batcher struct {
	src            *Source
	fp             string
	events         [][]byte
	filtered       int
	safe           bson.Raw // token covering everything added so far; nil while inside a split event or marked transaction
	stored         bson.Raw // token last written to the outbox
	lastCT         uint32
	lastWall       time.Time
	frags          fragments
	lastGood       bson.Raw // last non-nil safe token
	lastCheckpoint time.Time
	// writing is the batch being appended to the outbox while the stream
	// reads the next one; nil when none is.
	writing *write
}

// write is one batch's append to the outbox, in its own goroutine.
type write struct {
	done chan struct{}
	err  error
}

// add takes one raw event with the stream's resume token after it. It
// reports an invalidate event.
func (b *batcher) add(raw bson.Raw, streamToken bson.Raw) (bool, error) {
	s := b.src
	raw = append(bson.Raw(nil), raw...)
	ev, err := change.Parse(raw)
	if (err != nil || ev.Split == nil) && !b.frags.empty() {
		// The server sends a split event's fragments back to back: anything
		// else in between means half an event would be stored and the
		// checkpoint moved past the other half.
		return false, s.splitHalt(fmt.Sprintf("the server sent a whole event while fragment %d of %d of a split event was still missing", b.frags.next, b.frags.of))
	}
	if err != nil {
		// Keep what we cannot read: a sink may still make sense of it, and
		// dropping it would be silent loss.
		s.log.Warn().Err(err).Msg("storing an unparseable change event as is")
		b.events = append(b.events, raw)
		b.safe = streamToken
		return false, nil
	}
	if ev.Split != nil {
		whole, done, err := b.frags.add(ev)
		if err != nil {
			return false, s.splitHalt(fmt.Sprintf("reassembling a split event: %v", err))
		}
		if !done {
			b.safe = nil
			return false, nil
		}
		if ev, err = change.Parse(whole); err != nil {
			return false, s.splitHalt(fmt.Sprintf("reassembled event is malformed: %v", err))
		}
		raw = whole
	}
	if ev.ClusterTime.T != 0 {
		b.lastCT = ev.ClusterTime.T
		b.lastWall = time.Unix(int64(ev.ClusterTime.T), 0)
	}
	// The echo filter sees every event, godwit's own metadata included: a
	// replicator's marker document lives there and announces the events
	// that follow it.
	keep := true
	if s.echo != nil && s.echo.Observe(ev) {
		keep = false
	}
	keep = keep && s.cfg.Keep(ev)
	if keep {
		b.events = append(b.events, raw)
	} else {
		b.filtered++
	}
	switch {
	case s.echo != nil && s.echo.Pending():
		b.safe = nil
	case ev.OperationType == change.OpInvalidate && s.conn.Embedded:
		// lungo's invalidate token is not in its oplog and cannot be
		// resumed from; the event before it (the drop) can.
		b.safe = b.lastGood
		if len(b.safe) == 0 {
			b.safe = b.stored
		}
	case len(ev.Token) > 0:
		b.safe = ev.Token
	default:
		b.safe = streamToken
	}
	if len(b.safe) > 0 {
		b.lastGood = b.safe
	}
	return ev.OperationType == change.OpInvalidate, nil
}

// flush appends the kept events with the token that covers them. While the
// batch ends inside a split event or a marked transaction there is no such
// token yet and the events wait for the next flush. postBatch is a post-batch
// resume token from an empty getMore. A flush without events (the token moved
// past filtered events) writes at most once per CheckpointInterval, and at
// shutdown.
func (b *batcher) flush(ctx context.Context, postBatch bson.Raw) error {
	s := b.src
	token := b.safe
	if len(postBatch) > 0 && len(b.events) == 0 && b.frags.empty() && (s.echo == nil || !s.echo.Pending()) {
		// Everything before the post-batch token was seen: it is the new
		// safe point (a later flush must never store an older token).
		token = postBatch
		b.safe = postBatch
	}
	if len(token) == 0 {
		return nil
	}
	if len(b.events) == 0 {
		if string(token) == string(b.stored) {
			b.filtered = 0
			return nil
		}
		if ctx.Err() == nil && time.Since(b.lastCheckpoint) < s.cfg.CheckpointInterval {
			return nil
		}
	}
	// One batch at a time: the outbox writes this one (its fsync is most
	// of the cost) while the stream reads and parses the next.
	if err := b.wait(ctx); err != nil {
		return err
	}
	w := &write{done: make(chan struct{})}
	events, cp := b.events, outbox.Checkpoint{Token: token, Fingerprint: b.fp, LastClusterTime: b.lastCT}
	n, f, wall := len(events), b.filtered, b.lastWall
	go func() {
		defer close(w.done)
		if _, w.err = s.ob.Append(ctx, s.cfg.ID, events, cp); w.err != nil {
			return
		}
		s.set(func(x *Status) {
			x.Captured += uint64(n)
			x.Filtered += uint64(f)
			if !wall.IsZero() {
				x.LastEvent = wall
			}
		})
	}()
	b.writing = w
	b.stored = token
	b.events = make([][]byte, 0, cap(events))
	b.filtered = 0
	b.lastCheckpoint = time.Now()
	return nil
}

// wait returns once the batch being written (if any) is in the outbox, or
// with the halt its failure means.
func (b *batcher) wait(ctx context.Context) error {
	w := b.writing
	if w == nil {
		return nil
	}
	<-w.done
	b.writing = nil
	if w.err != nil {
		if ctx.Err() != nil {
			return nil // shutting down while capture was paused: not stored, re-read on restart
		}
		return haltError{fmt.Sprintf("writing to the outbox failed: %v", w.err), true}
	}
	return nil
}

// Keep applies the namespace and operation-type filters: it is the
// reference for what capture stores, and Pipeline's $match keeps the same.
// It is change.Filter.Match (see there for renames, events without a
// namespace and the metadata database) with capture's operation rule:
// invalidate and unknown operation types are always kept.
func (c Config) Keep(ev *change.Event) bool {
	return c.filter().Match(ev)
}

// filter is the change.Filter of the configuration.
func (c Config) filter() change.Filter {
	c.defaults()
	f := c.Filter
	f.MetadataDB = c.MetadataDatabase
	f.Operations, f.KeepUnknown = nil, false
	if len(c.OperationTypes) > 0 {
		f.Operations = append([]string{change.OpInvalidate}, c.OperationTypes...)
		f.KeepUnknown = true
	}
	return f
}

// current returns the stream's current event. The driver's stream exposes it
// without a copy; the embedded one decodes.
func current(cs lungo.IChangeStream) bson.Raw {
	if m, ok := cs.(*mongo.ChangeStream); ok {
		return m.Current
	}
	var raw bson.Raw
	if err := cs.Decode(&raw); err != nil {
		return nil
	}
	return raw
}
