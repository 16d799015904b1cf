package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/lines"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

var (
	_ sink.Sink   = (*Sink)(nil)
	_ sink.Closer = (*Sink)(nil)
)

// Sink is the audit sink: it classifies change events, detects mass
// deletes, and appends records to the hash-chained log. It implements
// sink.Sink and sink.Closer. Its methods are safe for concurrent use;
// records are appended one batch at a time under one lock.
type Sink struct {
	cfg       Config
	log       zerolog.Logger
	cls       *classifier
	statePath string
	now       func() time.Time

	mu         sync.Mutex
	f          *os.File
	head       Head
	end        int64 // offset just past the last durable record
	processed  uint64
	det        *detector
	replay     map[string]uint64
	stateDirty bool // the state file is behind memory
	loggedHead uint64
	broken     error // a failed write could not be undone: reopen
	closed     bool
	mirror     *mirror

	// failpoint, when set (by tests), is called at named points of the
	// write path; an error it returns is returned as if that step failed.
	failpoint func(name string) error
}

// Option adjusts Open for embedding and tests.
type Option func(*openOptions)

type openOptions struct {
	mirrorColl lungo.ICollection
	now        func() time.Time
}

// WithClock makes the sink read time (recorded_at, and the time of system
// records without one) from now instead of time.Now. Event times never come
// from the clock.
func WithClock(now func() time.Time) Option {
	return func(o *openOptions) { o.now = now }
}

// Open opens (or creates) the audit log of cfg. It cuts a torn last line
// left by a crash, checks that the log still ends where the state file says
// (so a cut or rewritten tail is refused, not extended), and restores
// deduplication and mass-delete state.
func Open(cfg Config, log zerolog.Logger, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("audit config: %w", err)
	}
	cfg = cfg.withDefaults()
	var o openOptions
	for _, fn := range opts {
		fn(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	log = log.With().Str("audit_log", cfg.Path).Logger()
	s := &Sink{
		cfg:       cfg,
		log:       log,
		cls:       newClassifier(cfg, log),
		statePath: cfg.Path + ".state",
		now:       o.now,
		replay:    map[string]uint64{},
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("open audit log %s: %w: another godwit appends to it; give each daemon its own audit path", cfg.Path, err)
		}
		return nil, fmt.Errorf("lock audit log %s: %w", cfg.Path, err)
	}
	s.f = f
	if err := s.recover(); err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Path, err)
	}
	s.loggedHead = s.head.Index
	s.logHead("audit log opened")
	if cfg.Mirror != nil || o.mirrorColl != nil {
		m, err := startMirror(cfg, o.mirrorColl, log)
		if err != nil {
			f.Close()
			return nil, err
		}
		s.mirror = m
	}
	return s, nil
}

// recover brings the sink to the state after the last durable record.
func (s *Sink) recover() error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	end, err := lines.CompleteEnd(s.f, size)
	if err != nil {
		return err
	}
	if end < size {
		// Records are fsync'd before anything acknowledges them, so a
		// partial line was never acknowledged: its events come again.
		s.log.Warn().Int64("bytes", size-end).Msg("audit log: cutting an incomplete last line left by a crash")
		if err := s.f.Truncate(end); err != nil {
			return fmt.Errorf("cut incomplete last line: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			return err
		}
	}
	s.det = newDetector(s.cfg.MassDelete.Threshold, s.cfg.MassDelete.Window.Milliseconds(), s.cfg.MassDelete.Sample)
	s.head = Head{Hash: Genesis}
	s.end = end

	st, stErr := readState(s.statePath)
	if stErr != nil {
		s.log.Warn().Err(stErr).Msg("audit state unreadable; rebuilding from the log")
	}
	if st == nil {
		return s.rebuild(stErr)
	}

	if st.End > end {
		return fmt.Errorf("%w: the log has %d bytes but godwit wrote %d (through record %d); run 'godwit audit verify --file %s --head %s' and keep the file as evidence; to start a new log, move both %s and %s aside",
			ErrTailCut, end, st.End, st.Index, s.cfg.Path, Head{st.Index, st.Hash}, s.cfg.Path, s.statePath)
	}
	if err := s.checkRecordAt(st.End, Head{Index: st.Index, Hash: st.Hash}); err != nil {
		return err
	}
	s.head = Head{Index: st.Index, Hash: st.Hash}
	s.processed = st.ProcessedSeq
	s.det.load(st.Detector)
	for k, v := range st.Replay {
		s.replay[k] = v
	}

	// Records after the saved state were written by a batch (or a Close)
	// whose state was never saved. A redelivered event must not write them
	// again; a burst flushed by Close must not stay open.
	var pending []*Record
	rep, err := scan(io.NewSectionReader(s.f, st.End, end-st.End), s.head, nil, func(r *Record) { pending = append(pending, r) })
	if err != nil {
		return fmt.Errorf("records after the saved state: %w", err)
	}
	s.head = rep.Head
	for _, r := range pending {
		switch {
		case r.Class == ClassMassDelete && r.Burst != nil && r.Burst.Ended == EndedClose && r.NS != nil:
			s.det.forget(r.Source, *r.NS, r.Burst.FirstSeq)
		case r.Seq > s.processed:
			s.replay[replayKey(r)] = r.Seq
		}
	}
	if len(pending) > 0 {
		s.log.Info().Int("records", len(pending)).Uint64("processed_seq", s.processed).
			Msg("audit log: records after the saved state; their redelivered events will not be recorded again")
		return s.saveState()
	}
	return nil
}

// rebuild recovers without a state file: dedup falls back to the highest
// recorded sequence and mass-delete state starts empty.
func (s *Sink) rebuild(stErr error) error {
	if s.end == 0 {
		// A new log. Saving the state now means that from here on a
		// missing state file is a loss worth a record, and a crash in the
		// first batch recovers like any other.
		return s.saveState()
	}
	var maxSeq uint64
	rep, err := scan(io.NewSectionReader(s.f, 0, s.end), s.head, nil, func(r *Record) { maxSeq = max(maxSeq, r.Seq) })
	if err != nil {
		return fmt.Errorf("no usable state file and the log does not verify: %w", err)
	}
	s.head = rep.Head
	s.processed = maxSeq
	why := "the state file " + s.statePath + " is missing"
	if stErr != nil {
		why = stErr.Error()
	}
	r := &Record{
		Class:    ClassStateReset,
		Severity: s.cls.severityOf(ClassStateReset),
		Time:     s.now().UTC(),
		Message:  why + "; events up to the highest recorded sequence are skipped, and mass-delete bursts open before were forgotten",
		Details:  map[string]any{"processed_seq": maxSeq},
	}
	if err := s.append([]*Record{r}); err != nil {
		return err
	}
	return s.saveState()
}

// checkRecordAt checks that the record ending at offset end is h.
func (s *Sink) checkRecordAt(end int64, h Head) error {
	if h.Index == 0 {
		if end != 0 {
			return fmt.Errorf("%w: the state file names an empty log at byte %d", ErrHeadMismatch, end)
		}
		return nil
	}
	line, _, err := lines.Before(s.f, end)
	if err != nil {
		return err
	}
	r, err := DecodeLine(line)
	if err != nil || r.Index != h.Index || r.Hash != h.Hash || contentHash(r.line) != r.Hash {
		return fmt.Errorf("%w: record %d is not the one godwit wrote there (hash %s); run 'godwit audit verify --file %s --head %s'",
			ErrHeadMismatch, h.Index, h.Hash, s.cfg.Path, h)
	}
	return nil
}

// replayKey identifies a record written for an event, so that a redelivered
// event does not write it twice.
func replayKey(r *Record) string {
	k := fmt.Sprintf("%s|%d|%s", r.Source, r.Seq, r.Class)
	if r.Burst != nil && r.NS != nil {
		k += fmt.Sprintf("|%s|%d", r.NS, r.Burst.FirstSeq)
	}
	return k
}

// Deliver implements sink.Sink: it records the risky events of batch and
// returns once those records are fsync'd and the sink's state saved. Events
// at or below the highest sequence already processed are skipped.
func (s *Sink) Deliver(_ context.Context, batch []outbox.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	// Work on a copy: if writing fails, nothing of this batch counts.
	det := s.det.clone()
	processed := s.processed
	changed := false
	var recs []*Record
	for _, rec := range batch {
		if rec.Seq <= processed {
			continue // a replay of an event already accounted for
		}
		recs = s.process(det, rec, recs, &changed)
		processed = rec.Seq
	}
	det.sweep()

	replay := s.replay
	if len(replay) > 0 {
		replay = make(map[string]uint64, len(s.replay))
		for k, v := range s.replay {
			replay[k] = v
		}
		kept := recs[:0]
		for _, r := range recs {
			if _, ok := replay[replayKey(r)]; ok {
				delete(replay, replayKey(r))
				continue
			}
			kept = append(kept, r)
		}
		recs = kept
		for k, seq := range replay {
			if seq <= processed {
				delete(replay, k) // its event is past: it will never come again
			}
		}
		changed = true
	}

	if len(recs) == 0 && !changed && !s.stateDirty {
		// Nothing durable changed. Not saving the state is safe: replaying
		// these events from the saved state would change nothing either.
		s.det, s.processed = det, processed
		return nil
	}
	if err := s.append(recs); err != nil {
		return err
	}
	s.det, s.processed, s.replay = det, processed, replay
	return s.saveState()
}

// process classifies one event and feeds the detector, appending records
// to recs.
func (s *Sink) process(det *detector, rec outbox.Record, recs []*Record, changed *bool) []*Record {
	ev, err := change.Parse(rec.Raw)
	if err != nil {
		return append(recs, &Record{
			Class: ClassUnreadable, Severity: s.cls.severityOf(ClassUnreadable),
			Time: rec.CapturedAt.UTC(), Source: rec.Source, Seq: rec.Seq,
			Message: "the audit sink cannot read this change event, so it cannot tell whether it was risky: " + err.Error(),
		})
	}
	t := eventTime(rec, ev)
	for _, b := range det.observe(rec.Source, t) {
		recs = append(recs, s.burstRecord(b, rec.Seq))
		*changed = true
	}
	if class, rules, sev := s.cls.classify(ev); class != "" {
		r := eventRecord(rec, ev, t)
		r.Class, r.Rules, r.Severity = class, rules, sev
		recs = append(recs, r)
	}
	if ev.OperationType == change.OpDelete && s.cls.massDelete && !s.cls.ignored(ev.NS) {
		e := delEntry{T: t, Seq: rec.Seq, CT: ClusterTime{T: ev.ClusterTime.T, I: ev.ClusterTime.I}}
		if det.wantsKey(rec.Source, ev.NS) {
			e.Key = extJSON(ev.DocumentKey)
		}
		det.delete(rec.Source, ev.NS, e)
		*changed = true
	}
	return recs
}

// burstRecord is the record of a closed burst, written while processing the
// event with sequence seq.
func (s *Sink) burstRecord(b closedBurst, seq uint64) *Record {
	ns := b.NS
	ct := func(c ClusterTime) *ClusterTime {
		if c == (ClusterTime{}) {
			return nil
		}
		return &c
	}
	sample := b.Burst.Sample
	if sample == nil {
		sample = []json.RawMessage{}
	}
	return &Record{
		Class:       ClassMassDelete,
		Severity:    s.cls.severityOf(ClassMassDelete),
		Time:        msTime(b.Burst.First.T),
		Source:      b.Source,
		Seq:         seq,
		Op:          change.OpDelete,
		NS:          &ns,
		ClusterTime: ct(b.Burst.First.CT),
		Burst: &Burst{
			Count:         b.Burst.Count,
			FirstTime:     msTime(b.Burst.First.T),
			LastTime:      msTime(b.Burst.Last.T),
			FirstSeq:      b.Burst.First.Seq,
			LastSeq:       b.Burst.Last.Seq,
			FirstCT:       ct(b.Burst.First.CT),
			LastCT:        ct(b.Burst.Last.CT),
			SampleKeys:    sample,
			Threshold:     s.cfg.MassDelete.Threshold,
			WindowSeconds: s.cfg.MassDelete.Window.Seconds(),
			Ended:         b.Ended,
		},
	}
}

func (s *Sink) usable() error {
	if s.closed {
		return ErrClosed
	}
	if s.broken != nil {
		return fmt.Errorf("audit log %s: an earlier write failed and could not be undone (%v); restart godwit to reopen the log", s.cfg.Path, s.broken)
	}
	return nil
}

// append writes recs to the log (chaining them to the head) and fsyncs.
// On failure the log is cut back to its previous end.
func (s *Sink) append(recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	now := s.now().UTC()
	h := s.head
	var buf []byte
	for _, r := range recs {
		r.Index, r.Prev = h.Index+1, h.Hash
		if r.RecordedAt.IsZero() {
			r.RecordedAt = now
		}
		line, err := encodeRecord(r)
		if err != nil {
			return err
		}
		buf = append(buf, line...)
		h = Head{Index: r.Index, Hash: r.Hash}
	}
	_, err := s.f.WriteAt(buf, s.end)
	if err == nil {
		err = s.fail("before-log-sync")
	}
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		if terr := s.f.Truncate(s.end); terr != nil {
			s.broken = terr
		}
		return fmt.Errorf("write audit log %s: %w", s.cfg.Path, err)
	}
	s.end += int64(len(buf))
	s.head = h
	s.stateDirty = true
	if s.cfg.HeadEvery > 0 && h.Index/uint64(s.cfg.HeadEvery) > s.loggedHead/uint64(s.cfg.HeadEvery) {
		s.loggedHead = h.Index
		s.logHead("audit chain head")
	}
	if s.mirror != nil {
		s.mirror.kick()
	}
	return s.fail("after-log-sync")
}

func (s *Sink) fail(name string) error {
	if s.failpoint == nil {
		return nil
	}
	return s.failpoint(name)
}

func (s *Sink) saveState() error {
	if err := s.fail("before-state"); err != nil {
		return err
	}
	st := &stateFile{Version: stateVersion, Index: s.head.Index, Hash: s.head.Hash, End: s.end,
		ProcessedSeq: s.processed, Detector: s.det.state(), Replay: s.replay}
	if err := writeState(s.statePath, st); err != nil {
		// The records are durable; the next call saves the state again.
		s.stateDirty = true
		return fmt.Errorf("save audit state %s: %w", s.statePath, err)
	}
	s.stateDirty = false
	return nil
}

func (s *Sink) logHead(msg string) {
	s.log.Info().Uint64("audit_index", s.head.Index).Str("audit_hash", s.head.Hash).
		Str("audit_head", s.head.String()).Msg(msg)
}

// SystemEvent is something godwit itself did or saw, recorded with
// RecordSystem.
type SystemEvent struct {
	// Class is one of the system Class constants, or another snake_case
	// name. Required.
	Class string
	// Severity overrides the class's configured severity.
	Severity string
	// Source is the godwit source concerned, if any.
	Source string
	// Namespace is "db" or "db.coll", if one is concerned.
	Namespace string
	// User is the acting user, when known (trigger and function changes
	// made through the API).
	User    string
	Message string
	// Details must encode as JSON.
	Details map[string]any
	// Time is when it happened; default now.
	Time time.Time
}

// RecordSystem appends a record of one of godwit's own events to the chain
// and returns once it is durable. Each call writes one record: callers call
// it once per occurrence.
func (s *Sink) RecordSystem(_ context.Context, ev SystemEvent) error {
	if ev.Class == "" {
		return errors.New("record system event: class is required")
	}
	if ev.Severity != "" && SeverityRank(ev.Severity) == 0 {
		return fmt.Errorf("record system event %s: severity %q is not one of %s", ev.Class, ev.Severity, strings.Join(Severities, ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	r := &Record{Class: ev.Class, Severity: ev.Severity, Time: ev.Time.UTC(), Source: ev.Source,
		User: ev.User, Message: ev.Message, Details: ev.Details}
	if r.Severity == "" {
		r.Severity = s.cls.severityOf(ev.Class)
	}
	if ev.Time.IsZero() {
		r.Time = s.now().UTC()
	}
	if ev.Namespace != "" {
		db, coll, _ := strings.Cut(ev.Namespace, ".")
		r.NS = &change.Namespace{DB: db, Coll: coll}
	}
	if err := s.append([]*Record{r}); err != nil {
		return fmt.Errorf("record system event %s: %w", ev.Class, err)
	}
	return s.saveState()
}

// Head returns the index and hash of the last record.
func (s *Sink) Head() Head {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// Count returns the number of records in the log.
func (s *Sink) Count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head.Index
}

// Close records the mass-delete bursts still open (ended "close": no later
// event will close them while godwit is down), saves the state, logs the
// head and closes the log. It is safe to call twice.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	var errs []error
	if s.broken == nil {
		det := s.det.clone()
		var recs []*Record
		for _, b := range det.flush(EndedClose) {
			recs = append(recs, s.burstRecord(b, s.processed))
		}
		if err := s.append(recs); err != nil {
			errs = append(errs, err)
		} else {
			s.det = det
			if len(recs) > 0 || s.stateDirty {
				errs = append(errs, s.saveState())
			}
		}
	}
	s.closed = true
	s.logHead("audit log closed")
	if s.mirror != nil {
		errs = append(errs, s.mirror.stop(ctx))
	}
	errs = append(errs, s.f.Close())
	return errors.Join(errs...)
}
