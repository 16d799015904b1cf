package replicate

import (
	"errors"
	"fmt"

	"github.com/godwit-dev/godwit/sink"
)

var (
	// ErrHalted is returned by Deliver once the pipeline stopped on a DDL
	// event or unknown operation type under ddl: halt. The pipeline stays
	// halted across restarts until its state is cleared with a new initial
	// sync; the error says which event stopped it. It wraps sink.ErrHalted
	// so that a runner can stop instead of parking.
	ErrHalted = fmt.Errorf("replication halted (%w)", sink.ErrHalted)

	// ErrNotEmpty is returned by InitialSync when a target namespace already
	// holds documents before the first copy: replication into a non-empty
	// collection would mix foreign documents into the copy.
	ErrNotEmpty = errors.New("target namespace is not empty")

	// ErrNoPostImage is returned (wrapped in sink.Permanent) by Deliver for
	// an update whose paths cannot be applied as $set/$unset and whose event
	// carries no fullDocument: the source is captured without
	// full_document: updateLookup.
	ErrNoPostImage = errors.New("update needs a post-image")

	// ErrUnsupported is returned by Open when the target lacks what the
	// configuration needs (transactions: required, or a two-way pipeline,
	// on a target without transactions), and (wrapped in sink.Permanent) by
	// Deliver when the target refuses a write or DDL command as unknown or
	// not implemented. The message names the pipeline, the target and the
	// missing capability.
	ErrUnsupported = errors.New("unsupported target")

	// ErrFence is returned when the capture of a two-way target did not
	// observe the target's latest writes in time, so the conflict rule
	// cannot be evaluated yet. The runner retries.
	ErrFence = errors.New("target capture is behind")
)
