// Package events is godwit's subscription engine: it streams the change
// events in the outbox to applications (EventService, `godwit events tail`),
// filtered per subscription, live or replayed from a sequence or a time.
//
// # Basics
//
// The outbox is the buffer. A subscription reads the outbox from its own
// position with [outbox.Outbox.Read] and waits for appends with
// [outbox.Outbox.Wait]; it keeps no queue and no copy of the events. With
// nobody subscribed the engine does nothing at all, and a subscriber that
// stops reading costs nothing but its goroutine: capture, sinks and other
// subscribers never wait for it.
//
// A subscription that is not durable has no stored cursor: it holds the
// events it has yet to read in memory ([outbox.Outbox.Hold]), so that fast
// sinks do not get them deleted under it, but the hold yields to
// back-pressure: when capture would have to wait for space, retention
// ignores it. A subscriber that stopped reading therefore lets the outbox
// grow to its bound, never further. When retention deleted the events at
// its position, it gets a [Lagged] message (reason [LagRetention]) naming
// the missed sequences and continues from the oldest retained event. With
// Request.MaxLag it also skips ahead, with a Lagged message (reason
// [LagMaxLag]), whenever it is more than MaxLag events behind the newest
// one.
//
// A durable subscription (Request.Durable) has an outbox cursor,
// [outbox.SubscriptionCursor] ("sub:NAME"), that the subscriber moves with
// [Engine.Ack]. A stream of an existing durable subscription starts after
// its cursor, so every event is delivered at least once across reconnects
// and daemon restarts. [Checkpoint] messages let a subscriber acknowledge events its
// filters dropped.
//
// # Caveats
//
//   - A durable subscription holds retention from its creation until
//     [Engine.Delete], connected or not: a subscriber that goes away for
//     good fills the outbox to its bound, and then capture pauses. Delete
//     subscriptions that are no longer used; `godwit status` lists them
//     with their backlog.
//   - Filters run in godwit, after capture: every subscription reads (and
//     parses) every event of the sources it asked for.
//   - Time-based starts use godwit's capture time, not the cluster time:
//     sources' clocks differ, the outbox order is the capture order.
package events
