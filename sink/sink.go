// Package sink delivers outbox events to their destinations.
//
// A Sink has one method, Deliver. A Runner owns a sink's outbox cursor: it
// reads a batch after the cursor, calls Deliver, and acknowledges on success;
// on failure it retries with capped exponential backoff, narrows the batch to
// the failing event, and after MaxAttempts parks that event in the sink's dead
// letters or halts, per policy.
//
// # Contract for implementations
//
//   - Deliver receives events in outbox order and must make them durable
//     before it returns nil: the runner acknowledges right after.
//   - Deliver must be idempotent: after a crash, events delivered but not yet
//     acknowledged are delivered again. The conformance suite in package
//     sinktest checks this.
//   - Return a *PartialError when the first N events were delivered, and
//     wrap errors with Permanent when retrying cannot help (a malformed
//     event): the runner then parks or halts at once, per policy. An error
//     wrapping ErrHalted halts the runner whatever the policy.
//
// Optional abilities are separate interfaces: a sink that holds resources
// implements Closer; one that talks to a broker implements Connection; one
// that can refuse at open implements Halter.
package sink

import (
	"context"
	"errors"
	"fmt"

	"github.com/godwit-dev/godwit/outbox"
)

// Sink delivers batches of outbox records.
type Sink interface {
	Deliver(ctx context.Context, batch []outbox.Record) error
}

// Closer is implemented by sinks that hold resources. The runner's owner
// calls Close after the runner stopped.
type Closer interface {
	Close(ctx context.Context) error
}

// Connection is implemented by sinks that keep connections to a server
// (Kafka, NATS): State says in a few words whether they are connected now,
// for status. It must be cheap and never contain credentials.
type Connection interface {
	ConnectionState() string
}

// Halter is implemented by sinks that may refuse to write before their
// runner notices (an audit log found damaged at open): Halted says why, or
// nil, so that status reports it at once.
type Halter interface {
	Halted() error
}

// PartialError reports that the first Delivered events of a batch were
// delivered and the next one failed with Err.
type PartialError struct {
	Delivered int
	Err       error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("delivered %d events, then: %v", e.Delivered, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// ErrHalted is returned by Runner.Run when the sink halted on an event it
// could not deliver (policy "halt").
var ErrHalted = errors.New("sink halted")
