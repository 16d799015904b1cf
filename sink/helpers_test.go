package sink_test

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// newOutbox opens a fresh outbox whose file must pass Check at cleanup.
func newOutbox(t testing.TB, opts outbox.Options) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ob.Check(); err != nil {
			t.Errorf("outbox check: %v", err)
		}
		if err := ob.Close(context.Background()); err != nil {
			t.Errorf("close outbox: %v", err)
		}
	})
	return ob
}

// event returns a BSON document {i: int64(i), p: "xxx…"} of exactly size
// bytes (at least 24).
func event(i, size int) []byte {
	pad := size - 24
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = append(b, 0x12, 'i', 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(i))
	b = append(b, 0x02, 'p', 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(pad+1))
	for range pad {
		b = append(b, 'x')
	}
	return append(b, 0, 0)
}

func appendEvents(t testing.TB, ob *outbox.Outbox, n, size int) uint64 {
	t.Helper()
	evs := make([][]byte, n)
	first := int(ob.LastSeq()) + 1
	for i := range evs {
		evs[i] = event(first+i, size)
	}
	last, err := ob.Append(context.Background(), "src", evs, outbox.Checkpoint{Token: []byte("token")})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// fastRetries keeps retry tests quick: the backoff bounds are 1ms.
func fastRetries(cfg sink.RunnerConfig) sink.RunnerConfig {
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
	return cfg
}

// running is a Runner started in a goroutine.
type running struct {
	*sink.Runner
	cancel context.CancelFunc
	done   chan error
}

// start runs a runner until stop or the end of the test.
func start(t testing.TB, ob *outbox.Outbox, id string, s sink.Sink, cfg sink.RunnerConfig) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Runner: sink.NewRunner(outbox.SinkCursor(id), ob, s, cfg, zerolog.Nop()), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the runner and returns what Run returned.
func (r *running) stop() error {
	r.cancel()
	err := <-r.done
	r.done <- err // stop may be called again
	return err
}

// wait returns Run's result once it ended on its own.
func (r *running) wait(ctx context.Context) error {
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitCtx bounds a wait that must end for the test to pass.
func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	t.Cleanup(cancel)
	return ctx
}

var errUnavailable = errors.New("destination unavailable")

// fakeSink records deliveries. fail decides, for each event in order, whether
// delivering it fails; n counts how often the event was offered.
type fakeSink struct {
	fail    func(seq uint64, n int) error
	partial bool // report failures as *PartialError

	mu        sync.Mutex
	delivered []uint64       // in delivery order
	offered   map[uint64]int // times an event reached Deliver
	alone     map[uint64]int // times an event was offered as a batch of one
	batches   [][]uint64     // every Deliver call's sequences
}

func newFakeSink(fail func(seq uint64, n int) error) *fakeSink {
	if fail == nil {
		fail = func(uint64, int) error { return nil }
	}
	return &fakeSink{fail: fail, offered: map[uint64]int{}, alone: map[uint64]int{}}
}

func (s *fakeSink) Deliver(_ context.Context, batch []outbox.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	call := make([]uint64, len(batch))
	for i, r := range batch {
		call[i] = r.Seq
	}
	s.batches = append(s.batches, call)
	for i, r := range batch {
		s.offered[r.Seq]++
		if len(batch) == 1 {
			s.alone[r.Seq]++
		}
		if err := s.fail(r.Seq, s.offered[r.Seq]); err != nil {
			if s.partial {
				return &sink.PartialError{Delivered: i, Err: err}
			}
			s.delivered = s.delivered[:len(s.delivered)-i] // nothing of this batch stays
			return err
		}
		s.delivered = append(s.delivered, r.Seq)
	}
	return nil
}

func (s *fakeSink) snapshot() (delivered []uint64, offered, alone map[uint64]int, batches [][]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	offered, alone = map[uint64]int{}, map[uint64]int{}
	for k, v := range s.offered {
		offered[k] = v
	}
	for k, v := range s.alone {
		alone[k] = v
	}
	return append([]uint64(nil), s.delivered...), offered, alone, append([][]uint64(nil), s.batches...)
}

// failAlways fails seq every time.
func failAlways(bad uint64, err error) func(uint64, int) error {
	return func(seq uint64, _ int) error {
		if seq == bad {
			return err
		}
		return nil
	}
}

func seqRange(from, to uint64, except ...uint64) []uint64 {
	var out []uint64
next:
	for s := from; s <= to; s++ {
		for _, e := range except {
			if s == e {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}
