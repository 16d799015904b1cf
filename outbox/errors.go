package outbox

import "errors"

var (
	// ErrLocked is returned by Open when another process holds the outbox
	// file open. Only one godwit daemon may use an outbox at a time.
	ErrLocked = errors.New("outbox is in use by another process")

	// ErrFormat is returned by Open when the file was written by an
	// incompatible version of godwit.
	ErrFormat = errors.New("outbox format not supported")

	// ErrCorruptRecord is returned when a stored event record cannot be
	// decoded.
	ErrCorruptRecord = errors.New("corrupt outbox record")

	// ErrBehindRetention is returned by Read when the events after a sink's
	// cursor were already deleted by retention (the sink was not registered
	// while they were acknowledged by all others).
	ErrBehindRetention = errors.New("sink cursor is behind retention")

	// ErrCursorID is returned (wrapped, with the reason) when a cursor is
	// registered, acked or parked under an id that cannot name one: the
	// zero CursorID, an empty name, or a sink id that could be taken for
	// another kind's key ("trigger:x"); and by ParseCursorID for such a key.
	ErrCursorID = errors.New("invalid cursor id")

	// ErrClosed is returned by operations on a closed outbox.
	ErrClosed = errors.New("outbox closed")
)
