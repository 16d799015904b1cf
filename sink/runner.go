package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/internal/backoff"
	"github.com/godwit-dev/godwit/outbox"
)

// Failure policies.
const (
	PolicyPark = "park"
	PolicyHalt = "halt"
)

// RunnerConfig tunes a Runner. Zero fields take the documented defaults.
type RunnerConfig struct {
	// BatchSize is the most events per Deliver call. Default 1000.
	BatchSize int
	// BatchBytes stops a batch early once its raw events reach this size.
	// Default 4 MiB.
	BatchBytes int
	// MaxAttempts is how often one event is tried before the policy applies.
	// Default 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts. Defaults
	// 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Policy is PolicyPark (default) or PolicyHalt.
	Policy string
	// OnDeliver, when set, is called after every Deliver call with its
	// duration, batch size and result (for latency metrics).
	OnDeliver func(d time.Duration, events int, err error)
}

// Validate names the first bad field.
func (c RunnerConfig) Validate() error {
	switch {
	case c.BatchSize < 0:
		return errors.New("batch_size: must not be negative")
	case c.MaxAttempts < 0:
		return errors.New("max_attempts: must not be negative")
	case c.MinBackoff < 0 || c.MaxBackoff < 0:
		return errors.New("backoff: must not be negative")
	case c.Policy != "" && c.Policy != PolicyPark && c.Policy != PolicyHalt:
		return fmt.Errorf("on_failure: %q is not one of %q, %q", c.Policy, PolicyPark, PolicyHalt)
	}
	return nil
}

func (c *RunnerConfig) defaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Policy == "" {
		c.Policy = PolicyPark
	}
}

// Status is a runner's view of its sink.
type Status struct {
	ID        string `json:"id"`
	Acked     uint64 `json:"acked"`
	Delivered uint64 `json:"delivered"`
	Parked    uint64 `json:"parked"`
	Halted    bool   `json:"halted"`
	LastError string `json:"last_error,omitempty"`
}

// Runner drains one sink's outbox cursor.
type Runner struct {
	id   outbox.CursorID
	ob   *outbox.Outbox
	sink Sink
	cfg  RunnerConfig
	log  zerolog.Logger

	mu      sync.Mutex
	status  Status
	changed chan struct{} // closed and replaced whenever status changes
}

// NewRunner returns a runner for sink on cursor id (outbox.SinkCursor for
// a configured sink). It does nothing until Run, which refuses an id that
// cannot name a cursor (outbox.ErrCursorID).
func NewRunner(id outbox.CursorID, ob *outbox.Outbox, s Sink, cfg RunnerConfig, log zerolog.Logger) *Runner {
	cfg.defaults()
	return &Runner{id: id, ob: ob, sink: s, cfg: cfg, log: log.With().Stringer("sink", id).Logger(),
		status: Status{ID: id.String()}, changed: make(chan struct{})}
}

// ID returns the key of the runner's cursor: the sink id of a configured
// sink, "trigger:<id>" of a trigger's.
func (r *Runner) ID() string { return r.id.String() }

// Status returns a snapshot of the runner's progress.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *Runner) setStatus(fn func(*Status)) {
	r.mu.Lock()
	fn(&r.status)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// WaitAcked blocks until the sink acknowledged seq (nil), halted (an error
// wrapping ErrHalted) or ctx ended.
func (r *Runner) WaitAcked(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		st, ch := r.status, r.changed
		r.mu.Unlock()
		switch {
		case st.Acked >= seq:
			return nil
		case st.Halted:
			return fmt.Errorf("sink %s: %w: %s", r.id, ErrHalted, st.LastError)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("sink %s acked %d, waiting for %d: %w", r.id, st.Acked, seq, ctx.Err())
		}
	}
}

// Register registers the sink's cursor so that it holds retention from now
// on. Run calls it too; owners call it before capture starts so that no event
// is deleted before the runner first reads.
func (r *Runner) Register() (outbox.SinkState, error) {
	st, err := r.ob.RegisterSink(r.id)
	if err == nil {
		r.setStatus(func(s *Status) { s.Acked, s.Delivered, s.Parked = st.Acked, st.Delivered, st.Parked })
	}
	return st, err
}

// Run delivers until ctx ends or the outbox closes (returning nil) or the
// sink halts (returning an error wrapping ErrHalted).
func (r *Runner) Run(ctx context.Context) error {
	st, err := r.Register()
	if err != nil {
		return err
	}
	acked := st.Acked

	// After a whole batch failed, deliver one event at a time up to its end
	// so that attempts and dead letters are counted against the event that
	// fails rather than against the batch.
	var narrowUntil uint64
	attempts := 0
	for ctx.Err() == nil {
		n := r.cfg.BatchSize
		if acked < narrowUntil {
			n = 1
		}
		recs, err := r.ob.Read(acked, n, r.cfg.BatchBytes)
		if err != nil {
			return r.outboxFailed(fmt.Errorf("read outbox after %d: %w", acked, err))
		}
		if len(recs) == 0 {
			if err := r.ob.Wait(ctx, acked); err != nil {
				if ctx.Err() != nil || errors.Is(err, outbox.ErrClosed) {
					return nil
				}
				return err
			}
			continue
		}

		began := time.Now()
		err = r.sink.Deliver(ctx, recs)
		if r.cfg.OnDeliver != nil {
			r.cfg.OnDeliver(time.Since(began), len(recs), err)
		}
		if err == nil {
			last := recs[len(recs)-1].Seq
			if err := r.ob.Ack(r.id, last, uint64(len(recs))); err != nil {
				return r.outboxFailed(err)
			}
			acked = last
			r.setStatus(func(s *Status) { s.Acked = last; s.Delivered += uint64(len(recs)); s.LastError = "" })
			attempts = 0
			continue
		}
		if ctx.Err() != nil {
			return nil // shutting down: the batch is redelivered on the next start
		}

		// Read the marks before unwrapping a PartialError: the sink may have
		// wrapped the PartialError in Permanent.
		permanent, halted := IsPermanent(err), errors.Is(err, ErrHalted)
		failed := 0
		var pe *PartialError
		if errors.As(err, &pe) && pe.Delivered > 0 && pe.Delivered < len(recs) {
			last := recs[pe.Delivered-1].Seq
			if err := r.ob.Ack(r.id, last, uint64(pe.Delivered)); err != nil {
				return r.outboxFailed(err)
			}
			acked = last
			r.setStatus(func(s *Status) { s.Acked = last; s.Delivered += uint64(pe.Delivered) })
			failed = pe.Delivered
			attempts = 0
		} else if len(recs) > 1 && !halted {
			narrowUntil = recs[len(recs)-1].Seq
			attempts = 0
			if !sleep(ctx, r.cfg.MinBackoff) {
				return nil
			}
			continue
		}
		if halted {
			// The sink itself decided to stop (for example a DDL policy of
			// "halt"): parking and going on would apply later events past it.
			return r.halt(err)
		}
		if errors.As(err, &pe) {
			err = pe.Err
		}
		rec := recs[failed]
		attempts++
		r.setStatus(func(s *Status) { s.LastError = err.Error() })
		r.log.Warn().Err(err).Uint64("seq", rec.Seq).Int("attempt", attempts).Msg("delivery failed")

		if attempts >= r.cfg.MaxAttempts || permanent || IsPermanent(err) {
			if r.cfg.Policy == PolicyHalt {
				return r.halt(fmt.Errorf("event %d failed %d times: %w", rec.Seq, attempts, err))
			}
			if err := r.ob.Park(r.id, rec, err.Error(), attempts); err != nil {
				return r.outboxFailed(err)
			}
			r.log.Error().Err(err).Uint64("seq", rec.Seq).Int("attempts", attempts).
				Msg("event parked in dead letters")
			acked = rec.Seq
			r.setStatus(func(s *Status) { s.Acked = rec.Seq; s.Parked++ })
			attempts = 0
			continue
		}
		if !sleep(ctx, backoff.Delay(r.cfg.MinBackoff, r.cfg.MaxBackoff, attempts)) {
			return nil
		}
	}
	return nil
}

// outboxFailed handles an error of the outbox itself. A closed outbox means
// the owner is shutting down: stop like at the end of ctx, and whatever was
// not acknowledged is delivered again on the next start.
func (r *Runner) outboxFailed(err error) error {
	if errors.Is(err, outbox.ErrClosed) {
		return nil
	}
	return r.halt(err)
}

func (r *Runner) halt(err error) error {
	r.setStatus(func(s *Status) { s.Halted = true; s.LastError = err.Error() })
	r.log.Error().Err(err).Msg("sink halted; fix the cause and restart godwit to retry")
	return fmt.Errorf("sink %s: %w: %w", r.id, ErrHalted, err)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
