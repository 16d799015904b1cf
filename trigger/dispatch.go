package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/mongokit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// triggerHost performs a trigger's function's logs and writes. It holds no
// per-call state, so one serves every call of the trigger.
type triggerHost struct {
	log    zerolog.Logger
	client lungo.IClient // nil: no writes allowed
	globs  []change.Glob
	metaDB string
	// allow is the owner's allow-list, checked on every write as well as
	// when the trigger was stored: it may have been narrowed since.
	allow auth.Allow
	owner string
	// deniedSource is the write data source when the allow-list refuses it.
	deniedSource string
}

func (m *Manager) newHost(t Trigger, fn Function) (*triggerHost, error) {
	h := &triggerHost{metaDB: m.cfg.MetadataDatabase, allow: m.allowOf(t.UserID), owner: t.UserID,
		log: m.log.With().Str("trigger", t.Name).Str("function", fn.Name).Logger()}
	if err := t.checkAllow(h.allow); err != nil {
		h.log.Warn().Err(err).Msg("trigger is outside its owner's allow-list (narrowed since it was stored): " +
			"events outside it are skipped and writes outside it denied")
	}
	if len(t.Writes.Namespaces) > 0 {
		ds := t.writeSource()
		h.client = m.deps.DataSources[ds]
		if h.client == nil {
			return nil, fmt.Errorf("writes.data_source %q is not configured", ds)
		}
		if !h.allow.Source(ds) {
			h.deniedSource = ds
		}
	}
	for _, g := range t.Writes.Namespaces {
		glob, err := change.ParseGlob(g)
		if err != nil {
			return nil, err
		}
		h.globs = append(h.globs, glob)
	}
	return h, nil
}

func (h *triggerHost) Log(level wasm.Level, msg string) {
	lvl := zerolog.InfoLevel
	switch level {
	case wasm.LevelDebug:
		lvl = zerolog.DebugLevel
	case wasm.LevelWarn:
		lvl = zerolog.WarnLevel
	case wasm.LevelError:
		lvl = zerolog.ErrorLevel
	}
	h.log.WithLevel(lvl).Str("from", "function").Msg(msg)
}

// splitNS splits "db.coll" at the first dot.
func splitNS(ns string) (change.Namespace, error) {
	db, coll, ok := strings.Cut(ns, ".")
	if !ok || db == "" || coll == "" {
		return change.Namespace{}, fmt.Errorf("%w: namespace %q is not db.collection", wasm.ErrWriteInvalid, ns)
	}
	return change.Namespace{DB: db, Coll: coll}, nil
}

func (h *triggerHost) allowed(ns string) (change.Namespace, error) {
	n, err := splitNS(ns)
	if err != nil {
		return n, err
	}
	if h.deniedSource != "" {
		return n, fmt.Errorf("%w: data source %s is outside the allow-list of user %s", wasm.ErrWriteDenied, h.deniedSource, h.owner)
	}
	if n.DB == h.metaDB {
		return n, fmt.Errorf("%w: %s is in godwit's metadata database", wasm.ErrWriteDenied, ns)
	}
	if !h.allow.Namespace(n) {
		return n, fmt.Errorf("%w: %s is outside the allow-list of user %s", wasm.ErrWriteDenied, ns, h.owner)
	}
	for _, g := range h.globs {
		if g.Match(n) {
			return n, nil
		}
	}
	return n, fmt.Errorf("%w: %s is not in the trigger's writes.namespaces", wasm.ErrWriteDenied, ns)
}

func (h *triggerHost) Write(ctx context.Context, w wasm.Write) error {
	ns, err := h.allowed(w.Namespace)
	if err != nil {
		return err
	}
	c := h.client.Database(ns.DB).Collection(ns.Coll)
	doc := bson.Raw(w.Document)
	switch w.Kind {
	case "insert":
		_, err = c.InsertOne(ctx, doc)
	case "update":
		opts := options.Update().SetUpsert(w.Upsert)
		if w.Many {
			_, err = c.UpdateMany(ctx, doc, bson.Raw(w.Update), opts)
		} else {
			_, err = c.UpdateOne(ctx, doc, bson.Raw(w.Update), opts)
		}
	case "delete":
		if w.Many {
			_, err = c.DeleteMany(ctx, doc)
		} else {
			_, err = c.DeleteOne(ctx, doc)
		}
	default:
		return fmt.Errorf("%w: unknown write %q", wasm.ErrWriteInvalid, w.Kind)
	}
	if lungo.IsUniquenessError(err) {
		return fmt.Errorf("%w: %s into %s", wasm.ErrDuplicateKey, w.Kind, w.Namespace)
	}
	if err != nil {
		return fmt.Errorf("%s into %s: %s", w.Kind, w.Namespace, logging.RedactText(err.Error()))
	}
	return nil
}

// eventFilter decides which change events a database trigger gets and
// what they look like.
type eventFilter struct {
	source string
	// filter holds the trigger's namespace (exact names, as an exact glob),
	// operation types and the metadata database: change.Filter's rules.
	filter          change.Filter
	fullDoc, preImg bool
	match, project  *bson.D
	// allow is the owner's allow-list: events outside it are skipped.
	allow       auth.Allow
	sourceOK    bool
	checkAllows bool // the allow-list limits namespaces
}

func newFilter(c *DatabaseConfig, metadataDB string, allow auth.Allow) (*eventFilter, error) {
	f := &eventFilter{source: c.DataSource,
		fullDoc: c.FullDocument, preImg: c.FullDocumentBeforeChange,
		allow: allow, sourceOK: allow.Source(c.DataSource), checkAllows: len(allow.Namespaces()) > 0}
	f.filter = change.Filter{Operations: c.OperationTypes, MetadataDB: metadataDB}
	if len(f.filter.Operations) == 0 {
		f.filter.Operations = dbOps
	}
	if c.Database != "" {
		// database and collection are exact names: a '*' in them is a '*'.
		f.filter.Include = []change.Glob{change.ExactGlob(change.Namespace{DB: c.Database, Coll: c.Collection})}
	}
	var err error
	if f.match, err = parseMatch(c.Match); err != nil {
		return nil, err
	}
	if f.project, err = parseProject(c.Project); err != nil {
		return nil, err
	}
	return f, nil
}

// lookupNS reads the namespace document in field of doc ("ns" or "to").
func lookupNS(doc bsoncore.Document, field string) change.Namespace {
	d, _ := doc.Lookup(field).DocumentOK()
	db, _ := d.Lookup("db").StringValueOK()
	coll, _ := d.Lookup("coll").StringValueOK()
	return change.Namespace{DB: db, Coll: coll}
}

// apply returns the event the function gets, or ok=false when the trigger
// does not fire for it. Events needing no change are passed through
// without copying.
func (f *eventFilter) apply(rec outbox.Record) (ev []byte, ok bool, err error) {
	if rec.Source != f.source || !f.sourceOK {
		return nil, false, nil
	}
	doc := bsoncore.Document(rec.Raw)
	op, _ := doc.Lookup("operationType").StringValueOK()
	if !f.filter.Operation(op) {
		return nil, false, nil
	}
	// Only what the filter reads is looked up: a full change.Parse would
	// decode every field of every event.
	head := change.Event{OperationType: op, NS: lookupNS(doc, "ns"), To: lookupNS(doc, "to")}
	if !f.filter.Match(&head) {
		return nil, false, nil
	}
	if f.checkAllows && !f.allow.Namespace(head.NS) {
		return nil, false, nil
	}
	ev = rec.Raw
	stripFull := !f.fullDoc && op == change.OpUpdate
	if stripFull || !f.preImg {
		ev = strip(doc, stripFull, !f.preImg)
	}
	if f.match == nil && f.project == nil {
		return ev, true, nil
	}
	var d bson.D
	if err := bson.Unmarshal(ev, &d); err != nil {
		return nil, false, fmt.Errorf("decode event %d: %w", rec.Seq, err)
	}
	if f.match != nil {
		matched, err := mongokit.Match(&d, f.match)
		if err != nil {
			return nil, false, fmt.Errorf("match expression on event %d: %w", rec.Seq, err)
		}
		if !matched {
			return nil, false, nil
		}
	}
	if f.project != nil {
		p, err := mongokit.Project(&d, f.project)
		if err != nil {
			return nil, false, fmt.Errorf("projection on event %d: %w", rec.Seq, err)
		}
		if ev, err = bson.Marshal(p); err != nil {
			return nil, false, fmt.Errorf("projection on event %d: %w", rec.Seq, err)
		}
	}
	return ev, true, nil
}

// strip removes fullDocument and/or fullDocumentBeforeChange, returning
// doc itself when neither is present.
func strip(doc bsoncore.Document, full, pre bool) []byte {
	drop := func(key string) bool {
		return (full && key == "fullDocument") || (pre && key == "fullDocumentBeforeChange")
	}
	elems, err := doc.Elements()
	if err != nil {
		return doc
	}
	keep := make([][]byte, 0, len(elems))
	for _, e := range elems {
		if drop(e.Key()) {
			continue
		}
		keep = append(keep, e)
	}
	if len(keep) == len(elems) {
		return doc
	}
	return bsoncore.BuildDocument(nil, keep...)
}

// recordFilter decides which records of its outbox a trigger gets and
// what its function receives.
type recordFilter interface {
	apply(rec outbox.Record) (ev []byte, ok bool, err error)
}

// authFilter selects the reported authentication events an authentication
// trigger fires for.
type authFilter struct {
	ops, providers []string
	owner          string
}

func (f authFilter) apply(rec outbox.Record) ([]byte, bool, error) {
	if rec.Source != queueAuth {
		return nil, false, nil
	}
	doc := bsoncore.Document(rec.Raw)
	op, _ := doc.Lookup("operationType").StringValueOK()
	provider, _ := doc.Lookup("provider").StringValueOK()
	if !slices.Contains(f.ops, op) || (len(f.providers) > 0 && !slices.Contains(f.providers, provider)) {
		return nil, false, nil
	}
	// A user's report runs only that user's triggers.
	if by, ok := doc.Lookup("reportedBy").StringValueOK(); ok && by != f.owner {
		return nil, false, nil
	}
	return rec.Raw, true, nil
}

// scheduleFilter selects a scheduled trigger's own runs.
type scheduleFilter struct{ id string }

func (f scheduleFilter) apply(rec outbox.Record) ([]byte, bool, error) {
	if rec.Source != queueSchedule {
		return nil, false, nil
	}
	id, _ := bsoncore.Document(rec.Raw).Lookup("triggerId").StringValueOK()
	return rec.Raw, id == f.id, nil
}

// triggerSink is a trigger's sink: the runner gives it batches from the
// trigger's cursor, in the outbox (database triggers) or the queue.
type triggerSink struct {
	m         *Manager
	a         *active
	filter    recordFilter
	pool      int
	unordered bool

	// done holds events of the current unordered batch that already ran,
	// so a retry of the batch does not run them again.
	mu   sync.Mutex
	done map[uint64]bool
}

// newTriggerSink prepares a trigger's cursor: registered (so it holds
// retention) and checked against retention. It returns nil when the
// trigger halted because its cursor fell behind.
func (m *Manager) newTriggerSink(ctx context.Context, a *active) (*triggerSink, error) {
	t := a.t
	s := &triggerSink{m: m, a: a, pool: m.rt.Config().PoolSize, done: map[uint64]bool{}}
	tolerate := true // the queue only ever holds what was reported or due
	switch t.Type {
	case TypeDatabase:
		filter, err := newFilter(t.Database, m.cfg.MetadataDatabase, m.allowOf(t.UserID))
		if err != nil {
			return nil, err
		}
		s.filter, s.unordered, tolerate = filter, t.Database.Unordered, t.Database.TolerateResumeErrors
	case TypeAuthentication:
		s.filter = authFilter{ops: t.Authentication.OperationTypes, providers: t.Authentication.Providers, owner: t.UserID}
	case TypeScheduled:
		s.filter = scheduleFilter{id: t.ID}
	default:
		return nil, fmt.Errorf("trigger_type %q is unknown", t.Type)
	}
	ob := m.outboxOf(t.Type)
	id := sinkID(t.ID)
	st, err := ob.RegisterSink(id)
	if err != nil {
		return nil, err
	}
	if _, err := ob.Read(st.Acked, 1, 1); errors.Is(err, outbox.ErrBehindRetention) {
		what := "event"
		if t.Type != TypeDatabase {
			what = "queued record"
		}
		if !tolerate {
			reason := fmt.Sprintf("cursor at event %d fell behind outbox retention (events after it were deleted while the trigger was not running); "+
				"enable the trigger with skip_to_now, or set tolerate_resume_errors", st.Acked)
			m.audit(ctx, AuditResumeHalted, t, reason)
			t.Halted = reason
			t.UpdatedAt = time.Now().UTC()
			m.unregister(t.ID)
			return nil, m.store.putTrigger(ctx, t)
		}
		to := ob.Stats().Oldest
		if to == 0 {
			to = ob.LastSeq() + 1
		}
		if err := ob.Ack(id, to-1, 0); err != nil {
			return nil, err
		}
		reason := fmt.Sprintf("cursor at %s %d fell behind retention; skipped to %s %d", what, st.Acked, what, to)
		if t.Type == TypeDatabase {
			reason += " (tolerate_resume_errors)"
		} else {
			reason += " (records queued while the trigger was not running are not kept for it)"
		}
		m.audit(ctx, AuditResumeSkipped, t, reason)
	} else if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *triggerSink) invoke(ctx context.Context, ev []byte) error {
	if _, err := s.a.mod.mod.Call(ctx, ev, s.a.host); err != nil {
		if ctx.Err() == nil {
			s.m.recordErr(s.a.t.ID, err.Error())
		}
		return err
	}
	s.m.recordOK(s.a.t.ID, time.Now().UTC())
	return nil
}

// Deliver runs the function on every matching event of the batch.
func (s *triggerSink) Deliver(ctx context.Context, batch []outbox.Record) error {
	if s.unordered {
		return s.deliverUnordered(ctx, batch)
	}
	for i, rec := range batch {
		ev, ok, err := s.filter.apply(rec)
		if err != nil {
			return &sink.PartialError{Delivered: i, Err: sink.Permanent(err)}
		}
		if !ok {
			continue
		}
		if err := s.invoke(ctx, ev); err != nil {
			return &sink.PartialError{Delivered: i, Err: err}
		}
	}
	return nil
}

// deliverUnordered runs the batch's events on up to PoolSize instances at
// once. On failure it reports the first failed event; events after it that
// succeeded are remembered and not run again when the runner retries.
func (s *triggerSink) deliverUnordered(ctx context.Context, batch []outbox.Record) error {
	s.mu.Lock()
	for seq := range s.done {
		if seq < batch[0].Seq {
			delete(s.done, seq)
		}
	}
	s.mu.Unlock()
	errs := make([]error, len(batch))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(s.pool, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batch) || ctx.Err() != nil {
					return
				}
				rec := batch[i]
				s.mu.Lock()
				done := s.done[rec.Seq]
				s.mu.Unlock()
				if done {
					continue
				}
				ev, ok, err := s.filter.apply(rec)
				if err != nil {
					errs[i] = sink.Permanent(err)
					continue
				}
				if !ok {
					continue
				}
				if err := s.invoke(ctx, ev); err != nil {
					errs[i] = err
					continue
				}
				s.mu.Lock()
				s.done[rec.Seq] = true
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, err := range errs {
		if err != nil {
			return &sink.PartialError{Delivered: i, Err: err}
		}
	}
	s.mu.Lock()
	clear(s.done)
	s.mu.Unlock()
	return nil
}
