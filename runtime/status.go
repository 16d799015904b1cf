package runtime

import (
	"context"
	"time"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/status"
	"github.com/godwit-dev/godwit/trigger"
)

// Status returns a snapshot of the data path: the one place it is
// assembled (Report, /metrics, /readyz and the health service read it).
func (d *Godwit) Status() status.Snapshot {
	st := status.Snapshot{Outbox: d.ob.Stats()}
	stored, _ := d.ob.Sources()
	for _, s := range d.sources {
		ss := status.Source{Status: s.capture.Status(), URI: s.uri}
		if cp, ok := stored[ss.ID]; ok {
			ss.Captured = cp.Captured
			if cp.LastClusterTime != 0 {
				ss.LastClusterTime = time.Unix(int64(cp.LastClusterTime), 0).UTC()
			}
			if ts, ok := change.TokenTime(cp.Token); ok {
				ss.TokenTime = time.Unix(int64(ts.T), 0).UTC()
				ss.LagSeconds = max(time.Since(ss.TokenTime).Seconds(), 0)
			}
			if cp.State == outbox.StateHalted {
				ss.State, ss.Reason = capture.StateHalted, cp.Reason
			}
		}
		st.Sources = append(st.Sources, ss)
	}
	for _, sp := range d.sinks {
		rs := sp.runner.Status()
		if h, ok := sp.sink.(sink.Halter); ok && !rs.Halted {
			// A sink that refused at open halts its runner only at the
			// next delivery: report it now.
			if err := h.Halted(); err != nil {
				rs.Halted, rs.LastError = true, err.Error()
			}
		}
		var backlog uint64
		if st.Outbox.Last > rs.Acked {
			backlog = st.Outbox.Last - rs.Acked
		}
		ss := status.Sink{Status: rs, Type: sp.cfg.Type, Backlog: backlog}
		if c, ok := sp.sink.(sink.Connection); ok {
			ss.Connection = c.ConnectionState()
		}
		if sp.sync != nil {
			ps := sp.sync.sink.Status()
			if msg := sp.sync.failure(); msg != "" {
				ps.Phase, ps.LastError = replicate.PhaseHalted, msg
			}
			st.Pipelines = append(st.Pipelines, ps)
			// One story: the sink of a halted pipeline is halted too (its
			// runner may never have started, or waits on a halted sink).
			if ps.Phase == replicate.PhaseHalted {
				ss.Halted = true
				if ss.LastError == "" {
					ss.LastError = ps.LastError
				}
			}
		}
		st.Sinks = append(st.Sinks, ss)
	}
	return st
}

// Report returns the snapshot with the outbox file, every user's triggers
// and the event subscriptions: what `godwit status` and the trigger and
// subscription metrics show, assembled in one place. It reads the metadata
// store (bounded by ctx).
func (d *Godwit) Report(ctx context.Context) status.Report {
	r := status.Report{Snapshot: d.Status(), OutboxPath: d.ob.Path(), OutboxPaused: d.ob.Paused() > 0}
	if m := d.Triggers; m != nil {
		ts, err := m.QueryTriggers(ctx, trigger.TriggerQuery{})
		r.TriggersErr = err
		for _, t := range ts {
			r.Triggers = append(r.Triggers, status.Trigger{ID: t.ID, Name: t.Name, UserID: t.UserID, Type: t.Type, Status: m.Status(t)})
		}
		r.FunctionsMemory = m.MemoryStats()
	}
	if e := d.Events; e != nil {
		r.Subscriptions, r.SubscriptionsErr = e.Subscriptions()
	}
	return r
}
