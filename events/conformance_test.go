package events_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

// A durable subscription passes the sink conformance suite with the pull
// feature: ordering, replay of what the subscriber did not acknowledge,
// and continuation after a restart of the engine and the outbox.
func TestEngine_Conformance(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{Pull: openDurable})
}

// durable is one connection of durable subscription "conf" to a real
// engine over the suite's outbox: Receive reads its stream, Ack is
// Engine.Ack, Close ends the stream and closes the engine, as a subscriber
// that goes away and a daemon that stops do.
type durable struct {
	e      *events.Engine
	cancel context.CancelFunc
	msgs   chan events.Message // unbuffered: the stream waits for the reader
	done   chan error
}

func openDurable(t *testing.T, ob *outbox.Outbox) sinktest.Puller {
	e, err := events.Open(ob, events.Config{BatchSize: 7}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &durable{e: e, cancel: cancel, msgs: make(chan events.Message), done: make(chan error, 1)}
	// A new durable subscription starts at the first event; an existing one
	// after its cursor, whatever the request says.
	req := events.Request{Durable: "conf", Start: events.StartSequence, FromSequence: 1}
	go func() {
		d.done <- e.Subscribe(ctx, req, func(m events.Message) error {
			select {
			case d.msgs <- m:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func (d *durable) Receive(ctx context.Context) (outbox.Record, error) {
	for {
		select {
		case m := <-d.msgs:
			if m.Event != nil {
				return m.Event.Record, nil
			}
		case err := <-d.done:
			d.done <- err
			return outbox.Record{}, fmt.Errorf("stream ended: %w", err)
		case <-ctx.Done():
			return outbox.Record{}, ctx.Err()
		}
	}
}

func (d *durable) Ack(_ context.Context, seq uint64) error {
	_, err := d.e.Ack("conf", seq)
	return err
}

func (d *durable) Close(ctx context.Context) error {
	d.cancel()
	return d.e.Close(ctx)
}
