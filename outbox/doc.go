// Package outbox is godwit's durable log: every captured change event is
// appended here, together with the resume token that covers it, before any
// sink sees it.
//
// # Basics
//
// An Outbox is one bbolt file. Captured events get consecutive sequence
// numbers (starting at 1) in the order they were appended. Each source keeps a
// checkpoint (resume token, pipeline fingerprint, state) that is written in
// the same transaction as the events it covers, so after a crash the outbox
// holds exactly the events before the stored token and none after it.
//
// Each sink has a cursor: the highest sequence it has acknowledged. Sinks read
// with [Outbox.Read] and acknowledge with [Outbox.Ack]; an event a sink cannot
// deliver is parked with [Outbox.Park] in that sink's dead letters, which
// keeps a copy of the event.
//
// Retention deletes the prefix of events that every registered sink has
// acknowledged, and that no reader holds: a reader without a cursor (a live
// event subscription) keeps the events it has yet to read with
// [Outbox.Hold], in memory only. The retained events are bounded in bytes: [Outbox.Append]
// blocks while the bound would be exceeded, so capture pauses and nothing is
// dropped.
//
// # Caveats
//
//   - One process per file: a second Open fails with [ErrLocked].
//   - A sink cursor that is not registered in this process does not hold
//     retention; when it is registered again after its events were deleted,
//     Read reports [ErrBehindRetention].
//   - Holds yield to back-pressure: when an append would wait for space,
//     retention ignores them, so a reader that stopped reading never pauses
//     capture; it finds its events deleted instead.
//   - A single batch larger than the bound is accepted when the outbox is
//     empty, so an oversized event never deadlocks capture.
package outbox
