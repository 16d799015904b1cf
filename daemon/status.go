package daemon

import (
	"time"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// Status is a snapshot of the whole daemon, as `godwit status` shows it.
type Status struct {
	Sources []SourceStatus `json:"sources"`
	Sinks   []SinkStatus   `json:"sinks"`
	// Pipelines are the replicate sinks' own progress: phase (copying x of
	// y documents, streaming, halted), applied events, lag, last error.
	Pipelines []replicate.Status `json:"pipelines,omitempty"`
	Outbox    outbox.Stats       `json:"outbox"`
}

// SourceStatus is a source's live state plus its stored checkpoint.
type SourceStatus struct {
	capture.Status
	// TokenTime is the cluster time of the stored resume token.
	TokenTime time.Time `json:"token_time,omitempty"`
	// LagSeconds is how far the stored token is behind the wall clock. On
	// a real server an idle stream's post-batch tokens keep it near zero;
	// on the embedded engine it grows while the source is idle.
	LagSeconds float64 `json:"lag_seconds"`
}

// SinkStatus is a sink's runner state plus its backlog.
type SinkStatus struct {
	sink.Status
	// Backlog is how many events were appended after the sink's cursor.
	Backlog uint64 `json:"backlog"`
	// Connection is the state of a broker sink's connection (kafka, nats).
	Connection string `json:"connection,omitempty"`
}

// Status returns a snapshot: the one place the daemon's status is
// assembled (godwit status, /metrics, /readyz and the health service read
// it).
func (d *Daemon) Status() Status {
	st := Status{Outbox: d.ob.Stats()}
	stored, _ := d.ob.Sources()
	for _, s := range d.sources {
		ss := SourceStatus{Status: s.capture.Status()}
		if cp, ok := stored[ss.ID]; ok {
			ss.Captured = cp.Captured
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
		ss := SinkStatus{Status: rs, Backlog: backlog}
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
