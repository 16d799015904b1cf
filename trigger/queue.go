package trigger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godwit-dev/godwit/outbox"
)

// Reported authentication events are appended to the trigger queue by one
// writer goroutine that commits whatever arrived meanwhile in one
// transaction (group commit): concurrent callers share an fsync instead of
// queueing behind one each.

// maxQueueBatch bounds the events of one queue transaction.
const maxQueueBatch = 512

type queueRequest struct {
	ctx  context.Context
	doc  []byte
	done chan queueResult // buffered: the writer never blocks on it
}

type queueResult struct {
	seq uint64
	err error
}

// enqueue appends an authentication event to the queue and returns its
// sequence once it is on disk. An error means it was not queued.
func (m *Manager) enqueue(ctx context.Context, doc []byte) (uint64, error) {
	req := &queueRequest{ctx: ctx, doc: doc, done: make(chan queueResult, 1)}
	select {
	case m.queueCh <- req:
	case <-m.quitCtx.Done():
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, queueFull(ctx.Err())
	}
	// Wait for the answer even when ctx ends: it says truthfully whether
	// the event was queued. The writer gives up at the earliest deadline
	// of its batch.
	select {
	case r := <-req.done:
		return r.seq, r.err
	case <-m.writerDone: // closed: the writer answered all it took
		select {
		case r := <-req.done:
			return r.seq, r.err
		default:
			return 0, ErrClosed
		}
	}
}

func queueFull(err error) error {
	return fmt.Errorf("%w (authentication or scheduled triggers are behind; report the event again later): %v", ErrQueueFull, err)
}

// writeQueue is the queue's writer; it runs from Open until Close.
func (m *Manager) writeQueue() {
	defer close(m.writerDone)
	for {
		var batch []*queueRequest
		select {
		case r := <-m.queueCh:
			batch = append(batch, r)
		case <-m.quitCtx.Done():
			for {
				select {
				case r := <-m.queueCh:
					r.done <- queueResult{err: ErrClosed}
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < maxQueueBatch {
			select {
			case r := <-m.queueCh:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		m.appendBatch(batch)
	}
}

// appendBatch appends the events of the batch's callers still waiting, in
// one transaction, and answers each.
func (m *Manager) appendBatch(batch []*queueRequest) {
	live := batch[:0]
	docs := make([][]byte, 0, len(batch))
	var deadline time.Time
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- queueResult{err: queueFull(err)}
			continue
		}
		if d, ok := r.ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
			deadline = d
		}
		live = append(live, r)
		docs = append(docs, r.doc)
	}
	if len(live) == 0 {
		return
	}
	// A full queue blocks the append until retention frees space; the
	// batch gives up at its earliest caller's deadline, or at Close.
	ctx, cancel := context.WithCancel(context.Background())
	if !deadline.IsZero() {
		ctx, cancel = context.WithDeadline(context.Background(), deadline)
	}
	stop := context.AfterFunc(m.quitCtx, cancel)
	last, err := m.queue.Append(ctx, queueAuth, docs, outbox.Checkpoint{})
	stop()
	cancel()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		err = queueFull(err)
	case errors.Is(err, context.Canceled):
		err = ErrClosed
	}
	for i, r := range live {
		if err != nil {
			r.done <- queueResult{err: err}
			continue
		}
		r.done <- queueResult{seq: last - uint64(len(live)-1-i)}
	}
}
