package metrics_test

import (
	"errors"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/metrics"
	"github.com/godwit-dev/godwit/status"
)

func TestMetrics_ObserveDelivery(t *testing.T) {
	m := metrics.New(func() status.Snapshot { return status.Snapshot{} })
	observe := m.ObserveDelivery("kafka")
	observe(time.Millisecond, 10, nil)
	observe(time.Second, 10, errors.New("broker down"))
	observe(time.Second, 1, errors.New("broker down"))
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "godwit_sink_deliver_errors_total" {
			if got := f.GetMetric()[0].GetCounter().GetValue(); got != 2 {
				t.Fatalf("deliver errors = %v, want 2", got)
			}
			return
		}
	}
	t.Fatal("no godwit_sink_deliver_errors_total")
}
