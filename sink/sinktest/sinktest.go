// Package sinktest is the conformance suite every sink must pass: ordered
// delivery through a real Runner and outbox, harmless replay of delivered but
// unacknowledged events, and continuation after a restart of the sink.
//
// An implementation that reads the outbox itself with a cursor of its own
// (a durable event subscription) has the pull feature: it sets
// Harness.Pull instead of Open and Check, and the same three cases drive it
// as its consumer would (see Puller), as watermill's suite adapts its cases
// to each implementation's features.
package sinktest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// Harness adapts a sink implementation to the suite.
type Harness struct {
	// Open opens the sink under test with its durable state in dir. It is
	// called again with the same dir to simulate a restart.
	Open func(t *testing.T, dir string) sink.Sink
	// Check asserts that the sink's durable state in dir reflects exactly
	// the events of want (in order where the sink keeps order), each once.
	Check func(t *testing.T, dir string, want []outbox.Record)
	// Events returns n raw change events for the sink to deliver. Default:
	// inserts of distinct documents into "conf.items".
	Events func(n int) [][]byte
	// Pull, set instead of Open and Check, is the pull feature: it opens
	// the implementation over ob, with its durable cursor in ob. It is
	// called again on the same outbox, or on one reopened at the same
	// path, to simulate a reconnect or a restart.
	Pull func(t *testing.T, ob *outbox.Outbox) Puller
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Events == nil {
		h.Events = Inserts
	}
	if h.Pull != nil {
		t.Run("DeliversInOrder", func(t *testing.T) { pullDeliversInOrder(t, h) })
		t.Run("ReplayIsHarmless", func(t *testing.T) { pullReplaysWhatWasNotAcked(t, h) })
		t.Run("ContinuesAfterRestart", func(t *testing.T) { pullContinuesAfterRestart(t, h) })
		return
	}
	t.Run("DeliversInOrder", func(t *testing.T) { deliversInOrder(t, h) })
	t.Run("ReplayIsHarmless", func(t *testing.T) { replayIsHarmless(t, h) })
	t.Run("ContinuesAfterRestart", func(t *testing.T) { continuesAfterRestart(t, h) })
}

// Inserts returns n insert events with _id 1..n in namespace conf.items.
func Inserts(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		id := int64(i + 1)
		ts := primitive.Timestamp{T: 1700000000, I: uint32(i + 1)}
		raw, err := bson.Marshal(bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%016X", i+1)}}},
			{Key: "operationType", Value: "insert"},
			{Key: "clusterTime", Value: ts},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "conf"}, {Key: "coll", Value: "items"}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
			{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: id}, {Key: "n", Value: id * 10}}},
		})
		if err != nil {
			panic(err)
		}
		out[i] = raw
	}
	return out
}

func newOutbox(t *testing.T, dir string) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{KeepAcked: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// One the case closed itself was reopened and is checked then.
		if err := ob.Check(); err != nil && !errors.Is(err, outbox.ErrClosed) {
			t.Errorf("outbox check: %v", err)
		}
		ob.Close(context.Background())
	})
	return ob
}

func appendAll(t *testing.T, ob *outbox.Outbox, events [][]byte) []outbox.Record {
	t.Helper()
	first := ob.LastSeq() + 1
	if _, err := ob.Append(context.Background(), "conf", events, outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	recs, err := ob.Read(first-1, len(events), 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// drain runs a runner until the sink acked upTo.
func drain(t *testing.T, ob *outbox.Outbox, s sink.Sink, upTo uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	r := sink.NewRunner(outbox.SinkCursor("conf"), ob, s, sink.RunnerConfig{BatchSize: 7, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := r.WaitAcked(ctx, upTo); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if st := r.Status(); st.Parked != 0 {
		t.Fatalf("%d events were parked: %s", st.Parked, st.LastError)
	}
}

func closeSink(t *testing.T, s sink.Sink) {
	t.Helper()
	if c, ok := s.(sink.Closer); ok {
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func deliversInOrder(t *testing.T, h Harness) {
	dir := t.TempDir()
	ob := newOutbox(t, t.TempDir())
	recs := appendAll(t, ob, h.Events(50))
	s := h.Open(t, dir)
	drain(t, ob, s, recs[len(recs)-1].Seq)
	closeSink(t, s)
	h.Check(t, dir, recs)
}

func replayIsHarmless(t *testing.T, h Harness) {
	dir := t.TempDir()
	ob := newOutbox(t, t.TempDir())
	recs := appendAll(t, ob, h.Events(30))
	s := h.Open(t, dir)
	ctx := context.Background()
	// Deliver a prefix, then everything, then a middle slice again: what a
	// crash between delivery and ack produces.
	for _, batch := range [][]outbox.Record{recs[:10], recs, recs[5:20], recs[29:]} {
		if err := s.Deliver(ctx, batch); err != nil {
			t.Fatalf("deliver %d..%d: %v", batch[0].Seq, batch[len(batch)-1].Seq, err)
		}
	}
	closeSink(t, s)
	h.Check(t, dir, recs)
}

func continuesAfterRestart(t *testing.T, h Harness) {
	dir := t.TempDir()
	ob := newOutbox(t, t.TempDir())
	events := h.Events(40)
	recs := appendAll(t, ob, events[:25])
	s := h.Open(t, dir)
	drain(t, ob, s, recs[len(recs)-1].Seq)
	closeSink(t, s)

	recs = append(recs, appendAll(t, ob, events[25:])...)
	s = h.Open(t, dir)
	// The restarted sink first sees a replay of the last acked batch.
	if err := s.Deliver(context.Background(), recs[20:25]); err != nil {
		t.Fatal(err)
	}
	drain(t, ob, s, recs[len(recs)-1].Seq)
	closeSink(t, s)
	h.Check(t, dir, recs)
}
