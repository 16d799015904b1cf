package trigger

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// Two locks keep the running triggers in step with the metadata store:
//
//   - m.ops serialises mutations, reconciles, Run's start and stop, and
//     Close. It is held across metadata reads and writes, compiles and the
//     wait for a stopping trigger's guest call. Only those take it.
//   - m.mu guards m.active and m.closed and is held over reading or
//     writing them only. Status, WaitAcked, ReportAuthEvent,
//     RetryDeadLetters and the metrics take it, so they never wait behind a
//     compile, a metadata read or a guest call.
//
// A reconcile stops a trigger by removing it from m.active first (from
// then on it is not running for Status and the API) and then waiting for
// its goroutines; it starts one by preparing everything outside m.mu and
// publishing it in m.active last. The lock order is ops, mu, modMu.

// active is a started trigger. Its fields do not change once it is in
// m.active.
type active struct {
	t      Trigger
	fn     Function
	mod    *loadedModule
	host   *triggerHost
	cancel context.CancelFunc
	// stopped ends when the trigger's goroutines have returned.
	stopped     context.Context
	markStopped context.CancelFunc
	runner      *sink.Runner
	sink        *triggerSink
}

// lockOps takes m.ops for a mutation; ErrClosed after Close.
func (m *Manager) lockOps() error {
	m.ops.Lock()
	if m.isClosed() {
		m.ops.Unlock()
		return ErrClosed
	}
	return nil
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// running returns trigger id when it is running, else nil.
func (m *Manager) running(id string) *active {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active[id]
}

// reconcile makes the running state of trigger id match t (nil: the
// trigger is gone). restart forces a running trigger to restart (its
// configuration or function changed). The caller holds m.ops.
func (m *Manager) reconcile(ctx context.Context, t *Trigger, id string, restart bool) {
	a := m.running(id)
	want := t != nil && t.Enabled && t.Halted == "" && m.runCtx != nil
	var fn Function
	if want {
		var err error
		fn, err = m.store.getFunction(ctx, t.FunctionID, false)
		if err != nil {
			m.setStartErr(id, err.Error())
			want = false
		} else if !fn.Enabled {
			want = false
		}
	}
	if a != nil && (!want || restart || a.fn.SHA256 != fn.SHA256) {
		m.stop(id)
		a = nil
	}
	if !want {
		m.unregister(id)
		return
	}
	if a != nil {
		// Same configuration and module: keep running. Without restart
		// only what a trigger does not run on (its timestamps) changed.
		return
	}
	if err := m.start(ctx, *t, fn); err != nil {
		m.setStartErr(id, err.Error())
		m.log.Error().Err(err).Str("trigger", t.Name).Str("trigger_id", id).Msg("trigger did not start")
		return
	}
	m.setStartErr(id, "")
}

// unregister stops a trigger's cursor from holding retention (of the
// outbox or the queue: a trigger has a cursor in one of them); the cursor
// stays, so enabling the trigger resumes from it.
func (m *Manager) unregister(id string) {
	for _, ob := range []*outbox.Outbox{m.deps.Outbox, m.queue} {
		if err := ob.UnregisterSink(sinkID(id)); err != nil {
			m.log.Warn().Err(err).Str("trigger_id", id).Msg("unregister trigger cursor")
		}
	}
}

// start starts trigger t calling fn and publishes it in m.active. The
// caller holds m.ops.
func (m *Manager) start(ctx context.Context, t Trigger, fn Function) error {
	if m.allowOf(t.UserID).None() {
		m.audit(ctx, AuditOwnerRevoked, t, fmt.Sprintf("not started: its owner %s has no token (revoked) and so no rights; "+
			"an admin gives %s a token again (api.tokens) or moves the trigger to another owner (update with user_id)", t.UserID, t.UserID))
		return fmt.Errorf("%w: its owner %s has no token (revoked); an admin gives %s a token again or moves the trigger to another owner",
			ErrNotAllowed, t.UserID, t.UserID)
	}
	lm, err := m.acquire(ctx, fn)
	if err != nil {
		return err
	}
	host, err := m.newHost(t, fn)
	if err != nil {
		m.release(lm)
		return err
	}
	actx, cancel := context.WithCancel(m.runCtx)
	a := &active{t: t, fn: fn, mod: lm, host: host, cancel: cancel}
	a.stopped, a.markStopped = context.WithCancel(context.Background())
	log := m.log.With().Str("trigger", t.Name).Str("trigger_id", t.ID).Logger()
	ts, err := m.newTriggerSink(ctx, a)
	if err != nil || ts == nil { // nil: halted, behind retention
		cancel()
		m.release(lm)
		return err
	}
	a.sink = ts
	a.runner = sink.NewRunner(sinkID(t.ID), m.outboxOf(t.Type), ts, m.cfg.Delivery, log)
	// The runner, and for a scheduled trigger the schedule queuing runs
	// for it; the last to return marks the trigger stopped, which stop
	// waits for.
	var left atomic.Int32
	left.Store(1)
	if t.Type == TypeScheduled {
		left.Store(2)
	}
	done := func() {
		if left.Add(-1) == 0 {
			a.markStopped()
		}
	}
	go func() {
		defer done()
		if err := a.runner.Run(actx); err != nil {
			m.recordErr(t.ID, err.Error())
			log.Error().Err(err).Msg("trigger stopped")
		}
	}()
	if t.Type == TypeScheduled {
		go func() {
			defer done()
			m.runScheduled(actx, a, log)
		}()
	}
	m.mu.Lock()
	m.active[t.ID] = a
	m.mu.Unlock()
	log.Info().Str("type", string(t.Type)).Str("function", fn.Name).Msg("trigger started")
	return nil
}

// stop stops trigger id when it runs: it leaves m.active at once, then
// stop waits (without m.mu) for its goroutines, a guest call in flight
// included, and releases its module. The caller holds m.ops.
func (m *Manager) stop(id string) {
	m.mu.Lock()
	a := m.active[id]
	delete(m.active, id)
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.cancel()
	<-a.stopped.Done()
	m.release(a.mod)
}

// stopAll stops every running trigger, all at once. The caller holds
// m.ops.
func (m *Manager) stopAll() {
	m.mu.Lock()
	all := make([]*active, 0, len(m.active))
	for _, a := range m.active {
		all = append(all, a)
	}
	clear(m.active)
	m.mu.Unlock()
	for _, a := range all {
		a.cancel()
	}
	for _, a := range all {
		<-a.stopped.Done()
		m.release(a.mod)
	}
}
