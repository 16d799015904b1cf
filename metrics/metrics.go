// Package metrics exposes godwit's state as Prometheus metrics.
//
// Counters and gauges are read from a status snapshot at scrape time, so
// metrics cost nothing between scrapes and always agree with `godwit
// status`. Only latencies are observed on the hot path (one histogram
// observation per delivered batch).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/status"
)

// Metrics is godwit's registry.
type Metrics struct {
	Registry *prometheus.Registry
	deliver  *prometheus.HistogramVec
	failed   *prometheus.CounterVec
}

// New returns a registry that reads status from snapshot at scrape time.
func New(snapshot func() status.Snapshot) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		deliver: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "godwit_sink_deliver_seconds",
			Help:    "Time one delivery of a batch to a sink took (apply latency for replication, call latency for triggers).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_sink_deliver_errors_total",
			Help: "Deliveries to a sink that failed and will be retried (for kafka and nats: publish errors, broker unreachable).",
		}, []string{"sink"}),
	}
	reg.MustRegister(m.deliver, m.failed, &collector{snapshot: snapshot},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveDelivery returns a sink.RunnerConfig.OnDeliver hook for sink id.
func (m *Metrics) ObserveDelivery(id string) func(time.Duration, int, error) {
	h, failed := m.deliver.WithLabelValues(id), m.failed.WithLabelValues(id)
	return func(d time.Duration, _ int, err error) {
		h.Observe(d.Seconds())
		if err != nil {
			failed.Inc()
		}
	}
}

var (
	descCaptured = prometheus.NewDesc("godwit_events_captured_total",
		"Events captured into the outbox, per source.", []string{"source"}, nil)
	descFiltered = prometheus.NewDesc("godwit_events_filtered_total",
		"Events dropped by filters since start, per source.", []string{"source"}, nil)
	descLag = prometheus.NewDesc("godwit_source_lag_seconds",
		"Wall clock minus the cluster time of the stored resume token, per source.", []string{"source"}, nil)
	descSourceUp = prometheus.NewDesc("godwit_source_up",
		"1 while the source's change stream is open, 0 otherwise.", []string{"source", "state"}, nil)
	descDelivered = prometheus.NewDesc("godwit_events_delivered_total",
		"Events delivered, per sink.", []string{"sink"}, nil)
	descParked = prometheus.NewDesc("godwit_dead_letters_total",
		"Events parked in dead letters, per sink.", []string{"sink"}, nil)
	descBacklog = prometheus.NewDesc("godwit_sink_backlog_events",
		"Events appended after the sink's cursor.", []string{"sink"}, nil)
	descSinkUp = prometheus.NewDesc("godwit_sink_up",
		"1 while the sink delivers, 0 when halted.", []string{"sink"}, nil)
	descBytes = prometheus.NewDesc("godwit_outbox_bytes",
		"Bytes of retained events in the outbox.", nil, nil)
	descMax = prometheus.NewDesc("godwit_outbox_max_bytes",
		"The outbox bound (capture pauses there); negative means unbounded.", nil, nil)
	descFile = prometheus.NewDesc("godwit_outbox_file_bytes",
		"Size of the outbox file.", nil, nil)
	descLast = prometheus.NewDesc("godwit_outbox_last_sequence",
		"Sequence of the last appended event.", nil, nil)
)

type collector struct{ snapshot func() status.Snapshot }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCaptured, descFiltered, descLag, descSourceUp, descDelivered,
		descParked, descBacklog, descSinkUp, descBytes, descMax, descFile, descLast} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.snapshot()
	for _, s := range st.Sources {
		ch <- prometheus.MustNewConstMetric(descCaptured, prometheus.CounterValue, float64(s.Captured), s.ID)
		ch <- prometheus.MustNewConstMetric(descFiltered, prometheus.CounterValue, float64(s.Filtered), s.ID)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, s.LagSeconds, s.ID)
		up := 0.0
		if s.State == capture.StateRunning {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descSourceUp, prometheus.GaugeValue, up, s.ID, string(s.State))
	}
	for _, s := range st.Sinks {
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(s.Delivered), s.ID)
		ch <- prometheus.MustNewConstMetric(descParked, prometheus.CounterValue, float64(s.Parked), s.ID)
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(s.Backlog), s.ID)
		up := 1.0
		if s.Halted {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(descSinkUp, prometheus.GaugeValue, up, s.ID)
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Outbox.Bytes))
	ch <- prometheus.MustNewConstMetric(descMax, prometheus.GaugeValue, float64(st.Outbox.MaxBytes))
	ch <- prometheus.MustNewConstMetric(descFile, prometheus.GaugeValue, float64(st.Outbox.FileBytes))
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.Outbox.Last))
}
