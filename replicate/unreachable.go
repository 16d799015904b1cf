package replicate

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"

	"github.com/godwit-dev/godwit/internal/backoff"
)

// Waiting for a target that cannot be reached.
const (
	unreachableMin = 200 * time.Millisecond
	unreachableMax = 10 * time.Second
	pingTimeout    = 10 * time.Second
)

// unreachable reports an error that says the target could not be reached
// (network, timeout, no server selectable), not that it refused the write.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var sel topology.ServerSelectionError
	var conn topology.ConnectionError // a handshake refused before the driver marked the server unknown
	var le mongo.LabeledError
	return mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.As(err, &sel) || errors.As(err, &conn) ||
		errors.As(err, &le) && le.HasErrorLabel("RetryableWriteError") && !unsupportedCode(err)
}

// runSegmentWaiting runs a segment; while the target cannot be reached (the
// writes fail on the network and a ping fails too) it waits (capped exponential backoff) and runs it again, until ctx ends.
// A target that is down is waited for, not counted as a failed delivery:
// the runner would otherwise park events one by one. Running a segment
// again is safe: its writes are idempotent, and what was applied and
// recorded is skipped.
func (s *Sink) runSegmentWaiting(ctx context.Context, seg segment) error {
	for attempt := 1; ; attempt++ {
		err := s.runSegment(ctx, seg)
		if !unreachable(err) || ctx.Err() != nil {
			return err
		}
		// A server that answers a ping is up: it dropped these writes for
		// a reason of its own (FerretDB closes the connection on a BSON type
		// it does not know), and the runner's attempts and policy apply.
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		perr := s.target.Client.Ping(pctx, nil)
		cancel()
		if perr == nil {
			return err
		}
		s.set(func(x *Status) { x.LastError = "target unreachable, retrying: " + err.Error() })
		s.log.Warn().Err(err).Int("attempt", attempt).Str("target", s.target.Redacted).
			Msg("target unreachable; retrying the same changes")
		if !waitUnreachable(ctx, attempt) {
			return err
		}
	}
}

// waitUnreachable waits before the attempt+1st try at an unreachable
// deployment (capped exponential backoff); false when ctx ended first.
func waitUnreachable(ctx context.Context, attempt int) bool {
	t := time.NewTimer(backoff.Delay(unreachableMin, unreachableMax, attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
