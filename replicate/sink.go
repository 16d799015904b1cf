package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/progress"
	"github.com/godwit-dev/godwit/sink"
)

// Status is a snapshot of a pipeline.
type Status struct {
	Pipeline string `json:"pipeline"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	// Transactions reports whether changes are applied in target
	// transactions (see Config.Transactions).
	Transactions bool `json:"transactions"`
	// Phase is starting, copying, streaming or halted.
	Phase Phase `json:"phase"`
	// Namespace is the collection being copied (copying only).
	Namespace string `json:"namespace,omitempty"`
	// Copied and Total count documents of the initial copy.
	Copied int64 `json:"copied"`
	Total  int64 `json:"total"`
	// Applied counts change events written to the target by this process.
	Applied uint64 `json:"applied"`
	// Skipped counts events with nothing to write: already applied (a
	// replay), covered by the initial copy, or filtered out.
	Skipped uint64 `json:"skipped"`
	// Conflicts counts events that lost to a newer write on the target
	// (two-way only).
	Conflicts uint64 `json:"conflicts"`
	// Seq is the last outbox sequence delivered; the lag in events is the
	// outbox's last sequence minus Seq.
	Seq uint64 `json:"seq"`
	// LastEventTime is the source cluster time of the last applied event.
	LastEventTime time.Time `json:"last_event_time,omitempty"`
	// LagSeconds is how far behind the source that event was applied.
	LagSeconds float64 `json:"lag_seconds"`
	LastError  string  `json:"last_error,omitempty"`
}

// Conflict describes a write that lost to a newer write of the same
// document on the target (two-way pipelines).
type Conflict struct {
	Pipeline string
	// Namespace and ID name the document on the target.
	Namespace change.Namespace
	ID        bson.RawValue
	// Incoming is the losing write's origin and cluster time; Current the
	// version that the target keeps.
	Incoming, Current Version
	Operation         string
}

// Version is a document state's origin: the cluster time of the write that
// produced it and the id of the capture source that saw it.
type Version struct {
	ClusterTime primitive.Timestamp `bson:"t" json:"cluster_time"`
	Source      string              `bson:"o" json:"source"`
}

// Peer links a two-way pipeline to the capture of its target deployment.
type Peer struct {
	// SourceID is the id of the capture source that watches this
	// pipeline's target.
	SourceID string
	// Echo is that source's echo filter.
	Echo *EchoFilter
	// Outbox seeds the filter's tracking of local writes with the target's
	// events still in the outbox; nil skips seeding (tests).
	Outbox *outbox.Outbox
}

// Option configures Open.
type Option func(*Sink)

// WithPeer makes the sink the target-side half of a two-way pair: required
// when Config.Bidirectional is set.
func WithPeer(p Peer) Option { return func(s *Sink) { s.peer = &p } }

// WithProgress draws initial-sync progress (documents copied, rate, time
// left) to w: redrawn in place on a terminal, a plain line every few
// seconds otherwise.
func WithProgress(w io.Writer) Option { return func(s *Sink) { s.progressOut = w } }

// WithConflictHook calls fn for every conflict, after it was logged (for
// the audit sink).
func WithConflictHook(fn func(Conflict)) Option { return func(s *Sink) { s.onConflict = fn } }

// Sink applies one source's events to one target deployment. It implements
// sink.Sink and sink.Closer. Deliver and InitialSync must not run
// concurrently (the daemon runs InitialSync before the runner starts).
type Sink struct {
	progressOut io.Writer       // initial-sync progress (nil: none)
	meter       *progress.Meter // set during the initial sync
	cfg         Config
	target      *mongodb.Conn
	metadataDB  string
	log         zerolog.Logger
	filter      change.Filter
	mapper      mapper
	peer        *Peer
	onConflict  func(Conflict)
	streamStart func() (primitive.Timestamp, bool)
	ob          *outbox.Outbox // read ahead to complete a transaction (nil: never)
	caps        Capabilities
	txn         bool // apply in target transactions
	fenceSeq    atomic.Int64

	// marks[w] is the position of the last event worker w applied; events
	// at or before it are skipped. Only Deliver touches it (workers write
	// their own entry).
	marks []position
	// snapshots maps source namespaces to the cluster time their initial
	// copy read; their events at or before it are skipped.
	snapshots map[change.Namespace]primitive.Timestamp
	halted    string

	ownsTarget bool // Close closes target (opened by the registry's factory)

	mu     sync.Mutex
	status Status
	logged time.Time // when progress was last logged
}

// progressEvery is how often copy and apply progress is logged at info.
const progressEvery = 30 * time.Second

// logProgress logs the pipeline's status at most every progressEvery.
func (s *Sink) logProgress(force bool) {
	s.mu.Lock()
	st := s.status
	due := force || time.Since(s.logged) >= progressEvery
	if due {
		s.logged = time.Now()
	}
	s.mu.Unlock()
	if !due {
		return
	}
	e := s.log.Info().Str("phase", string(st.Phase))
	if st.Phase == PhaseCopying {
		e = e.Str("ns", st.Namespace).Int64("copied", st.Copied).Int64("of", st.Total)
	} else {
		e = e.Uint64("applied", st.Applied).Uint64("skipped", st.Skipped).Uint64("conflicts", st.Conflicts).
			Uint64("seq", st.Seq).Float64("lag_seconds", st.LagSeconds)
	}
	if st.LastError != "" {
		e = e.Str("last_error", st.LastError)
	}
	e.Msg("replication progress")
}

// Open prepares a pipeline on an open target connection. It reads the
// pipeline's stored state from the target and opens nothing; the caller
// keeps ownership of target.
func Open(ctx context.Context, cfg Config, target *mongodb.Conn, metadataDB string, log zerolog.Logger, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replicate config: %w", err)
	}
	if cfg.ID == "" {
		return nil, errors.New("replicate config: id: required (the sink id)")
	}
	if metadataDB == "" {
		metadataDB = "godwit"
	}
	cfg.defaults()
	mp, _ := newMapper(cfg.Mapping)
	for _, to := range cfg.Mapping {
		if ns, _ := parseMapNS(to); ns.DB == metadataDB {
			return nil, fmt.Errorf("replicate config: mapping: %q maps into godwit's metadata database", to)
		}
	}
	s := &Sink{cfg: cfg, target: target, metadataDB: metadataDB, filter: cfg.Filter(metadataDB), mapper: mp,
		log:       log.With().Str("pipeline", cfg.ID).Str("source", cfg.Source).Logger(),
		snapshots: map[change.Namespace]primitive.Timestamp{},
		status:    Status{Pipeline: cfg.ID, Source: cfg.Source, Target: target.Redacted, Phase: PhaseStarting}}
	s.fenceSeq.Store(time.Now().UnixNano())
	for _, o := range opts {
		o(s)
	}
	if cfg.Bidirectional && (s.peer == nil || s.peer.Echo == nil || s.peer.SourceID == "") {
		return nil, errors.New("replicate config: bidirectional: the pipeline needs the capture of its target (replicate.WithPeer)")
	}
	if err := s.checkTwoWayTarget(ctx); err != nil {
		return nil, err
	}
	var err error
	if cfg.Transactions != TransactionsOff {
		if s.caps, err = detectCapabilities(ctx, target, metadataDB, cfg.ID); err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", cfg.ID, err)
		}
	}
	if s.txn, err = chooseMode(cfg, target.Redacted, s.caps); err != nil {
		return nil, err
	}
	s.status.Transactions = s.txn
	if missing, known := target.MissingPrivileges(ctx, targetPrivileges(cfg, metadataDB)); known && len(missing) > 0 {
		// Logged and shown, not refused: the server has the last word, and
		// a custom role may grant through a resource this check reads
		// differently.
		msg := fmt.Sprintf("pipeline %s: the target's user lacks %s (readWrite on the replicated databases and on %s grants everything a pipeline needs)",
			cfg.ID, mongodb.Describe(missing), metadataDB)
		s.status.LastError = msg
		s.log.Warn().Str("target", target.Redacted).Msg(msg)
	}
	if !s.txn {
		why := "transactions: off"
		if cfg.Transactions != TransactionsOff {
			why = s.caps.NoTransactions
		}
		s.log.Warn().Str("target", target.Redacted).Str("why", why).
			Msg("applying without transactions: each change is its own idempotent write; a source transaction is not applied atomically")
	}
	if s.marks, err = loadApplied(ctx, target.Client, metadataDB, cfg.ID, cfg.Workers); err != nil {
		return nil, err
	}
	st, err := loadInitial(ctx, target.Client, metadataDB, cfg.ID)
	if err != nil {
		return nil, err
	}
	if st != nil {
		s.useInitial(st)
	}
	var h haltedState
	if err := stateColl(target.Client, metadataDB).FindOne(ctx, bson.D{{Key: "_id", Value: haltedID(cfg.ID)}}).Decode(&h); err == nil {
		s.halted = h.Reason
		s.status.Phase, s.status.LastError = PhaseHalted, h.Reason
	} else if !isNoDocuments(err) {
		return nil, fmt.Errorf("read state of pipeline %s: %w", cfg.ID, err)
	}
	// A DDL marker left by a crash between the DDL and the marker's
	// delete would keep the target's capture from checkpointing.
	if _, err := target.Client.Database(metadataDB).Collection(MarkersCollection).
		DeleteMany(ctx, bson.D{{Key: "pipeline", Value: cfg.ID}, {Key: "kind", Value: markerDDL}}); err != nil {
		return nil, fmt.Errorf("clean up origin markers of pipeline %s: %w", cfg.ID, err)
	}
	if s.peer != nil && s.peer.Echo != nil {
		if err := s.peer.Echo.trackFrom(s.peer.Outbox, s.peer.SourceID, s.writesTo); err != nil {
			return nil, err
		}
	}
	if s.status.Phase == PhaseStarting && (st != nil && st.Phase == phaseDone || !cfg.initialSync()) {
		s.status.Phase = PhaseStreaming
	}
	s.log.Info().Str("target", target.Redacted).Str("phase", string(s.status.Phase)).Int("workers", cfg.Workers).
		Bool("bidirectional", cfg.Bidirectional).Bool("transactions", s.txn).Msg("replication pipeline open")
	return s, nil
}

// writesTo reports whether the pipeline writes to a target namespace.
func (s *Sink) writesTo(ns change.Namespace) bool {
	src := s.mapper.Inverse(ns)
	return src.DB != "" && replicated(s.filter, src)
}

func (s *Sink) useInitial(st *initialState) {
	for _, n := range st.Namespaces {
		if n.Done {
			ns, _ := parseMapNS(n.Source)
			s.snapshots[ns] = n.At
		}
	}
	s.set(func(x *Status) {
		x.Total = st.Total
		x.Copied = 0
		for _, n := range st.Namespaces {
			x.Copied += n.Copied
		}
		if st.Phase == phaseDone {
			x.Phase = PhaseStreaming
		}
	})
}

// Status returns a snapshot of the pipeline.
func (s *Sink) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Sink) set(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}

// Close implements sink.Closer. The target connection belongs to the caller.
func (s *Sink) Close(ctx context.Context) error {
	s.log.Info().Msg("replication pipeline closed")
	if s.ownsTarget {
		return s.target.Close(ctx)
	}
	return nil
}

// Source returns the id of the capture source whose events the pipeline
// applies (and whose data its initial sync copies).
func (s *Sink) Source() string { return s.cfg.Source }

// segment is a unit of Deliver: document changes that workers may apply in
// parallel, one source transaction (applied in one target transaction), or
// one DDL event.
type segment struct {
	first int // index in the batch of the segment's first record
	ops   []*op
	txn   bool
	ddl   *change.Event
	seq   uint64
	halt  string // the pipeline halts at ddl, for this reason
	tail  bool   // a transaction still open at the end of the batch
}

// Deliver implements sink.Sink.
func (s *Sink) Deliver(ctx context.Context, batch []outbox.Record) error {
	if s.halted != "" {
		return sink.Permanent(fmt.Errorf("%w: %s", ErrHalted, s.halted))
	}
	segs, bad, badErr := s.plan(batch)
	if n := len(segs); n > 0 && segs[n-1].tail && s.ob != nil {
		s.completeTxn(ctx, &segs[n-1], batch[len(batch)-1].Seq)
	}
	for _, seg := range segs {
		if err := s.runSegmentWaiting(ctx, seg); err != nil {
			s.set(func(x *Status) { x.LastError = err.Error() })
			if seg.first == 0 {
				return err
			}
			return &sink.PartialError{Delivered: seg.first, Err: err}
		}
	}
	if err := s.flushLocal(ctx); err != nil {
		return err
	}
	if badErr != nil {
		s.set(func(x *Status) { x.LastError = badErr.Error() })
		if bad == 0 {
			return badErr
		}
		return &sink.PartialError{Delivered: bad, Err: badErr}
	}
	if len(batch) > 0 {
		s.set(func(x *Status) { x.Seq = batch[len(batch)-1].Seq; x.LastError = "" })
	}
	s.logProgress(false)
	return nil
}

// plan parses the batch into segments. It stops at the first event that
// cannot be applied at all, returning its index and a permanent error; the
// segments before it are still delivered.
func (s *Sink) plan(batch []outbox.Record) ([]segment, int, error) {
	var segs []segment
	var cur *segment
	closeCur := func() {
		if cur != nil && len(cur.ops) > 0 {
			segs = append(segs, *cur)
		}
		cur = nil
	}
	skipped := uint64(0)
	defer func() {
		if skipped > 0 {
			s.set(func(x *Status) { x.Skipped += skipped })
		}
	}()
	for i, r := range batch {
		if r.Source != s.cfg.Source {
			continue
		}
		ev, err := change.Parse(r.Raw)
		if err != nil {
			closeCur()
			return segs, i, sink.Permanent(fmt.Errorf("event %d: %w", r.Seq, err))
		}
		op := ev.OperationType
		if op == change.OpInvalidate {
			continue
		}
		if !s.keeps(ev) {
			skipped++
			continue
		}
		if op == change.OpRename {
			skip, dropFrom, halt := s.renameCovered(ev)
			switch {
			case skip:
				skipped++ // the copies read both names after the rename
				continue
			case halt != "" && s.cfg.DDL != DDLIgnore:
				closeCur()
				segs = append(segs, segment{first: i, ddl: ev, seq: r.Seq, halt: halt})
				continue
			case dropFrom:
				// The new name's copy holds the renamed documents: only
				// the old name has to go.
				drop := *ev
				drop.OperationType, drop.To = change.OpDrop, change.Namespace{}
				ev = &drop
			}
		} else if at, ok := s.snapshots[ev.NS]; ok && !ev.ClusterTime.After(at) {
			skipped++ // the initial copy read this namespace after the event
			continue
		}
		if !change.IsDML(op) {
			closeCur()
			segs = append(segs, segment{first: i, ddl: ev, seq: r.Seq})
			continue
		}
		o, err := planDML(ev, s.mapper.Map(ev.NS), s.cfg.FullDocumentFallback == FallbackAlways || s.cfg.Bidirectional)
		if err != nil {
			closeCur()
			if errors.Is(err, errMalformedDML) || errors.Is(err, ErrNoPostImage) {
				err = sink.Permanent(err)
			}
			return segs, i, fmt.Errorf("event %d: %w", r.Seq, err)
		}
		o.idx, o.seq = i, r.Seq
		o.part = partition(o.dst, o.id, s.cfg.Workers)
		o.vers = Version{ClusterTime: ev.ClusterTime, Source: s.cfg.Source}
		tk := txnKey(ev)
		switch {
		case cur == nil:
		case sameTxn(cur, ev, tk):
		case tk == "" && !cur.txn:
		default:
			closeCur()
		}
		if cur == nil {
			cur = &segment{first: i, txn: tk != "", seq: r.Seq}
		}
		cur.ops = append(cur.ops, o)
	}
	if cur != nil && cur.txn {
		cur.tail = true
	}
	closeCur()
	return segs, len(batch), nil
}

// keeps reports whether the pipeline replicates the event: the pipeline's
// change.Filter (a rename counts when either end is replicated; an
// operation type godwit does not know goes to the DDL policy, even without
// a namespace). A known operation type without a namespace is malformed:
// there is nothing to apply it to.
func (s *Sink) keeps(ev *change.Event) bool {
	if ev.NS.DB == "" && change.Known(ev.OperationType) {
		return false
	}
	return s.filter.Match(ev)
}

func (s *Sink) runSegment(ctx context.Context, seg segment) error {
	if seg.halt != "" {
		return s.haltWith(ctx, seg.halt)
	}
	if seg.ddl != nil {
		return s.applyDDL(ctx, seg.ddl, seg.seq)
	}
	if seg.txn {
		ops := s.unapplied(seg.ops)
		if len(ops) == 0 {
			return nil
		}
		return s.commit(ctx, ops, true)
	}
	return s.applyParallel(ctx, seg.ops)
}

// unapplied drops ops at or before their worker's applied position.
func (s *Sink) unapplied(ops []*op) []*op {
	out := ops[:0:0]
	n := uint64(0)
	for _, o := range ops {
		// An event without cluster time or token has no place in the
		// order: it is always applied (its writes are idempotent).
		if !o.pos.zero() && !o.pos.after(s.marks[o.part]) {
			n++
			continue
		}
		out = append(out, o)
	}
	if n > 0 {
		s.set(func(x *Status) { x.Skipped += n })
	}
	return out
}

// maxTxnOps bounds the document changes of one target transaction.
const maxTxnOps = 1000

// applyParallel applies document changes partitioned by worker. When a
// worker hits a unique-index conflict (two documents trading a unique value
// in an order the partitions do not keep), the rest is applied in source
// order by one worker.
func (s *Sink) applyParallel(ctx context.Context, ops []*op) error {
	ops = s.unapplied(ops)
	if len(ops) == 0 {
		return nil
	}
	parts := make([][]*op, s.cfg.Workers)
	used := 0
	for _, o := range ops {
		if len(parts[o.part]) == 0 {
			used++
		}
		parts[o.part] = append(parts[o.part], o)
	}
	if used == 1 {
		return s.applyChunks(ctx, ops)
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for w, p := range parts {
		if len(p) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = s.applyChunks(ctx, p)
		}()
	}
	wg.Wait()
	var uniq bool
	for _, err := range errs {
		if err != nil && !isDuplicateKey(err) {
			return errors.Join(errs...)
		}
		uniq = uniq || err != nil
	}
	if !uniq {
		return nil
	}
	s.log.Info().Msg("unique index conflict between workers; applying this batch in source order")
	return s.applyChunks(ctx, s.unapplied(ops))
}

func (s *Sink) applyChunks(ctx context.Context, ops []*op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		if err := s.commit(ctx, ops[:n], true); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// note records what a committed group did.
func (s *Sink) note(res groupResult) {
	s.set(func(x *Status) {
		x.Applied += res.applied
		x.Skipped += res.skipped
		x.Conflicts += uint64(len(res.conflicts))
		if res.lastEvent.T != 0 {
			x.LastEventTime = time.Unix(int64(res.lastEvent.T), 0).UTC()
			x.LagSeconds = time.Since(x.LastEventTime).Seconds()
		}
	})
	for _, c := range res.conflicts {
		s.log.Warn().Str("ns", c.Namespace.String()).Str("_id", idString(c.ID)).Str("op", c.Operation).
			Str("incoming_source", c.Incoming.Source).Uint32("incoming_t", c.Incoming.ClusterTime.T).Uint32("incoming_i", c.Incoming.ClusterTime.I).
			Str("kept_source", c.Current.Source).Uint32("kept_t", c.Current.ClusterTime.T).Uint32("kept_i", c.Current.ClusterTime.I).
			Msg("conflict: a newer write of this document on the target wins (last writer wins)")
		if s.onConflict != nil {
			s.onConflict(c)
		}
	}
}

func (s *Sink) haltWith(ctx context.Context, reason string) error {
	s.halted = reason
	s.set(func(x *Status) { x.Phase, x.LastError = PhaseHalted, reason })
	_, err := stateColl(s.target.Client, s.metadataDB).ReplaceOne(ctx, bson.D{{Key: "_id", Value: haltedID(s.cfg.ID)}},
		haltedState{ID: haltedID(s.cfg.ID), Reason: reason, At: time.Now().UTC()}, replaceUpsert)
	s.log.Error().Str("reason", reason).Msg("replication halted; run a new initial sync of this pipeline to continue")
	return errors.Join(sink.Permanent(fmt.Errorf("%w: %s", ErrHalted, reason)), err)
}
