package audit

import (
	"context"
	"encoding/hex"
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
	plain     bool

	mu         sync.Mutex
	f          *os.File
	head       Head
	end        int64 // offset just past the last durable record
	processed  uint64
	det        *detector
	replay     map[string]uint64
	replayIdx  map[string]uint64 // replay key -> index of the record in the log
	stateDirty bool              // the state file is behind memory
	// sk is the key the next record is sealed with (nil: not sealing);
	// seg names its segment.
	sk  *sealKey
	seg sealState
	// halted is why the sink refuses to write (a *HaltError), nil if it
	// does not.
	halted     error
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
	newKey     bool
	plain      bool // benchmarks only: the unsealed chain of before, for comparison
}

// WithNewKey makes Open start a new sealing segment with a new key (key
// rotation), after checking the log as usual. It also lets a sealed log
// whose state file (and so its sealing key) was lost continue, with a new
// key; records after the last one the lost key sealed are then covered by
// the new key's first seal and the chain only. 'godwit audit init --rotate'
// uses it.
func WithNewKey() Option {
	return func(o *openOptions) { o.newKey = true }
}

// WithClock makes the sink read time (recorded_at, and the time of system
// records without one) from now instead of time.Now. Event times never come
// from the clock.
func WithClock(now func() time.Time) Option {
	return func(o *openOptions) { o.now = now }
}

// Open opens (or creates) the audit log of cfg. It cuts a torn last line
// left by a crash, checks that the log still ends where the state file says
// (so a cut or rewritten tail is refused, not extended), that records after
// the saved state carry valid seals and belong to the outbox events they
// claim, and restores deduplication, mass-delete and sealing state. A log
// that is not sealed yet (new, or written by an older godwit) starts being
// sealed at its next record: the verification key is written to
// cfg.Path + ".key" (see Sealing).
//
// Evidence of tampering does not fail Open: the sink opens halted (Halted
// names the first bad record), refuses to write, and Deliver returns an
// error wrapping sink.ErrHalted, so the runner halts and nothing is
// acknowledged. Open fails for I/O errors, a bad config and a locked log.
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
		plain:     o.plain,
		replay:    map[string]uint64{},
		replayIdx: map[string]uint64{},
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
	if err := s.recover(o.newKey); err != nil {
		var he *HaltError
		if !errors.As(err, &he) {
			f.Close()
			return nil, fmt.Errorf("open audit log %s: %w", cfg.Path, err)
		}
		s.halted = he
		s.log.Error().Err(he).Msg("audit sink halted: it records nothing until this is resolved; events wait in the outbox")
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

// halt is the error recover returns for evidence of tampering.
func (s *Sink) halt(err error, fix string) error { return &HaltError{Err: err, Fix: fix} }

// evidence is the advice for a log that fails a check.
func (s *Sink) evidence() string {
	return fmt.Sprintf("run 'godwit audit verify --file %s --key KEYFILE' and keep the files as evidence; to start a new log, stop godwit and move %s and %s aside", s.cfg.Path, s.cfg.Path, s.statePath)
}

// recover brings the sink to the state after the last durable record.
func (s *Sink) recover(newKey bool) error {
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
		return s.rebuild(stErr, newKey)
	}

	if st.End > end {
		return s.halt(fmt.Errorf("%w: the log has %d bytes but godwit wrote %d (through record %d)", ErrTailCut, end, st.End, st.Index),
			fmt.Sprintf("run 'godwit audit verify --file %s --head %s' and keep the file as evidence; to start a new log, stop godwit and move both %s and %s aside", s.cfg.Path, Head{st.Index, st.Hash}, s.cfg.Path, s.statePath))
	}
	if err := s.checkRecordAt(st.End, Head{Index: st.Index, Hash: st.Hash}); err != nil {
		return err
	}
	s.head = Head{Index: st.Index, Hash: st.Hash}
	s.processed = st.ProcessedSeq
	s.det.load(st.Detector)
	for k, v := range st.Replay {
		s.replay[k] = v
		s.replayIdx[k] = st.ReplayIndex[k]
	}
	sc := &sealCheck{noSeals: true}
	if st.Seal != nil {
		s.sk, _ = st.Seal.key(st.Index) // readState checked it
		s.seg = *st.Seal
		sc = &sealCheck{cur: s.sk.clone(), curID: s.seg.KeyID, sealed: true}
	}

	// Records after the saved state were written by a batch (or a Close)
	// whose state was never saved. They are accepted only if they carry the
	// seals of godwit's current key and belong to the events they claim:
	// anything else was written by someone else. A redelivered event must
	// not write them again; a burst flushed by Close must not stay open.
	var pending []*Record
	rep, err := scan(io.NewSectionReader(s.f, st.End, end-st.End), s.head, nil, sc, func(r *Record) { pending = append(pending, r) })
	if sc.cur != nil {
		sc.cur.forget()
	}
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return s.halt(fmt.Errorf("a record after the last saved state (through record %d) was not written by godwit: %w", st.Index, err), s.evidence())
		}
		return fmt.Errorf("records after the saved state: %w", err)
	}
	for _, r := range pending {
		switch {
		case r.Class == ClassMassDelete && r.Burst != nil && r.Burst.Ended == EndedClose && r.NS != nil:
			if r.Seq != s.processed || !s.det.forget(r.Source, *r.NS, r.Burst.FirstSeq) {
				return s.halt(fmt.Errorf("%w: record %d says Close ended a burst of %s that started at outbox event %d, but no such burst was open when godwit last saved its state", ErrTailMismatch, r.Index, r.NS, r.Burst.FirstSeq), s.evidence())
			}
		case r.Seq > s.processed:
			s.replay[replayKey(r)] = r.Seq
			s.replayIdx[replayKey(r)] = r.Index
		case r.Seq != 0:
			return s.halt(fmt.Errorf("%w: record %d claims outbox event %d, which godwit had processed before (through %d) when it last saved its state", ErrTailMismatch, r.Index, r.Seq, s.processed), s.evidence())
		}
	}
	s.head = rep.Head
	if s.sk != nil {
		s.sk.evolveTo(s.head.Index + 1 - s.seg.Start)
	}
	if len(pending) > 0 {
		s.log.Info().Int("records", len(pending)).Uint64("processed_seq", s.processed).
			Msg("audit log: records after the saved state carry valid seals; their redelivered events will not be recorded again")
		if err := s.saveState(); err != nil {
			return err
		}
	}
	if s.sk == nil || newKey {
		return s.startSealing()
	}
	return nil
}

// rebuild recovers without a state file: dedup falls back to the highest
// recorded sequence and mass-delete state starts empty. A sealed log cannot
// be continued without its sealing key: the sink halts, unless newKey.
func (s *Sink) rebuild(stErr error, newKey bool) error {
	if s.end == 0 {
		// A new log. Saving the state now (startSealing does) means that
		// from here on a missing state file is a loss worth a record, and a
		// crash in the first batch recovers like any other.
		return s.startSealing()
	}
	var maxSeq uint64
	rep, err := scan(io.NewSectionReader(s.f, 0, s.end), s.head, nil, &sealCheck{}, func(r *Record) { maxSeq = max(maxSeq, r.Seq) })
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return s.halt(fmt.Errorf("no usable state file and the log does not verify: %w", err), s.evidence())
		}
		return err
	}
	why := "the state file " + s.statePath + " is missing"
	if stErr != nil {
		why = stErr.Error()
	}
	if rep.SealedFrom() != 0 && !newKey {
		return s.halt(fmt.Errorf("%w: %s, and with it the key that seals record %d; godwit cannot check the records it did not account for, nor seal new ones", ErrSealStateLost, why, rep.Head.Index+1),
			fmt.Sprintf("restore %s from a backup, or run 'godwit audit verify --file %s --key KEYFILE' and then 'godwit audit init --file %s --rotate' to go on with a new key", s.statePath, s.cfg.Path, s.cfg.Path))
	}
	s.head = rep.Head
	s.processed = maxSeq
	// Seal from the reset record on: it says what was lost.
	if err := s.startSealing(); err != nil {
		return err
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

// startSealing starts a segment at the next record with a new key: it
// writes the verification key file (durably, before anything is sealed with
// it), then the state holding the key. A crash in between leaves an unused
// key file; the next Open writes another one.
func (s *Sink) startSealing() error {
	if s.plain {
		return s.saveState()
	}
	first := s.head.Index + 1
	k0, id, path, err := newKeyFile(s.cfg.Path, first, s.now())
	if err != nil {
		return err
	}
	old, oldSeg := s.sk, s.seg
	s.sk = &sealKey{key: k0}
	s.seg = sealState{KeyID: id, Start: first, KeyFile: path}
	if err := s.saveState(); err != nil {
		s.sk.forget()
		s.sk, s.seg = old, oldSeg
		return err
	}
	if old != nil {
		old.forget()
	}
	s.log.Warn().Str("audit_key_file", path).Str("audit_key_id", id).Uint64("audit_sealed_from", first).
		Msg("audit log sealing starts with a new key: move the key file off this machine (it is needed only to verify: godwit audit verify --key)")
	return nil
}

// Sealing describes the current sealing segment.
type Sealing struct {
	// KeyID names the verification key of the segment.
	KeyID string `json:"key_id"`
	// Start is the index of the segment's first record.
	Start uint64 `json:"start"`
	// KeyFile is where its verification key was written when the segment
	// started (it may have been moved since, as it should).
	KeyFile string `json:"key_file"`
}

// Sealing returns the current sealing segment; ok is false when the sink
// does not seal (it halted before it could start).
func (s *Sink) Sealing() (seg Sealing, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sk == nil {
		return Sealing{}, false
	}
	return Sealing{KeyID: s.seg.KeyID, Start: s.seg.Start, KeyFile: s.seg.KeyFile}, true
}

// Path returns the log file's path.
func (s *Sink) Path() string { return s.cfg.Path }

// Halted returns why the sink refuses to write (a *HaltError naming the
// first bad record), or nil.
func (s *Sink) Halted() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halted
}

// checkRecordAt checks that the record ending at offset end is h.
func (s *Sink) checkRecordAt(end int64, h Head) error {
	if h.Index == 0 {
		if end != 0 {
			return s.halt(fmt.Errorf("%w: the state file names an empty log at byte %d", ErrHeadMismatch, end), s.evidence())
		}
		return nil
	}
	line, _, err := lines.Before(s.f, end)
	if err != nil {
		return err
	}
	r, err := DecodeLine(line)
	if err != nil || r.Index != h.Index || r.Hash != h.Hash || contentHash(r.line) != r.Hash {
		return s.halt(fmt.Errorf("%w: record %d is not the one godwit wrote there (hash %s)", ErrHeadMismatch, h.Index, h.Hash),
			fmt.Sprintf("run 'godwit audit verify --file %s --head %s' and keep the file as evidence; to start a new log, stop godwit and move both %s and %s aside", s.cfg.Path, h, s.cfg.Path, s.statePath))
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
		// A record left by a crash that its event, redelivered, does not
		// produce again was not written for that event.
		var bad string
		var badIdx uint64
		for k, seq := range replay {
			if seq <= processed && (bad == "" || s.replayIdx[k] < badIdx) {
				bad, badIdx = k, s.replayIdx[k]
			}
		}
		if bad != "" {
			s.halted = s.halt(fmt.Errorf("%w: record %d (%s) claims outbox event %d, but that event, delivered again, does not produce it (if the audit config changed since the crash, restore it and restart)",
				ErrTailMismatch, badIdx, strings.ReplaceAll(bad, "|", " "), replay[bad]), s.evidence())
			s.log.Error().Err(s.halted).Msg("audit sink halted")
			return s.usable()
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
	for k := range s.replayIdx {
		if _, ok := replay[k]; !ok {
			delete(s.replayIdx, k)
		}
	}
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
	if s.halted != nil {
		return fmt.Errorf("%w: %w", sink.ErrHalted, s.halted)
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
	// Seal with a copy: the key in use moves on only once the records are
	// durable, so a failed write can be retried with the right keys.
	var k *sealKey
	if s.sk != nil {
		k = s.sk.clone()
		defer func() { k.forget() }()
	}
	var buf []byte
	for _, r := range recs {
		r.Index, r.Prev = h.Index+1, h.Hash
		if r.RecordedAt.IsZero() {
			r.RecordedAt = now
		}
		line, err := encodeRecord(r, k)
		if err != nil {
			return err
		}
		if k != nil {
			k.evolve()
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
	if k != nil {
		// Forget the keys that sealed these records: only the next one is
		// kept (and saved with the state right after).
		s.sk, k = k, s.sk
	}
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
		ProcessedSeq: s.processed, Detector: s.det.state(), Replay: s.replay, ReplayIndex: s.replayIdx}
	if s.sk != nil {
		seg := s.seg
		seg.Next, seg.Key = s.seg.Start+s.sk.j, hex.EncodeToString(s.sk.key)
		st.Seal = &seg
	}
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
	if s.broken == nil && s.halted == nil {
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
	if s.sk != nil {
		s.sk.forget()
	}
	return errors.Join(errs...)
}
