package trigger

import (
	"context"
	"errors"
	"fmt"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/outbox"
)

// RetryDeadLetters calls running trigger id's function once more on its
// dead letters with the given sequences (every one when seqs is empty),
// oldest first. Those that succeed are removed from the dead letters;
// those that fail again stay with the new error, which failed reports.
// Unknown sequences are reported as failed too.
func (m *Manager) RetryDeadLetters(ctx context.Context, id string, seqs []uint64) (succeeded []uint64, failed map[uint64]string, err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, ErrClosed
	}
	a := m.active[id]
	if a != nil {
		// Counted under m.mu: a stop takes the trigger out of m.active
		// before it releases the module, so the module stays open for
		// these calls even if the trigger stops meanwhile.
		m.modMu.Lock()
		a.mod.refs++
		m.modMu.Unlock()
	}
	m.mu.Unlock()
	if a == nil {
		return nil, nil, fmt.Errorf("%w: trigger %s is not running: enable it (and its function) first", ErrNotRunning, id)
	}
	defer m.release(a.mod)
	ob, sid := m.outboxOf(a.t.Type), sinkID(id)
	all, err := ob.DeadLetters(sid)
	if err != nil {
		return nil, nil, err
	}
	failed = map[uint64]string{}
	want := map[uint64]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	for _, dl := range all {
		seq := dl.Record.Seq
		if len(want) > 0 && !want[seq] {
			continue
		}
		delete(want, seq)
		ev, ok, err := a.sink.filter.apply(dl.Record)
		if err == nil && !ok {
			err = errors.New("the trigger no longer fires for this event (its configuration changed since)")
		}
		if err == nil {
			err = a.sink.invoke(ctx, ev)
		}
		if ctx.Err() != nil {
			return succeeded, failed, ctx.Err()
		}
		msg := ""
		if err != nil {
			msg = logging.RedactText(err.Error())
			failed[seq] = msg
		}
		if _, err := ob.RetriedDeadLetter(sid, seq, msg); err != nil {
			return succeeded, failed, err
		}
		if msg == "" {
			succeeded = append(succeeded, seq)
		}
	}
	for seq := range want {
		failed[seq] = "no such dead letter"
	}
	return succeeded, failed, nil
}

// DeadLetters returns the events (database triggers), authentication
// events or scheduled runs a trigger gave up on, oldest first.
func (m *Manager) DeadLetters(ctx context.Context, id string) ([]outbox.DeadLetter, error) {
	t, err := m.store.getTrigger(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.outboxOf(t.Type).DeadLetters(sinkID(id))
}
