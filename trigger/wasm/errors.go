package wasm

import "errors"

var (
	// ErrInvalidModule is returned by Compile for bytes that are not a
	// WebAssembly module wazero can compile.
	ErrInvalidModule = errors.New("invalid wasm module")

	// ErrABI is returned by Compile and Call when a module does not follow
	// the guest ABI: a missing or mistyped export, an import outside the
	// "godwit" and WASI modules, another ABI version, or more initial memory
	// than the cap allows.
	ErrABI = errors.New("module does not follow the godwit guest ABI")

	// ErrFunction is returned by Call when the guest's handler returned a
	// non-zero code; the message is what the guest passed to set_error.
	ErrFunction = errors.New("function failed")

	// ErrTrap is returned by Call when the guest trapped (unreachable, out
	// of bounds, stack overflow) or exited (a Go guest's panic).
	ErrTrap = errors.New("function trapped")

	// ErrDeadline is returned by Call when the call ran past its deadline
	// and was stopped.
	ErrDeadline = errors.New("function ran past its deadline")

	// ErrMemoryLimit is returned by Call when the guest failed after its
	// memory reached the cap.
	ErrMemoryLimit = errors.New("function exceeded its memory limit")

	// ErrMemoryBudget is returned by Compile and Call when the memory of
	// all instances together would pass Config.MemoryBudget: no room was
	// made for a new instance before the call's deadline, or the guest's
	// memory.grow was refused and the guest failed.
	ErrMemoryBudget = errors.New("functions' memory budget exhausted")

	// ErrClosed is returned by Call on a closed Module or Runtime.
	ErrClosed = errors.New("wasm runtime closed")

	// ErrWriteDenied is returned by a Host to refuse a write to a namespace
	// the trigger does not allow; the guest sees CodeDenied.
	ErrWriteDenied = errors.New("write to namespace not allowed")

	// ErrWriteInvalid is returned by a Host for a malformed write (bad
	// namespace, not a BSON document); the guest sees CodeInvalid.
	ErrWriteInvalid = errors.New("invalid write")

	// ErrDuplicateKey is returned by a Host when an insert hit an existing
	// _id or unique key; the guest sees CodeDuplicateKey.
	ErrDuplicateKey = errors.New("duplicate key")
)
