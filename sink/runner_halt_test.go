package sink_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

type haltingSink struct{ delivered []uint64 }

func (h *haltingSink) Deliver(_ context.Context, recs []outbox.Record) error {
	for i, r := range recs {
		if r.Seq == 3 {
			return &sink.PartialError{Delivered: i, Err: fmt.Errorf("policy says stop at %d: %w", r.Seq, sink.ErrHalted)}
		}
		h.delivered = append(h.delivered, r.Seq)
	}
	return nil
}

func TestRunner_SinkHaltOverridesParkPolicy(t *testing.T) {
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "o.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	if _, err := ob.Append(context.Background(), "s", sinktest.Inserts(5), outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	h := &haltingSink{}
	r := sink.NewRunner(outbox.SinkCursor("h"), ob, h, sink.RunnerConfig{Policy: sink.PolicyPark, MinBackoff: time.Millisecond}, zerolog.Nop())
	err = r.Run(context.Background())
	if !errors.Is(err, sink.ErrHalted) {
		t.Fatalf("Run = %v, want ErrHalted", err)
	}
	st := r.Status()
	if !st.Halted || st.Acked != 2 || st.Parked != 0 || len(h.delivered) != 2 {
		t.Fatalf("status %+v delivered %v: want halted at event 3, nothing parked", st, h.delivered)
	}
}
