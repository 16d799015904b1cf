package client

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// acker batches a durable stream's acks: the application's Ack only moves
// target; a goroutine sends one Ack call per `every` acknowledged events or
// per interval, never two at once, so a fast consumer pays no round trip
// per event and a slow one sees its acks stored within the interval.
type acker struct {
	c        *Client
	name     string
	every    int
	interval time.Duration

	mu      sync.Mutex
	target  uint64 // acknowledged by the application (and checkpoints after it)
	sent    uint64 // stored by godwit
	pending int    // acks since the last send
	// cp is the latest checkpoint not yet acknowledgeable: it may be
	// acked once everything up to cpAfter (the last event before it) is.
	cp, cpAfter uint64
	err         error // godwit refused an ack for good

	sendMu sync.Mutex // one Ack call at a time
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

func newAcker(c *Client, o subOptions) *acker {
	a := &acker{c: c, name: o.durable, every: o.ackEvery, interval: o.ackInterval,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *acker) ack(seq uint64) {
	a.mu.Lock()
	if seq > a.target {
		a.target = seq
		a.pending++
		if a.cp > a.target && a.cpAfter <= a.target {
			a.target = a.cp
		}
	}
	full := a.pending >= a.every
	a.mu.Unlock()
	if full {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// checkpoint records that godwit looked at every event up to seq and sent
// those that match; last is the last event sent before it.
func (a *acker) checkpoint(seq, last uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if last <= a.target {
		a.target = max(a.target, seq)
	} else {
		a.cp, a.cpAfter = seq, last
	}
}

func (a *acker) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *acker) run() {
	defer close(a.done)
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-a.wake:
		case <-t.C:
		}
		_ = a.flush(context.Background())
	}
}

// flush sends the target when godwit has not stored it yet.
func (a *acker) flush(ctx context.Context) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.mu.Lock()
	target, sent, err := a.target, a.sent, a.err
	if target > sent {
		a.pending = 0
	}
	a.mu.Unlock()
	if err != nil || target <= sent {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.c.opts.callTimeout)
	defer cancel()
	// Wait for the connection within the call's timeout: right after
	// godwit restarts, gRPC's channel may still be backing off from the
	// refused reconnects, and failing fast would lose the ack to a race.
	_, err = a.c.rpc.Ack(ctx, &pb.AckRequest{DurableName: a.name, Sequence: target}, grpc.WaitForReady(true))
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		// Unavailable, deadlines: the next flush tries again. What godwit
		// refused (the subscription was deleted, the token revoked) stays
		// refused: Next and Ack report it.
		permanent := status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded &&
			status.Code(err) != codes.Canceled && status.Code(err) != codes.ResourceExhausted && ctx.Err() == nil
		err = a.c.convert("ack "+a.name, err)
		if permanent {
			a.err = err
		}
		return err
	}
	a.sent = max(a.sent, target)
	return nil
}

// close stops the goroutine and sends what is pending.
func (a *acker) close() error {
	close(a.stop)
	<-a.done
	return a.flush(context.Background())
}
