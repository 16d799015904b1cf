package events

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// Config tunes the engine. The zero value takes the documented defaults.
type Config struct {
	// BatchSize is the most events one outbox read returns. Default 256.
	BatchSize int
	// BatchBytes stops a read early once this many bytes of events were
	// read. Default 4 MiB.
	BatchBytes int
	// CheckpointInterval is the least time between two Checkpoint messages
	// of a stream. Default 1s.
	CheckpointInterval time.Duration
	// MetadataDatabase is godwit's own database: its events are never sent
	// (capture does not store them either). Default change.DefaultMetadataDB.
	MetadataDatabase string
}

// Defaults of Config.
const (
	DefaultBatchSize          = 256
	DefaultBatchBytes         = 4 << 20
	DefaultCheckpointInterval = time.Second
)

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
}

// Message is one message of a stream: exactly one field is set.
type Message struct {
	Started *Started
	Event   *Event
	Lagged  *Lagged
	// Checkpoint > 0: every event up to this sequence was looked at.
	Checkpoint uint64
}

// Started is the first message of every stream.
type Started struct {
	// Start is the first sequence the stream reads.
	Start uint64
	// Oldest and Last describe the outbox when the stream started.
	Oldest, Last uint64
	// Resumed: a durable subscription continued from its cursor.
	Resumed bool
}

// Event is a captured change event that passed the filters.
type Event struct {
	outbox.Record
	// Change is the parsed event; nil for an event godwit cannot parse
	// (Record.Raw has it).
	Change *change.Event
}

// Lag reasons.
const (
	// LagRetention: retention deleted the events before they were read.
	LagRetention = "retention"
	// LagMaxLag: the subscriber was more than Request.MaxLag events behind.
	LagMaxLag = "max_lag"
)

// Lagged says the stream skipped FirstMissed to LastMissed and goes on at
// LastMissed+1.
type Lagged struct {
	Reason                  string
	FirstMissed, LastMissed uint64
}

// Status describes a subscription, for `godwit status`.
type Status struct {
	// Name is the durable name, or "live-N".
	Name      string
	Durable   bool
	Connected bool
	Peer      string
	Filter    string
	// Cursor is the acknowledged sequence of a durable subscription, the
	// last sequence looked at by a live one.
	Cursor      uint64
	Backlog     uint64
	Sent        uint64
	Lagged      uint64
	LastError   string
	ConnectedAt time.Time
}

// Engine serves subscriptions over one outbox. It is safe for concurrent
// use.
type Engine struct {
	ob  *outbox.Outbox
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	closed bool
	// drained is closed once the engine is closed and every stream has
	// ended.
	drained chan struct{}
	nextID  uint64
	subs    map[uint64]*sub
	durable map[string]*sub   // connected durable subscriptions by name
	lastErr map[string]string // durable name → why its last stream ended
}

type sub struct {
	id      uint64
	name    string
	durable bool
	req     Request
	since   time.Time
	cancel  context.CancelCauseFunc

	pos    atomic.Uint64
	sent   atomic.Uint64
	lagged atomic.Uint64
}

// Open returns an engine over ob and registers the cursor of every durable
// subscription, so that retention keeps their events while their
// subscribers are away (including right after a restart).
func Open(ob *outbox.Outbox, cfg Config, log zerolog.Logger) (*Engine, error) {
	cfg.defaults()
	e := &Engine{ob: ob, cfg: cfg, log: log.With().Str("component", "events").Logger(),
		subs: map[uint64]*sub{}, durable: map[string]*sub{}, lastErr: map[string]string{}, drained: make(chan struct{})}
	sinks, err := ob.Sinks()
	if err != nil {
		return nil, fmt.Errorf("open event subscriptions: %w", err)
	}
	for key := range sinks {
		if id, err := outbox.ParseCursorID(key); err == nil && id.Kind() == outbox.KindSubscription {
			if _, err := ob.RegisterSink(id); err != nil {
				return nil, fmt.Errorf("open event subscriptions: %w", err)
			}
		}
	}
	return e, nil
}

// Run waits until ctx ends, then tells every stream to end with ErrClosed
// and refuses new ones, without waiting for them (gRPC's graceful stop
// waits for streams, which end only when told to). Close waits.
func (e *Engine) Run(ctx context.Context) error {
	<-ctx.Done()
	e.stop()
	return nil
}

// Close ends every stream with ErrClosed, refuses new ones and waits until
// every Subscribe call has returned, so that the outbox can be closed
// after it; when ctx ends first it returns ctx's error. A stream blocked
// in its send function ends when send returns. Durable cursors stay
// registered until the outbox closes.
func (e *Engine) Close(ctx context.Context) error {
	e.stop()
	select {
	case <-e.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close event subscriptions: %w: a stream is still sending", ctx.Err())
	}
}

// stop ends every stream and refuses new ones.
func (e *Engine) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	for _, s := range e.subs {
		s.cancel(ErrClosed)
	}
	if len(e.subs) == 0 {
		close(e.drained)
	}
}

// Subscribe streams what req asks for to send, starting with a Started
// message, until ctx ends (ctx's error), send fails (its error), the engine
// closes (ErrClosed), a newer stream takes the durable subscription over
// (ErrTakenOver) or it is deleted (ErrDeleted). send is called from this
// goroutine only; a slow send delays this stream and nothing else.
func (e *Engine) Subscribe(ctx context.Context, req Request, send func(Message) error) error {
	f, err := req.compile(e.cfg.MetadataDatabase)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &sub{req: req, durable: req.Durable != "", name: req.Durable, since: time.Now().UTC(), cancel: cancel}
	if err := e.add(s); err != nil {
		return err
	}
	var streamErr error
	defer func() { e.remove(s, streamErr) }()
	if !s.durable {
		defer e.ob.Release(s.holdID())
	}

	pos, started, err := e.start(s)
	if err != nil {
		streamErr = err
		return err
	}
	s.pos.Store(pos)
	log := e.log.With().Str("subscription", s.name).Str("filter", req.String()).Str("peer", req.Peer).Logger()
	log.Info().Uint64("start", started.Start).Bool("resumed", started.Resumed).Msg("subscription started")
	if err = send(Message{Started: &started}); err == nil {
		err = e.stream(ctx, s, f, pos, send)
	}
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		err = c // the engine ended it: say why
	}
	streamErr = err
	log.Info().AnErr("reason", err).Uint64("sent", s.sent.Load()).Msg("subscription ended")
	return err
}

func (e *Engine) add(s *sub) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.nextID++
	s.id = e.nextID
	if !s.durable {
		s.name = "live-" + strconv.FormatUint(s.id, 10)
	} else if old := e.durable[s.name]; old != nil {
		old.cancel(ErrTakenOver)
	}
	e.subs[s.id] = s
	if s.durable {
		e.durable[s.name] = s
	}
	return nil
}

func (e *Engine) remove(s *sub, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.subs, s.id)
	if e.closed && len(e.subs) == 0 {
		close(e.drained)
	}
	if s.durable && e.durable[s.name] == s {
		delete(e.durable, s.name)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrDeleted) {
			e.lastErr[s.name] = err.Error()
		}
	}
}

// start finds the position a stream reads after, creating a durable
// subscription's cursor when it is new.
func (e *Engine) start(s *sub) (uint64, Started, error) {
	st := e.ob.Stats()
	started := Started{Oldest: st.Oldest, Last: st.Last}
	var pos uint64
	switch s.req.Start {
	case StartLive:
		pos = st.Last
		if !s.durable {
			pos = e.ob.HoldLast(s.holdID())
		}
	case StartSequence:
		pos = max(s.req.FromSequence, 1) - 1
	case StartTime:
		first, err := e.seekTime(s.req.FromTime)
		if err != nil {
			return 0, started, err
		}
		pos = first - 1
	}
	if s.durable {
		id := outbox.SubscriptionCursor(s.name)
		prev, existed, err := e.ob.Sink(id)
		if err != nil {
			return 0, started, err
		}
		cur, err := e.ob.RegisterSink(id)
		if err != nil {
			return 0, started, err
		}
		if existed {
			pos, started.Resumed = max(prev.Acked, cur.Acked), true
		} else if pos > cur.Acked {
			// Never past the last event: Ack refuses that, and a cursor
			// ahead of the outbox would skip the events that fill the gap.
			if err := e.ob.Ack(id, min(pos, st.Last), 0); err != nil {
				return 0, started, err
			}
		}
	}
	if !s.durable {
		e.ob.Hold(s.holdID(), pos)
	}
	started.Start = pos + 1
	return pos, started, nil
}

// holdID names a subscription's hold on the outbox.
func (s *sub) holdID() string { return "events:" + s.name }

// advance records that the stream has read up to pos: status shows it and
// a subscription without a cursor holds retention after it.
func (e *Engine) advance(s *sub, pos uint64) {
	s.pos.Store(pos)
	if !s.durable {
		e.ob.Hold(s.holdID(), pos)
	}
}

// seekTime returns the first sequence captured at or after t (the last
// sequence + 1 when there is none), by binary search: capture appends in
// time order.
func (e *Engine) seekTime(t time.Time) (uint64, error) {
	st := e.ob.Stats()
	if st.Oldest == 0 {
		return st.Last + 1, nil
	}
	lo, hi := st.Oldest, st.Last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		r, ok, err := e.ob.Get(mid)
		if err != nil {
			return 0, fmt.Errorf("find the first event at %s: %w", t.Format(time.RFC3339Nano), err)
		}
		// A missing event was deleted by retention meanwhile: it was
		// before the new oldest one, so the answer is after it.
		if !ok || r.CapturedAt.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// stream sends what follows pos until ctx ends or send fails.
func (e *Engine) stream(ctx context.Context, s *sub, f *filter, pos uint64, send func(Message) error) error {
	reported := pos // the last sequence covered by a message sent
	var lastCheckpoint time.Time
	checkpoint := func() error {
		if reported >= pos {
			return nil
		}
		if err := send(Message{Checkpoint: pos}); err != nil {
			return err
		}
		reported, lastCheckpoint = pos, time.Now()
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err := e.ob.Read(pos, e.cfg.BatchSize, e.cfg.BatchBytes)
		switch {
		case errors.Is(err, outbox.ErrBehindRetention):
			st := e.ob.Stats()
			resume := st.Oldest
			if resume == 0 {
				resume = st.Last + 1
			}
			if resume <= pos+1 { // retention moved on between Read and Stats
				continue
			}
			if err := e.lag(s, send, LagRetention, pos+1, resume-1); err != nil {
				return err
			}
			pos, reported = resume-1, resume-1
			e.advance(s, pos)
			continue
		case errors.Is(err, outbox.ErrClosed):
			return ErrClosed
		case err != nil:
			return fmt.Errorf("read the outbox after %d: %w", pos, err)
		}
		if len(recs) == 0 {
			if err := e.wait(ctx, pos, reported < pos, lastCheckpoint); err != nil {
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					if err := checkpoint(); err != nil {
						return err
					}
					continue
				}
				if errors.Is(err, outbox.ErrClosed) {
					return ErrClosed
				}
				return err
			}
			continue
		}
		for _, r := range recs {
			if s.req.MaxLag > 0 && !s.durable {
				if last := e.ob.LastSeq(); last-r.Seq > s.req.MaxLag {
					if err := e.lag(s, send, LagMaxLag, r.Seq, last); err != nil {
						return err
					}
					pos, reported = last, last
					break
				}
			}
			pos = r.Seq
			ev, ok := f.match(r)
			if !ok {
				continue
			}
			// Counted before the send: a subscriber that received the
			// event must never see a status that has not counted it.
			s.sent.Add(1)
			if err := send(Message{Event: &Event{Record: r, Change: ev}}); err != nil {
				s.sent.Add(^uint64(0))
				return err
			}
			reported = r.Seq
		}
		e.advance(s, pos)
		if reported < pos && time.Since(lastCheckpoint) >= e.cfg.CheckpointInterval {
			if err := checkpoint(); err != nil {
				return err
			}
		}
	}
}

// wait blocks until an event after pos exists. With a checkpoint pending it
// gives up (context.DeadlineExceeded) when the checkpoint is due.
func (e *Engine) wait(ctx context.Context, pos uint64, pending bool, lastCheckpoint time.Time) error {
	if pending {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, lastCheckpoint.Add(e.cfg.CheckpointInterval))
		defer cancel()
	}
	return e.ob.Wait(ctx, pos)
}

func (e *Engine) lag(s *sub, send func(Message) error, reason string, first, last uint64) error {
	s.lagged.Add(1)
	e.log.Warn().Str("subscription", s.name).Str("reason", reason).Uint64("first_missed", first).
		Uint64("last_missed", last).Msg("subscriber lagged: events skipped")
	return send(Message{Lagged: &Lagged{Reason: reason, FirstMissed: first, LastMissed: last}})
}

// Ack moves durable subscription name's cursor to seq and returns the
// cursor. Acking backwards is a no-op.
func (e *Engine) Ack(name string, seq uint64) (outbox.SinkState, error) {
	id := outbox.SubscriptionCursor(name)
	st, ok, err := e.ob.Sink(id)
	if err != nil {
		return outbox.SinkState{}, err
	}
	if !ok {
		return st, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if last := e.ob.LastSeq(); seq > last {
		return st, invalid("sequence", "%d is after the last captured event %d", seq, last)
	}
	var delivered uint64
	if seq > st.Acked {
		delivered = seq - st.Acked
	}
	if err := e.ob.Ack(id, seq, delivered); err != nil {
		return st, err
	}
	st.Acked = max(st.Acked, seq)
	st.Delivered += delivered
	return st, nil
}

// Delete ends durable subscription name's stream (ErrDeleted) and removes
// its cursor: retention no longer waits for it.
func (e *Engine) Delete(name string) error {
	if _, ok, err := e.ob.Sink(outbox.SubscriptionCursor(name)); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	e.mu.Lock()
	if s := e.durable[name]; s != nil {
		s.cancel(ErrDeleted)
	}
	delete(e.lastErr, name)
	e.mu.Unlock()
	if err := e.ob.RemoveSink(outbox.SubscriptionCursor(name)); err != nil {
		return fmt.Errorf("delete subscription %s: %w", name, err)
	}
	e.log.Info().Str("subscription", name).Msg("durable subscription deleted")
	return nil
}

// Subscriptions returns every connected stream and every durable
// subscription, by name.
func (e *Engine) Subscriptions() ([]Status, error) {
	sinks, err := e.ob.Sinks()
	if err != nil {
		return nil, err
	}
	last := e.ob.LastSeq()
	backlog := func(cursor uint64) uint64 {
		if last > cursor {
			return last - cursor
		}
		return 0
	}
	var out []Status
	seen := map[string]bool{}
	e.mu.Lock()
	for _, s := range e.subs {
		st := Status{Name: s.name, Durable: s.durable, Connected: true, Peer: s.req.Peer, Filter: s.req.String(),
			Cursor: s.pos.Load(), Sent: s.sent.Load(), Lagged: s.lagged.Load(), ConnectedAt: s.since}
		if s.durable {
			if e.durable[s.name] != s {
				continue // taken over; the newer stream is listed
			}
			seen[s.name] = true
			st.Cursor = sinks[outbox.SubscriptionCursor(s.name).String()].Acked
			st.LastError = e.lastErr[s.name]
		}
		st.Backlog = backlog(st.Cursor)
		out = append(out, st)
	}
	for key, ss := range sinks {
		id, err := outbox.ParseCursorID(key)
		name := id.Name()
		if err != nil || id.Kind() != outbox.KindSubscription || seen[name] {
			continue
		}
		out = append(out, Status{Name: name, Durable: true, Cursor: ss.Acked, Backlog: backlog(ss.Acked), LastError: e.lastErr[name]})
	}
	e.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
