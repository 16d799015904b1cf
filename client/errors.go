package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrUnavailable is returned by Dial and Subscribe when the daemon
	// cannot be reached, and by Next when reconnecting gave up
	// (GiveUpAfter).
	ErrUnavailable = errors.New("godwit is unreachable")

	// ErrUnauthenticated is returned when godwit refused the token: none
	// was sent (WithToken) but godwit needs one, or it is unknown or
	// revoked.
	ErrUnauthenticated = errors.New("godwit refused the token")

	// ErrPermissionDenied is returned when the token's user may not do
	// what was asked.
	ErrPermissionDenied = errors.New("permission denied")

	// ErrInvalidRequest is returned, as a *RequestError naming the field,
	// when godwit refused a subscription or an ack as asked: a bad
	// namespace glob, an unknown operation type, a bad durable name.
	ErrInvalidRequest = errors.New("invalid request")

	// ErrNotFound is returned by Client.Ack and DeleteSubscription, and by
	// Next when a batched ack finds it, for a durable subscription that
	// does not exist (it was deleted).
	ErrNotFound = errors.New("no such durable subscription")

	// ErrTakenOver is returned by Next when godwit ended the stream of a
	// durable subscription: a newer stream of the same name took over, or
	// the subscription was deleted. Reconnecting would take it back, so
	// the stream does not.
	ErrTakenOver = errors.New("the durable subscription's stream was ended by godwit")

	// ErrClosed is returned by calls on a closed Stream.
	ErrClosed = errors.New("stream closed")

	// ErrNotDurable is returned by Stream.Ack on a stream that is not
	// durable: there is no cursor to move.
	ErrNotDurable = errors.New("not a durable subscription (subscribe with client.Durable(name) to ack)")

	// ErrNoDocument is returned by Decode and DecodeBefore when the event
	// carries no such document: deletes and DDL have no full document;
	// updates have one only when the source captures it (updateLookup);
	// pre-images exist only when the source captures them.
	ErrNoDocument = errors.New("the event carries no such document")

	// ErrLagged matches every *LaggedError.
	ErrLagged = errors.New("the stream skipped events")
)

// RequestError says which field of a request godwit refused and why.
type RequestError struct {
	// Field is the request field as godwit names it, for example
	// "operation_types[0]" (Filter.Operations[0]) or "durable_name".
	Field string
	// Problem says what is wrong and what to use instead.
	Problem string
}

var goFields = map[string]string{
	"sources": "Filter.Sources", "namespaces": "Filter.Namespaces", "operation_types": "Filter.Operations",
	"ignore_namespaces": "Filter.IgnoreNamespaces", "durable_name": "Durable", "from_time": "FromTime",
	"sequence": "Ack's sequence", "encoding": "encoding", "max_lag": "MaxLag",
}

func (e *RequestError) Error() string {
	name, idx, _ := strings.Cut(e.Field, "[")
	if g, ok := goFields[name]; ok {
		if idx != "" {
			g += "[" + idx
		}
		return fmt.Sprintf("invalid request: %s (%s): %s", e.Field, g, e.Problem)
	}
	return fmt.Sprintf("invalid request: %s: %s", e.Field, e.Problem)
}

// Unwrap makes errors.Is(err, ErrInvalidRequest) true.
func (e *RequestError) Unwrap() error { return ErrInvalidRequest }

// LagReason says why a stream skipped events.
type LagReason int

// Lag reasons.
const (
	// LagRetention: godwit's retention deleted the events before the
	// stream read them (every sink had them). They are gone from godwit.
	LagRetention LagReason = iota + 1
	// LagMaxLag: the stream was more than MaxLag events behind the newest
	// one and skipped to it. The skipped events may still be retained:
	// subscribe FromSequence(FirstMissed) to read them.
	LagMaxLag
)

func (r LagReason) String() string {
	switch r {
	case LagRetention:
		return "deleted by retention before they were read"
	case LagMaxLag:
		return "more than MaxLag events behind"
	}
	return "unknown reason"
}

// LaggedError says the stream skipped the events FirstMissed to LastMissed
// (whether they matched the filter or not is unknown). It does not end the
// stream: Next goes on with the event after LastMissed. An application
// holding state derived from events (a cache) should treat it as "start
// over".
type LaggedError struct {
	Reason                  LagReason
	FirstMissed, LastMissed uint64
}

func (e *LaggedError) Error() string {
	return fmt.Sprintf("lagged: events %d to %d were skipped (%s)", e.FirstMissed, e.LastMissed, e.Reason)
}

// Is makes errors.Is(err, ErrLagged) true.
func (e *LaggedError) Is(target error) bool { return target == ErrLagged }

// DecodeError says an event's document did not decode into the caller's
// type. It does not end a TypedStream: Next goes on with the next event.
type DecodeError struct {
	Sequence uint64
	Err      error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode event %d: %v", e.Sequence, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// convert turns a gRPC error into the package's errors; what says what
// was being done.
func (c *Client) convert(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		field, problem, ok := strings.Cut(msg, ": ")
		if !ok {
			field, problem = "request", msg
		}
		return fmt.Errorf("%s: %w", what, &RequestError{Field: field, Problem: problem})
	case codes.Unauthenticated:
		return fmt.Errorf("%s: %w: %s (pass the token with client.WithToken)", what, ErrUnauthenticated, msg)
	case codes.PermissionDenied:
		return fmt.Errorf("%s: %w: %s", what, ErrPermissionDenied, msg)
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %s", what, ErrNotFound, msg)
	case codes.Aborted:
		return fmt.Errorf("%s: %w: %s", what, ErrTakenOver, msg)
	case codes.Unavailable:
		return fmt.Errorf("%s: %w at %s: %s", what, ErrUnavailable, c.addr, msg)
	case codes.Canceled:
		return fmt.Errorf("%s: %w", what, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %s: %s", what, st.Code(), msg)
}

// transient reports whether a stream error is worth reconnecting for.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted:
		return true
	case codes.Internal, codes.Unknown:
		// A connection cut mid-frame shows up as Internal ("stream
		// terminated by RST_STREAM") or Unknown from the transport, not
		// from godwit's handlers, whose errors say what went wrong.
		m := status.Convert(err).Message()
		return strings.Contains(m, "RST_STREAM") || strings.Contains(m, "transport") || strings.Contains(m, "EOF")
	}
	return false
}
