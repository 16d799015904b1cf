// Package status holds the state of a running godwit that the control
// plane reads: `godwit status` and the trigger metrics (package admin, from
// a [Report]), /metrics (package metrics), /readyz (package httpapi) and
// the gRPC health service (from a [Snapshot]).
//
// It holds types only, no wiring. The runtime assembles both, each in one
// place (runtime.Godwit.Status and Report); readers take a function that
// returns one, so they do not depend on the package that runs godwit
// (which imports them to serve them).
package status

import (
	"time"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/events"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
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
	// URI is the source's URI, redacted (logging.RedactURI).
	URI string `json:"uri"`
	// LastClusterTime is the cluster time of the last captured event.
	LastClusterTime time.Time `json:"last_cluster_time,omitempty"`
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
	// Type is the sink's type (jsonl, replicate, audit, kafka, ...).
	Type string `json:"type"`
	// Backlog is how many events were appended after the sink's cursor.
	Backlog uint64 `json:"backlog"`
	// Connection is the state of a broker sink's connection (kafka, nats).
	Connection string `json:"connection,omitempty"`
}

// Report is the Snapshot with what `godwit status` and the per-trigger
// metrics show besides it: the outbox file, the triggers and the event
// subscriptions. Unlike a Snapshot (the health service reads one every
// second), a Report reads the metadata store.
type Report struct {
	Snapshot
	// OutboxPath is the outbox file; OutboxPaused is true while appends
	// wait for space.
	OutboxPath   string
	OutboxPaused bool
	// Triggers are every user's triggers; TriggersErr is why they could
	// not be listed (the list may then be partial).
	Triggers    []Trigger
	TriggersErr error
	// FunctionsMemory is the trigger functions' memory use and budget.
	FunctionsMemory wasm.MemoryStats
	// Subscriptions are the connected streams and the durable
	// subscriptions; SubscriptionsErr is why they could not be listed.
	Subscriptions    []events.Status
	SubscriptionsErr error
}

// Trigger is a trigger and its live state.
type Trigger struct {
	ID, Name, UserID string
	Type             trigger.Type
	trigger.Status
}
