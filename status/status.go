// Package status holds the snapshot of a running godwit that the control
// plane reads: `godwit status` (package admin), /metrics (package metrics),
// /readyz (package httpapi) and the gRPC health service.
//
// It is a leaf: types only, no wiring. The runtime assembles a [Snapshot]
// (runtime.Godwit.Status); readers take a func() Snapshot, so they do not
// depend on the package that runs godwit (which imports them to serve
// them).
package status

import (
	"time"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
)

// Snapshot is the state of the whole data path, as `godwit status` shows it.
type Snapshot struct {
	Sources []Source `json:"sources"`
	Sinks   []Sink   `json:"sinks"`
	// Pipelines are the replicate sinks' own progress: phase (copying x of
	// y documents, streaming, halted), applied events, lag, last error.
	Pipelines []replicate.Status `json:"pipelines,omitempty"`
	Outbox    outbox.Stats       `json:"outbox"`
}

// Source is a source's live state plus its stored checkpoint.
type Source struct {
	capture.Status
	// TokenTime is the cluster time of the stored resume token.
	TokenTime time.Time `json:"token_time,omitempty"`
	// LagSeconds is how far the stored token is behind the wall clock. On
	// a real server an idle stream's post-batch tokens keep it near zero;
	// on the embedded engine it grows while the source is idle.
	LagSeconds float64 `json:"lag_seconds"`
}

// Sink is a sink's runner state plus its backlog.
type Sink struct {
	sink.Status
	// Backlog is how many events were appended after the sink's cursor.
	Backlog uint64 `json:"backlog"`
	// Connection is the state of a broker sink's connection (kafka, nats).
	Connection string `json:"connection,omitempty"`
}
