package replicate_test

import (
	"testing"

	"github.com/godwit-dev/godwit/replicate"
)

// A pipeline added to a source whose earlier history is still in the outbox
// starts its cursor at the oldest retained event: the events before its
// initial copy must not be applied on top of the copy.
func TestSink_AddedToCapturedSource(t *testing.T) {
	src, dst := memory(t), memory(t)
	ob := openOutbox(t)
	w := newWorkload(5, "shop", "orders", "items", "tmp_import")
	w.seedDocs(t, src.Client, 30)
	c := startCapture(t, ob, src, "a")
	w.run(t, src.Client, 300) // history captured before the pipeline exists
	waitCaptured(t, ob, c.id, w.events)

	cfg := replicate.Config{ID: "late", Source: "a", Target: "lungo:memory"}
	s := openSink(t, cfg, dst)
	l := startRunnerLater(t, ob, "late", s)
	if err := s.InitialSync(testCtx(t), src); err != nil {
		t.Fatal(err)
	}
	l.start()
	w.run(t, src.Client, 200)
	waitCaptured(t, ob, c.id, w.events)
	waitApplied(t, ob, l.pipe)
	mustEqual(t, src.Client, dst.Client, replicate.VerifyConfig(cfg, meta, nil))
}
