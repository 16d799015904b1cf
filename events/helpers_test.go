package events_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
)

// wait bounds every blocking step of a test; nothing sleeps.
var wait = testwait.Long

// env is an outbox with an engine over it.
type env struct {
	t    testing.TB
	path string
	ob   *outbox.Outbox
	e    *events.Engine
	cfg  events.Config
}

// newEnv opens a fresh outbox and engine. Checkpoints are sent as soon as
// they are due, so tests can wait for "scanned up to N" without clocks.
func newEnv(t testing.TB, opts outbox.Options) *env {
	t.Helper()
	v := &env{t: t, path: filepath.Join(t.TempDir(), "outbox.db"), cfg: events.Config{CheckpointInterval: time.Nanosecond}}
	v.open(opts)
	t.Cleanup(v.close)
	return v
}

func (v *env) open(opts outbox.Options) {
	v.t.Helper()
	ob, err := outbox.Open(v.path, opts)
	if err != nil {
		v.t.Fatal(err)
	}
	e, err := events.Open(ob, v.cfg, zerolog.Nop())
	if err != nil {
		v.t.Fatal(err)
	}
	v.ob, v.e = ob, e
}

// close closes the engine and the outbox, as a daemon does when it stops.
func (v *env) close() {
	if v.ob == nil {
		return
	}
	if err := v.e.Close(testwait.Context(v.t)); err != nil {
		v.t.Errorf("close event subscriptions: %v", err)
	}
	if err := v.ob.Close(context.Background()); err != nil {
		v.t.Errorf("close outbox: %v", err)
	}
	v.ob, v.e = nil, nil
}

// restart closes and reopens outbox and engine.
func (v *env) restart(opts outbox.Options) {
	v.t.Helper()
	v.close()
	v.open(opts)
}

// appendEvents appends raw change events of source in one batch and
// returns the last sequence.
func (v *env) appendEvents(source string, evs ...[]byte) uint64 {
	v.t.Helper()
	last, err := v.ob.Append(context.Background(), source, evs, outbox.Checkpoint{Token: []byte("t")})
	if err != nil {
		v.t.Fatal(err)
	}
	return last
}

// inserts appends n inserts into db.coll with _id from first.
func (v *env) inserts(source, ns string, first, n int) uint64 {
	v.t.Helper()
	evs := make([][]byte, n)
	for i := range evs {
		evs[i] = change("insert", ns, first+i)
	}
	return v.appendEvents(source, evs...)
}

// change returns a change event as a server sends it. extra fields are
// appended as key, value pairs.
func change(op, ns string, id int, extra ...any) []byte {
	db, coll := ns, ""
	for i := range ns {
		if ns[i] == '.' {
			db, coll = ns[:i], ns[i+1:]
			break
		}
	}
	nsDoc := bson.D{{Key: "db", Value: db}}
	if coll != "" {
		nsDoc = append(nsDoc, bson.E{Key: "coll", Value: coll})
	}
	d := bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: "82"}}},
		{Key: "operationType", Value: op},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: uint32(id)}},
		{Key: "ns", Value: nsDoc},
	}
	if coll != "" && (op == "insert" || op == "update" || op == "replace" || op == "delete") {
		d = append(d, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int64(id)}}})
	}
	if op == "insert" || op == "replace" {
		d = append(d, bson.E{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int64(id)}, {Key: "n", Value: int64(id)}}})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		d = append(d, bson.E{Key: extra[i].(string), Value: extra[i+1]})
	}
	b, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// stream is a subscription running in its own goroutine.
type stream struct {
	t      testing.TB
	msgs   chan events.Message
	done   chan error
	cancel context.CancelFunc
	gate   chan struct{} // non-nil: send blocks until it is closed
}

func subscribe(t testing.TB, e *events.Engine, req events.Request) *stream {
	return subscribeGated(t, e, req, nil)
}

// subscribeGated starts a subscriber whose every send waits for gate: a
// subscriber that stopped reading.
func subscribeGated(t testing.TB, e *events.Engine, req events.Request, gate chan struct{}) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{t: t, msgs: make(chan events.Message, 100000), done: make(chan error, 1), cancel: cancel, gate: gate}
	go func() {
		s.done <- e.Subscribe(ctx, req, func(m events.Message) error {
			if s.gate != nil && m.Started == nil {
				select {
				case <-s.gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			s.msgs <- m
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
		s.done <- nil
	})
	return s
}

func (s *stream) next() events.Message {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.done:
		s.done <- err
		s.t.Fatalf("stream ended: %v", err)
	case <-time.After(wait):
		s.t.Fatal("no message within the test's bound")
	}
	return events.Message{}
}

func (s *stream) started() events.Started {
	s.t.Helper()
	m := s.next()
	if m.Started == nil {
		s.t.Fatalf("first message is %+v, want Started", m)
	}
	return *m.Started
}

// until collects messages until one covers sequence last (an event or a
// checkpoint at or after it). It fails on Lagged unless lagged is non-nil,
// where it stores them.
func (s *stream) until(last uint64, lagged *[]events.Lagged) []events.Event {
	s.t.Helper()
	var out []events.Event
	for {
		m := s.next()
		switch {
		case m.Event != nil:
			out = append(out, *m.Event)
			if m.Event.Seq >= last {
				return out
			}
		case m.Checkpoint != 0:
			if m.Checkpoint >= last {
				return out
			}
		case m.Lagged != nil:
			if lagged == nil {
				s.t.Fatalf("unexpected lagged: %+v", *m.Lagged)
			}
			*lagged = append(*lagged, *m.Lagged)
			if m.Lagged.LastMissed >= last {
				return out
			}
		default:
			s.t.Fatalf("unexpected message %+v", m)
		}
	}
}

// end waits for the stream to end and returns its error.
func (s *stream) end() error {
	s.t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(wait):
		s.t.Fatal("stream did not end")
		return nil
	}
}

func seqs(evs []events.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func fieldOf(err error) string {
	var re *events.RequestError
	if errors.As(err, &re) {
		return re.Field
	}
	return ""
}
