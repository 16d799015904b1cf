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

	// ErrBadSeal is returned (wrapped in a *VerifyError, or as the reason a
	// Sink halted) when a record's seal does not verify with the sealing key
	// of its position: the record was written by someone without godwit's
	// sealing key at that moment, even if its hash chain is correct.
	ErrBadSeal = errors.New("audit record seal does not verify")

	// ErrUnsealed is returned (wrapped in a *VerifyError, or as the reason a
	// Sink halted) for a record without a seal after sealing started.
	ErrUnsealed = errors.New("audit record not sealed")

	// ErrUnknownKey is returned (wrapped in a *VerifyError, or as the reason
	// a Sink halted) for a seal_start record naming a key that was not given
	// to CheckSealed (or that the sink did not make).
	ErrUnknownKey = errors.New("audit record sealed with an unknown key")

	// ErrBadKey is returned by ReadKeyFile for a file that is not a valid
	// verification key, and by CheckSealed when no key is given.
	ErrBadKey = errors.New("bad audit key")

	// ErrTailMismatch is the reason a Sink halted when a record after its
	// saved state does not match the outbox event it claims (its seq is
	// already processed, or redelivering that event does not produce it).
	ErrTailMismatch = errors.New("audit record does not match the outbox event it claims")

	// ErrSealStateLost is the reason a Sink halted when the log is sealed but
	// the state file holding the current sealing key is missing or
	// unreadable: godwit can neither check the tail nor seal new records.
	ErrSealStateLost = errors.New("audit sealing key state lost")
)

// HaltError is the reason a Sink halted: returned (wrapped in
// sink.ErrHalted) by Deliver and RecordSystem, and by Sink.Halted. It names
// the first bad record when there is one.
type HaltError struct {
	// Err is the *VerifyError of the first bad record, or one of the
	// sentinels above.
	Err error
	// Fix says what the operator can do.
	Fix string
}

func (e *HaltError) Error() string {
	if e.Fix == "" {
		return "audit log refused: " + e.Err.Error()
	}
	return "audit log refused: " + e.Err.Error() + "; " + e.Fix
}

func (e *HaltError) Unwrap() error { return e.Err }

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
