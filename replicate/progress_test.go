package replicate_test

import (
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/replicate"
)

func TestSink_InitialSyncShowsProgress(t *testing.T) {
	src, dst := memory(t), memory(t)
	insertMany(t, src.Client, "shop", "orders", 1, 150)
	var out strings.Builder
	s := openSink(t, replicate.Config{ID: "p", Source: "a", Target: "lungo:memory", CopyBatchSize: 20}, dst, replicate.WithProgress(&out))
	if err := s.InitialSync(testCtx(t), src); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "initial sync p") || !strings.Contains(got, "150") || !strings.Contains(got, "documents") {
		t.Fatalf("progress output %q: want the pipeline, the count copied and the unit", got)
	}
}
