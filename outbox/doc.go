// Package outbox is godwit's durable log: every captured change event is
// appended here, together with the resume token that covers it, before any
// sink sees it.
//
// # Basics
//
// An Outbox is a small bbolt file of sink cursors and dead letters, and
// events in segment files (bbolt files too, in [SegmentDir]). Captured
// events get consecutive sequence numbers (starting at 1) in the order they
// were appended. Each source keeps a checkpoint (resume token, pipeline
// fingerprint, state) that is written in the same transaction as the events
// it covers, in the newest segment, so after a crash the outbox holds
// exactly the events before the stored token and none after it. A new
// segment starts after [Options.SegmentBytes] of events and copies every
// checkpoint in the transaction that creates it.
//
// Each sink has a cursor: the highest sequence it has acknowledged, named by
// a [CursorID] of its kind ([SinkCursor], [TriggerCursor],
// [SubscriptionCursor]), whose key in the file has a prefix per kind. Sinks
// read with [Outbox.Read] and acknowledge with [Outbox.Ack]; an event a
// sink cannot deliver is parked with [Outbox.Park] in that sink's dead
// letters, which keeps a copy of the event.
//
// Retention deletes the prefix of events that every registered sink has
// acknowledged, and that no reader holds, by moving a watermark in the
// cursor file and deleting the segments wholly before it: its cost does not
// grow with what it releases, and space returns to the disk a segment at a
// time; readers of a segment being deleted are waited for. A reader
// without a cursor (a live event subscription) keeps the events it has yet
// to read with [Outbox.Hold], in memory only. The retained events are
// bounded in bytes: [Outbox.Append] blocks while the bound would be
// exceeded, so capture pauses and nothing is dropped.
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
//   - The files hold up to one segment more than the retained bytes that
//     MaxBytes bounds: acknowledged events stay on disk, unreadable, until
//     their whole segment is acknowledged.
//   - Open migrates a single-file outbox (format 1) in place: the file
//     becomes the first segment; an older godwit cannot open the result.
package outbox
