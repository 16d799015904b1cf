package audit

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by Deliver and RecordSystem after Close.
	ErrClosed = errors.New("audit sink closed")

	// ErrLocked is returned by Open when another process (or another Sink in
	// this process) has the audit log open. Two writers would fork the hash
	// chain, so only one may append.
	ErrLocked = errors.New("audit log is in use")

	// ErrMalformedRecord is returned (wrapped) by DecodeLine for a line that
	// is not an audit record: not a JSON object, missing index, prev or class,
	// or not ending in the "hash" member.
	ErrMalformedRecord = errors.New("malformed audit record")

	// ErrHashMismatch is returned (wrapped in a *VerifyError) when a record's
	// bytes do not hash to the hash stored in it: the record was edited.
	ErrHashMismatch = errors.New("record hash does not match its content")

	// ErrBrokenChain is returned (wrapped in a *VerifyError) when a record
	// does not follow the one before it (wrong index or prev hash): a record
	// was removed, inserted or moved.
	ErrBrokenChain = errors.New("hash chain broken")

	// ErrTailCut is returned (wrapped in a *VerifyError, or by Open) when the
	// log ends before an exported head or before what the sink's state file
	// recorded: records were cut off the end.
	ErrTailCut = errors.New("audit log tail cut")

	// ErrHeadMismatch is returned (wrapped in a *VerifyError, or by Open) when
	// the record at an exported head's index does not have that head's hash:
	// the log was rewritten up to or past that point.
	ErrHeadMismatch = errors.New("audit log does not match the head")

	// ErrBadHead is returned by ParseHead for text that is not INDEX:HASH.
	ErrBadHead = errors.New("bad audit head")
)

// VerifyError names the first record that failed verification.
type VerifyError struct {
	// Line is the 1-based line number in the log (for a cut tail, the line
	// the first missing record would be on).
	Line int
	// Index is the index the record at Line carries, or 0 when the line
	// could not be decoded or the record is missing.
	Index uint64
	// Want is the index the record at Line should carry.
	Want uint64
	// Reason says what is wrong, for people.
	Reason string
	// Err is one of ErrMalformedRecord, ErrHashMismatch, ErrBrokenChain,
	// ErrTailCut, ErrHeadMismatch.
	Err error
}

func (e *VerifyError) Error() string {
	if e.Index != 0 {
		return fmt.Sprintf("line %d (record index %d): %v: %s", e.Line, e.Index, e.Err, e.Reason)
	}
	return fmt.Sprintf("line %d (record index %d expected): %v: %s", e.Line, e.Want, e.Err, e.Reason)
}

func (e *VerifyError) Unwrap() error { return e.Err }
