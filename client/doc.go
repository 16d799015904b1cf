// Package client is the Go client for godwit's event stream: an application
// subscribes to the change events godwit captured and decodes them into its
// own types, in the style of the MongoDB driver's change streams.
//
// # Basics
//
// Dial a running godwit (its api.grpc_addr), subscribe with a filter, and
// read events with Next until it returns false:
//
//	c, err := client.Dial(ctx, "127.0.0.1:7701", client.WithToken(token))
//	if err != nil { … }
//	defer c.Close()
//	s, err := c.Subscribe(ctx, client.Filter{Namespaces: []string{"shop.orders"}})
//	if err != nil { … }
//	defer s.Close()
//	for s.Next(ctx) {
//		var o Order
//		if err := s.Event().Decode(&o); err == nil { … }
//	}
//	return s.Err()
//
// [Typed] wraps a stream so that Next decodes every event's documents into
// a type of yours: client.Typed[Order](s).
//
// A stream starts live (events captured from now on) unless [FromSequence]
// or [FromTime] says otherwise. [Durable] names a durable subscription:
// godwit keeps its cursor across reconnects and daemon restarts, and a
// stream of it resumes after what the application acknowledged with
// [Stream.Ack]. Acks are batched: Ack only records the position, and a
// background goroutine sends one Ack call per [AckEvery] events or
// interval, so a fast consumer never waits for a round trip.
//
// When the connection breaks (the daemon restarts, the network drops),
// Next reconnects with exponential backoff and goes on where it stopped:
// a live stream asks for the sequence after the last one it saw, a durable
// one resumes at its cursor, and events the application already received
// are not handed to it again. Next gives up only when its context ends
// or after [GiveUpAfter].
//
// # Errors
//
// Next returns false when the stream ends or needs the application's
// attention; Err says why. Two errors do not end the stream: a
// [*LaggedError] (the stream skipped events, errors.Is(err, ErrLagged)) and
// a [*DecodeError] (an event did not decode into the caller's type, from
// [TypedStream.Next]). After them Next may be called again and goes on with
// the next event. Every other error is final. Errors the application can
// act on are sentinels ([ErrUnauthenticated], [ErrPermissionDenied],
// [ErrInvalidRequest] as a [*RequestError] naming the field, [ErrNotFound],
// [ErrTakenOver], [ErrClosed]).
//
// # Caveats
//
//   - Delivery is at least once. Within one Stream, events are handed to
//     the application once, in sequence order, across reconnects. A new
//     stream of a durable subscription (after the application restarts)
//     starts after the last ack godwit stored: events handled but not yet
//     acknowledged (at most AckEvery events, or the last interval's) are
//     delivered again.
//   - A durable subscription holds godwit's retention until it is deleted
//     ([Client.DeleteSubscription]); an application that goes away for
//     good makes godwit's outbox grow to its bound.
//   - Documents are sent as BSON and decoded with the driver's bson
//     package: struct fields need bson tags where their names differ.
//   - Update events carry the full document only when the source captures
//     it (updateLookup, godwit's default); deletes carry a pre-image only
//     when the source captures pre-images (MongoDB 6.0+, not the embedded
//     engine). Decode and DecodeBefore return [ErrNoDocument] otherwise.
package client
