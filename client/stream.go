package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// Filter selects events. An event passes when it passes every non-empty
// list; the zero Filter passes everything.
type Filter struct {
	// Sources are source ids (sources[].id of godwit's configuration).
	Sources []string
	// Namespaces are globs: "shop.orders", "shop.*", "*.orders", "shop"
	// for a whole database. An event passes when its namespace (or a
	// rename's target) matches one.
	Namespaces []string
	// Operations are operation types (OpInsert, OpUpdate, …).
	Operations []string
	// IgnoreNamespaces are globs never sent, even when Namespaces match:
	// list where the application writes, so that it never sees its own
	// writes.
	IgnoreNamespaces []string
}

// Defaults of the subscribe options.
const (
	DefaultAckEvery    = 1000
	DefaultAckInterval = time.Second
	DefaultBackoffMin  = 100 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
)

// SubscribeOption configures Subscribe.
type SubscribeOption func(*subOptions) error

type startKind int

const (
	startLive startKind = iota
	startSequence
	startTime
)

type subOptions struct {
	start       startKind
	fromSeq     uint64
	fromTime    time.Time
	durable     string
	maxLag      uint64
	raw         bool
	autoAck     bool
	ackEvery    int
	ackInterval time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	giveUp      time.Duration
	onReconnect func(err error, attempt int, wait time.Duration)
}

// Live starts with the first event captured after the subscription
// started. It is the default.
func Live() SubscribeOption {
	return func(o *subOptions) error { o.start = startLive; return nil }
}

// FromSequence starts at outbox sequence seq (1: the oldest event godwit
// still retains). Events retention already deleted are reported with a
// *LaggedError first.
func FromSequence(seq uint64) SubscribeOption {
	return func(o *subOptions) error { o.start, o.fromSeq = startSequence, seq; return nil }
}

// FromTime starts with the first event godwit captured at or after t
// (godwit's capture time, not the cluster time).
func FromTime(t time.Time) SubscribeOption {
	return func(o *subOptions) error {
		if t.IsZero() {
			return errors.New("FromTime: the zero time; use FromSequence(1) for everything retained")
		}
		o.start, o.fromTime = startTime, t
		return nil
	}
}

// Durable names a durable subscription (letters, digits, '_', '-', '.'; at
// most 64). godwit keeps its cursor across reconnects and daemon restarts:
// a stream of an existing one resumes after its last ack and ignores the
// start option, which applies only when the subscription is created.
// Acknowledge handled events with Stream.Ack (or AutoAck).
func Durable(name string) SubscribeOption {
	return func(o *subOptions) error {
		if name == "" {
			return errors.New("Durable: empty name")
		}
		o.durable = name
		return nil
	}
}

// MaxLag makes a stream that is more than n events behind the newest
// event skip to the newest, with a *LaggedError (reason LagMaxLag): for
// applications that want fresh events rather than every event. Not for
// durable subscriptions, which never skip.
func MaxLag(n uint64) SubscribeOption {
	return func(o *subOptions) error { o.maxLag = n; return nil }
}

// IncludeRaw also sends each event whole, as the server sent it, in
// Event.Raw.
func IncludeRaw() SubscribeOption {
	return func(o *subOptions) error { o.raw = true; return nil }
}

// AckEvery sets how acks are batched: one Ack call per n acknowledged
// events, or after interval when fewer are pending. Defaults
// DefaultAckEvery and DefaultAckInterval. Smaller values mean fewer
// events delivered again after the application restarts; larger ones
// fewer round trips.
func AckEvery(n int, interval time.Duration) SubscribeOption {
	return func(o *subOptions) error {
		if n <= 0 || interval <= 0 {
			return fmt.Errorf("AckEvery(%d, %v): both must be positive", n, interval)
		}
		o.ackEvery, o.ackInterval = n, interval
		return nil
	}
}

// AutoAck acknowledges each event when Next is called again, or the
// stream is closed: an event counts as handled once the application asks
// for the next one. For durable subscriptions only.
func AutoAck() SubscribeOption {
	return func(o *subOptions) error { o.autoAck = true; return nil }
}

// Backoff sets the waits between reconnect attempts: min, doubling up to
// max. Defaults DefaultBackoffMin and DefaultBackoffMax.
func Backoff(min, max time.Duration) SubscribeOption {
	return func(o *subOptions) error {
		if min <= 0 || max < min {
			return fmt.Errorf("Backoff(%v, %v): want 0 < min <= max", min, max)
		}
		o.backoffMin, o.backoffMax = min, max
		return nil
	}
}

// GiveUpAfter makes Next stop reconnecting after d of failed attempts
// and return false with ErrUnavailable. Default: keep trying until Next's
// context ends.
func GiveUpAfter(d time.Duration) SubscribeOption {
	return func(o *subOptions) error { o.giveUp = d; return nil }
}

// OnReconnect calls fn before each reconnect attempt with the error that
// broke the stream (or the last attempt), the attempt number and the wait
// before it, for logging. fn runs in the goroutine calling Next.
func OnReconnect(fn func(err error, attempt int, wait time.Duration)) SubscribeOption {
	return func(o *subOptions) error { o.onReconnect = fn; return nil }
}

// Started describes where a stream started.
type Started struct {
	// Start is the first sequence the stream reads.
	Start uint64
	// Oldest and Last are the oldest retained and the last captured
	// sequence when the stream started (0 when the outbox was empty).
	Oldest, Last uint64
	// Resumed says a durable subscription continued from its cursor.
	Resumed bool
}

// Stream is a subscription's events. Read it from one goroutine: Next,
// then Event; Ack after handling an event (durable subscriptions); Close
// when done. To stop a Next that waits, cancel its context.
type Stream struct {
	c      *Client
	filter Filter
	o      subOptions
	base   context.Context // the stream's lifetime, ended by Close
	stop   context.CancelFunc

	rpc       grpc.ServerStreamingClient[pb.SubscribeResponse]
	rpcCtx    context.Context
	rpcCancel context.CancelFunc
	gen       uint64 // counts opened rpcs

	// A Next context's end cancels the rpc; the registration is kept
	// while Next is called with the same context on the same rpc.
	watchCtx  context.Context
	watchGen  uint64
	watchStop func() bool

	opened  bool
	started Started
	pos     uint64 // every sequence up to pos was looked at
	last    uint64 // the last event handed to the application
	cur     *Event
	err     error
	fatal   error

	retryErr     error // why the stream must reconnect with a wait
	attempt      int
	failingSince time.Time

	acks   *acker
	closed bool
}

// Subscribe opens a stream of the events passing f. It returns once godwit
// has started the stream: a bad filter, a refused token or an unreachable
// daemon are reported here. ctx bounds this first connection (and the
// call timeout); the stream lives until Close.
func (c *Client) Subscribe(ctx context.Context, f Filter, opts ...SubscribeOption) (*Stream, error) {
	o := subOptions{ackEvery: DefaultAckEvery, ackInterval: DefaultAckInterval,
		backoffMin: DefaultBackoffMin, backoffMax: DefaultBackoffMax}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.durable != "" && o.maxLag > 0 {
		return nil, errors.New("MaxLag with Durable: a durable subscription never skips events; drop one of them")
	}
	if o.autoAck && o.durable == "" {
		return nil, errors.New("AutoAck without Durable: only a durable subscription has a cursor to acknowledge")
	}
	s := &Stream{c: c, filter: f, o: o}
	s.base, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	if err := s.open(ctx); err != nil {
		s.stop()
		return nil, c.convert("subscribe", err)
	}
	if o.durable != "" {
		s.acks = newAcker(c, o)
	}
	return s, nil
}

func (s *Stream) request() *pb.SubscribeRequest {
	r := &pb.SubscribeRequest{Sources: s.filter.Sources, Namespaces: s.filter.Namespaces,
		OperationTypes: s.filter.Operations, IgnoreNamespaces: s.filter.IgnoreNamespaces,
		DurableName: s.o.durable, Encoding: pb.Encoding_ENCODING_BSON, MaxLag: s.o.maxLag, IncludeRaw: s.o.raw}
	switch {
	case s.opened:
		// Go on after what this stream has looked at. A durable
		// subscription resumes at its cursor instead (godwit ignores the
		// start of one that exists), or, deleted while the connection
		// was down, is created again here rather than at the original
		// start.
		r.Start = &pb.SubscribeRequest_FromSequence{FromSequence: s.pos + 1}
	case s.o.start == startSequence:
		r.Start = &pb.SubscribeRequest_FromSequence{FromSequence: s.o.fromSeq}
	case s.o.start == startTime:
		r.Start = &pb.SubscribeRequest_FromTime{FromTime: timestamppb.New(s.o.fromTime)}
	default:
		r.Start = &pb.SubscribeRequest_Live{Live: true}
	}
	return r
}

// open makes one attempt to start the rpc and read its Started message,
// within ctx and the call timeout.
func (s *Stream) open(ctx context.Context) error {
	rctx, cancel := context.WithCancel(s.base)
	wait, cancelWait := context.WithTimeout(ctx, s.c.opts.callTimeout)
	defer cancelWait()
	stopWatch := context.AfterFunc(wait, cancel)
	stream, err := s.c.rpc.Subscribe(rctx, s.request())
	var m *pb.SubscribeResponse
	if err == nil {
		m, err = stream.Recv()
	}
	if !stopWatch() || err != nil {
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case wait.Err() != nil:
			return status.Errorf(codes.Unavailable, "godwit did not start the stream within %v", s.c.opts.callTimeout)
		}
		return err
	}
	st := m.GetStarted()
	if st == nil {
		cancel()
		return fmt.Errorf("godwit's first message is %T, want Started (is the daemon older than this client?)", m.GetMessage())
	}
	s.started = Started{Start: st.StartSequence, Oldest: st.OldestSequence, Last: st.LastSequence, Resumed: st.Resumed}
	if !s.opened {
		s.pos = max(st.StartSequence, 1) - 1
	}
	s.opened = true
	s.rpc, s.rpcCtx, s.rpcCancel = stream, rctx, cancel
	s.gen++
	return nil
}

// drop ends the current rpc.
func (s *Stream) drop() {
	if s.rpc != nil {
		s.rpcCancel()
		s.rpc, s.rpcCtx, s.rpcCancel = nil, nil, nil
	}
}

// Started returns how the stream (or its latest reconnect) started.
func (s *Stream) Started() Started { return s.started }

// Next waits for the next event and returns true when there is one
// (Event returns it). It returns false when ctx ends, the stream
// failed, or it skipped events; Err says which. After a *LaggedError,
// and after ctx ended, Next may be called again and goes on where the
// stream was. Connection losses are not errors: Next reconnects with
// backoff and goes on without a gap.
func (s *Stream) Next(ctx context.Context) bool {
	s.cur, s.err = nil, nil
	if s.closed {
		s.err = ErrClosed
		return false
	}
	if s.o.autoAck && s.last > 0 {
		s.acks.ack(s.last)
	}
	for {
		if s.fatal == nil && s.acks != nil {
			s.fatal = s.acks.failed()
		}
		if s.fatal != nil {
			s.err = s.fatal
			return false
		}
		if s.rpc == nil && !s.reconnect(ctx) {
			return false
		}
		m, err := s.recv(ctx)
		if err != nil {
			ended := s.rpcCtx.Err() != nil // cancelled here: by a Next context that ended
			s.drop()
			switch {
			case ctx.Err() != nil:
				s.err = ctx.Err()
				return false
			case ended:
			case transient(err):
				s.retryErr = err
			default:
				s.fatal = s.c.convert("subscription", err)
			}
			continue
		}
		switch x := m.GetMessage().(type) {
		case *pb.SubscribeResponse_Event:
			e := x.Event
			if e.Sequence <= s.pos {
				continue // sent again after a durable subscription resumed
			}
			s.pos, s.last = e.Sequence, e.Sequence
			s.cur = fromProto(e)
			return true
		case *pb.SubscribeResponse_Checkpoint:
			if seq := x.Checkpoint.Sequence; seq > s.pos {
				s.pos = seq
				if s.acks != nil {
					s.acks.checkpoint(seq, s.last)
				}
			}
		case *pb.SubscribeResponse_Lagged:
			l := x.Lagged
			if l.LastMissed <= s.pos {
				continue
			}
			reason := LagRetention
			if l.Reason == pb.Lagged_REASON_MAX_LAG {
				reason = LagMaxLag
			}
			s.err = &LaggedError{Reason: reason, FirstMissed: max(l.FirstMissed, s.pos+1), LastMissed: l.LastMissed}
			s.pos = l.LastMissed
			return false
		}
	}
}

// recv reads the next message, ending the rpc when ctx ends.
func (s *Stream) recv(ctx context.Context) (*pb.SubscribeResponse, error) {
	if ctx.Done() != nil && (ctx != s.watchCtx || s.gen != s.watchGen) {
		if s.watchStop != nil {
			s.watchStop()
		}
		s.watchCtx, s.watchGen, s.watchStop = ctx, s.gen, context.AfterFunc(ctx, s.rpcCancel)
	}
	return s.rpc.Recv()
}

// reconnect opens a new rpc, waiting with backoff between attempts that
// fail transiently.
func (s *Stream) reconnect(ctx context.Context) bool {
	for {
		if s.retryErr != nil {
			if s.failingSince.IsZero() {
				s.failingSince = time.Now()
			}
			if s.o.giveUp > 0 && time.Since(s.failingSince) >= s.o.giveUp {
				s.fatal = fmt.Errorf("%w: gave up reconnecting to %s after %v: %v", ErrUnavailable, s.c.addr,
					s.o.giveUp, status.Convert(s.retryErr).Message())
				s.err = s.fatal
				return false
			}
			s.attempt++
			wait := delay(s.o.backoffMin, s.o.backoffMax, s.attempt)
			if s.o.onReconnect != nil {
				s.o.onReconnect(s.c.convert("stream", s.retryErr), s.attempt, wait)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				s.err = ctx.Err()
				return false
			case <-t.C:
			}
		}
		if s.acks != nil {
			// The resumed cursor is as recent as possible: fewer events
			// are sent again (and skipped here).
			_ = s.acks.flush(ctx)
		}
		err := s.open(ctx)
		switch {
		case err == nil:
			s.retryErr, s.attempt, s.failingSince = nil, 0, time.Time{}
			return true
		case ctx.Err() != nil:
			s.err = ctx.Err()
			return false
		case transient(err):
			s.retryErr = err
		default:
			s.fatal = s.c.convert("resubscribe", err)
			s.err = s.fatal
			return false
		}
	}
}

func delay(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return time.Duration(minInt64(int64(d), int64(max)))
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// Event returns the event Next found; nil after Next returned false. It
// stays valid after the next call to Next.
func (s *Stream) Event() *Event { return s.cur }

// Err returns why Next returned false; nil after it returned true.
func (s *Stream) Err() error { return s.err }

// Ack acknowledges every event up to the last one Next returned: a new
// stream of this durable subscription starts after it. Ack does not wait:
// acks are sent in batches (AckEvery) by a goroutine of the stream; Flush
// or Close sends what is pending. It returns ErrNotDurable on a stream
// that is not durable, and the error of a batched ack that godwit refused
// (the subscription was deleted: ErrNotFound).
func (s *Stream) Ack() error { return s.AckSequence(s.last) }

// AckSequence acknowledges every event up to sequence seq, for
// applications that finish events later than Next returns them (in
// order). Unlike the rest of Stream, it may be called from any goroutine.
func (s *Stream) AckSequence(seq uint64) error {
	if s.acks == nil {
		return ErrNotDurable
	}
	if seq > 0 {
		s.acks.ack(seq)
	}
	return s.acks.failed()
}

// Flush sends pending acks now and waits for godwit to store them.
func (s *Stream) Flush(ctx context.Context) error {
	if s.acks == nil {
		return ErrNotDurable
	}
	return s.acks.flush(ctx)
}

// Close ends the stream. For a durable subscription it first sends the
// pending acks (within the call timeout) and returns their error.
func (s *Stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.acks != nil {
		if s.o.autoAck && s.last > 0 {
			s.acks.ack(s.last)
		}
		err = s.acks.close()
	}
	if s.watchStop != nil {
		s.watchStop()
	}
	s.drop()
	s.stop()
	return err
}
