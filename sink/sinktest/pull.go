package sinktest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/outbox"
)

// Puller is an implementation with the pull feature: it reads the outbox
// itself, with a durable cursor of its own, instead of being driven by a
// sink.Runner (a durable event subscription is one). Its consumer receives
// events and acknowledges them; after a restart it receives what follows
// its acknowledged cursor again, so a consumer that crashes between
// receiving and acknowledging sees those events replayed.
type Puller interface {
	// Receive returns the next event of this connection in outbox order,
	// waiting for it to be appended; the first connection to a cursor
	// starts at the oldest retained event, later ones after the
	// acknowledged cursor.
	Receive(ctx context.Context) (outbox.Record, error)
	// Ack acknowledges every event up to seq; acknowledging backwards is a
	// no-op.
	Ack(ctx context.Context, seq uint64) error
	// Close ends the connection without acknowledging anything more.
	Close(ctx context.Context) error
}

// pullWait bounds one case's waits: generous, for a loaded 2-core CI
// machine under -race (the suite waits for events, never for time).
const pullWait = 2 * time.Minute

// The pull cases check the properties of the push cases for an
// implementation that reads the outbox itself: every event in order,
// each once; events received but not acknowledged are delivered again,
// and an old acknowledgement does not move the cursor back; a restart of
// the implementation and of the outbox continues after the cursor.

func pullDeliversInOrder(t *testing.T, h Harness) {
	ob := newOutbox(t, t.TempDir())
	events := h.Events(50)
	recs := appendAll(t, ob, events[:20])
	p := h.Pull(t, ob)
	// Twenty stored before the connection, thirty appended while it waits.
	expectNext(t, p, recs)
	more := appendAll(t, ob, events[20:])
	expectNext(t, p, more)
	ack(t, p, more[len(more)-1].Seq)
	closePuller(t, p)
}

func pullReplaysWhatWasNotAcked(t *testing.T, h Harness) {
	ob := newOutbox(t, t.TempDir())
	events := h.Events(31)
	recs := appendAll(t, ob, events[:30])
	p := h.Pull(t, ob)
	expectNext(t, p, recs[:10])
	// The consumer made 1..5 durable and crashed before acknowledging
	// the rest.
	ack(t, p, recs[4].Seq)
	closePuller(t, p)

	p = h.Pull(t, ob)
	expectNext(t, p, recs[5:])
	ack(t, p, recs[29].Seq)
	ack(t, p, recs[2].Seq) // a late, older acknowledgement
	closePuller(t, p)

	p = h.Pull(t, ob)
	last := appendAll(t, ob, events[30:])
	expectNext(t, p, last)
	closePuller(t, p)
}

func pullContinuesAfterRestart(t *testing.T, h Harness) {
	dir := t.TempDir()
	ob := newOutbox(t, dir)
	events := h.Events(40)
	recs := appendAll(t, ob, events[:25])
	p := h.Pull(t, ob)
	expectNext(t, p, recs)
	ack(t, p, recs[24].Seq)
	closePuller(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), pullWait)
	defer cancel()
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}

	ob = newOutbox(t, dir)
	more := appendAll(t, ob, events[25:])
	p = h.Pull(t, ob)
	expectNext(t, p, more)
	closePuller(t, p)
}

// expectNext asserts that the next events p receives are want, in order;
// it fails at the first one that is not.
func expectNext(t *testing.T, p Puller, want []outbox.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pullWait)
	defer cancel()
	first, last := want[0].Seq, want[len(want)-1].Seq
	for _, w := range want {
		g, err := p.Receive(ctx)
		if err != nil {
			t.Fatalf("receive event %d (of %d..%d): %v", w.Seq, first, last, err)
		}
		if g.Seq != w.Seq || !bytes.Equal(g.Raw, w.Raw) || g.Source != w.Source {
			t.Fatalf("received event %d (source %q) where %d (source %q) was due (of %d..%d)", g.Seq, g.Source, w.Seq, w.Source, first, last)
		}
	}
}

func ack(t *testing.T, p Puller, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pullWait)
	defer cancel()
	if err := p.Ack(ctx, seq); err != nil {
		t.Fatalf("ack %d: %v", seq, err)
	}
}

func closePuller(t *testing.T, p Puller) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pullWait)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
