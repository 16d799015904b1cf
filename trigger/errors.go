package trigger

import (
	"errors"
	"fmt"

	"github.com/godwit-dev/godwit/auth"
)

var (
	// ErrInvalid is returned (wrapped in a *FieldError) when a trigger,
	// function or request has a bad field.
	ErrInvalid = errors.New("invalid argument")

	// ErrNotFound is returned when no trigger or function has the given id.
	ErrNotFound = errors.New("not found")

	// ErrExists is returned when the user already has a trigger or function
	// with the name.
	ErrExists = errors.New("already exists")

	// ErrInUse is returned by DeleteFunction while triggers still call the
	// function; delete or re-point them first.
	ErrInUse = errors.New("function is used by triggers")

	// ErrQueueFull is returned by ReportAuthEvent when the trigger queue
	// stayed full until the call's context ended: authentication or
	// scheduled triggers are behind. Report the event again later.
	ErrQueueFull = errors.New("the trigger queue is full")

	// ErrNotRunning is returned by RetryDeadLetters for a trigger that is
	// not running (disabled, halted or waiting for its function).
	ErrNotRunning = errors.New("not running")

	// ErrClosed is returned by operations on a closed Manager.
	ErrClosed = errors.New("trigger manager closed")

	// ErrNotAllowed is returned (wrapped in a *FieldError) by CreateTrigger
	// and UpdateTrigger when the trigger would watch or write a data source
	// or namespace outside its owner's allow-list (Deps.Allow). It is
	// auth.ErrNotAllowed.
	ErrNotAllowed = auth.ErrNotAllowed
)

// FieldError names the field of a request that is wrong and why. It wraps
// ErrInvalid, ErrNotFound for references to missing functions, or
// ErrNotAllowed.
type FieldError struct {
	Field  string
	Reason string
	Err    error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func (e *FieldError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrInvalid}
}
