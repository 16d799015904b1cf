// Package replicate applies captured change events to a target MongoDB
// deployment: cluster-to-cluster sync, one-way or two-way.
//
// # Basics
//
// A [Sink] is one pipeline: the events of one capture source, applied to one
// target deployment (a real cluster or the embedded engine), restricted to
// the namespaces its include and ignore globs keep, renamed on the target by
// its mapping. It implements [sink.Sink], so a [sink.Runner] drains the
// outbox into it.
//
// Before the runner starts, [Sink.InitialSync] copies the included
// namespaces. Each collection is read at one point in time (a snapshot) that
// is stored; events at or before a collection's snapshot are skipped when the
// stream is applied, later ones are applied on top of an exact copy. Indexes,
// unique ones included, are built on the target before a collection is
// copied. Progress lives in the target's <metadata>.replicate_state
// collection, so a restarted sync copies only unfinished collections, and a
// finished one is never repeated.
//
// Every group of changes is written in one target transaction that begins
// with a marker document in <metadata>.origin_markers and ends by deleting
// it; the same transaction records, per worker, the position of the last
// applied event. A replayed event at or before that position is skipped, so
// replays (after a crash, or of the whole outbox) never apply anything twice.
// The markers let [EchoFilter], installed in the capture of the target
// deployment, drop the replicator's own writes: two pipelines A→B and B→A do
// not echo. User documents are never modified.
//
// Updates are applied as $set of the updated fields and $unset of the removed
// ones, never as the operation the user ran (a replayed $inc sets the same
// final value); paths that cannot be written safely (numeric or dotted keys)
// fall back to the event's post-image. Two-way pipelines resolve writes to
// the same document on both sides by last writer wins; docs/replicate.md
// states the rule and why it converges.
//
// On a target without multi-document transactions (a standalone server,
// FerretDB; detected when the pipeline opens, see Config.Transactions) each
// change is its own idempotent single-document write, in order per document,
// and the applied positions are stored after the writes: a crash replays
// changes, which leaves the same end state. Source transactions are then not
// applied atomically, and two-way pipelines are refused.
//
// [Verify] compares the included namespaces of two deployments document by
// document.
//
// # Caveats
//
//   - The source must be captured with full_document: updateLookup (the
//     default), or updates with ambiguous paths cannot be applied.
//   - Per-document order holds; the order of writes to different documents
//     on the target may differ from the source while workers run in
//     parallel (a unique index conflict makes that batch run in order).
//   - A real cluster's snapshot reads are bounded by the source's
//     minSnapshotHistoryWindowInSeconds (default 300 s): a copy that takes
//     longer goes on after its last copied _id in a new snapshot; when not
//     even one copy batch fits, the initial sync stops with
//     ErrSnapshotTooOld.
//   - Two-way replication into a sharded cluster is refused
//     (ErrShardedTwoWay): its merged stream can order a transaction's
//     events outside the marker that identifies them.
//   - Two-way replication needs the target's capture (with its EchoFilter)
//     in the same process, watching the whole deployment; DDL is applied in
//     arrival order without conflict resolution.
//   - Real-cluster paths are tested with the official driver against a
//     scripted wire-protocol server (replies written from MongoDB's
//     documentation), not a real mongod.
package replicate
