package admin

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit-dev/godwit/trigger"
)

var (
	descTriggerBacklog = prometheus.NewDesc("godwit_trigger_backlog_events",
		"Records after a trigger's cursor: captured events (database triggers) or queued authentication events and scheduled runs.",
		[]string{"trigger", "name"}, nil)
	descTriggerCalls = prometheus.NewDesc("godwit_trigger_invocations_total",
		"Successful function calls of a trigger since godwit started.", []string{"trigger", "name"}, nil)
	descTriggerParked = prometheus.NewDesc("godwit_trigger_dead_letters_total",
		"Events ever parked in a trigger's dead letters (retried ones included).", []string{"trigger", "name"}, nil)
	descTriggerDead = prometheus.NewDesc("godwit_trigger_dead_letters",
		"Events in a trigger's dead letters now.", []string{"trigger", "name"}, nil)
	descTriggerLogDropped = prometheus.NewDesc("godwit_trigger_log_dropped_lines_total",
		"Lines the trigger's function logged past its log budget and godwit dropped (counted per function, since its module was loaded).", []string{"trigger", "name"}, nil)
	descTriggerLogDroppedBytes = prometheus.NewDesc("godwit_trigger_log_dropped_bytes_total",
		"Bytes the trigger's function logged past its log budget and godwit dropped (counted per function, since its module was loaded).", []string{"trigger", "name"}, nil)
	descFunctionsMemory = prometheus.NewDesc("godwit_functions_memory_bytes",
		"Linear memory reserved by all function instances, against triggers.max_memory_bytes.", nil, nil)
	descFunctionsMemoryBudget = prometheus.NewDesc("godwit_functions_memory_budget_bytes",
		"triggers.max_memory_bytes: the memory all function instances may reserve together.", nil, nil)
	descTriggerUp = prometheus.NewDesc("godwit_trigger_up",
		"1 while a trigger runs, 0 otherwise (state says why).", []string{"trigger", "name", "state"}, nil)
	descSubsConnected = prometheus.NewDesc("godwit_subscriptions_connected",
		"Event streams connected now, durable or not.", []string{"durable"}, nil)
	descSubBacklog = prometheus.NewDesc("godwit_subscription_backlog_events",
		"Events captured after a durable subscription's cursor.", []string{"subscription"}, nil)
	descTriggers = prometheus.NewDesc("godwit_triggers",
		"Triggers by state (no names: what a scrape gets when api.metrics_labels hides them).", []string{"state"}, nil)
)

// Collector returns Prometheus metrics of triggers and event
// subscriptions, read at scrape time like the daemon's. Only durable
// subscriptions have their own series: live ones come and go.
//
// With names, every trigger has its own series labelled with its id and
// name, and every durable subscription with its name: these belong to
// users, so api.metrics_labels decides who sees them. Without names there
// are only godwit_triggers (a count per state) and the count of connected
// streams.
func (s *Service) Collector(names bool) prometheus.Collector { return collector{s: s, names: names} }

type collector struct {
	s     *Service
	names bool
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	descs := []*prometheus.Desc{descTriggers, descSubsConnected, descFunctionsMemory, descFunctionsMemoryBudget}
	if c.names {
		descs = append(descs, descTriggerBacklog, descTriggerCalls, descTriggerParked, descTriggerDead, descTriggerUp,
			descTriggerLogDropped, descTriggerLogDroppedBytes, descSubBacklog)
	}
	for _, d := range descs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if c.s.d.Report == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r := c.s.d.Report(ctx)
	cancel()
	if r.TriggersErr == nil {
		states := map[string]float64{}
		for _, t := range r.Triggers {
			states[string(t.State)]++
			if !c.names {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descTriggerCalls, prometheus.CounterValue, float64(t.Invocations), t.ID, t.Name)
			up := 0.0
			if t.State == trigger.StateRunning {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descTriggerUp, prometheus.GaugeValue, up, t.ID, t.Name, string(t.State))
			ch <- prometheus.MustNewConstMetric(descTriggerParked, prometheus.CounterValue, float64(t.Parked), t.ID, t.Name)
			ch <- prometheus.MustNewConstMetric(descTriggerDead, prometheus.GaugeValue, float64(t.DeadLetters), t.ID, t.Name)
			ch <- prometheus.MustNewConstMetric(descTriggerBacklog, prometheus.GaugeValue, float64(t.Backlog), t.ID, t.Name)
			ch <- prometheus.MustNewConstMetric(descTriggerLogDropped, prometheus.CounterValue, float64(t.LogDroppedLines), t.ID, t.Name)
			ch <- prometheus.MustNewConstMetric(descTriggerLogDroppedBytes, prometheus.CounterValue, float64(t.LogDroppedBytes), t.ID, t.Name)
		}
		for state, n := range states {
			ch <- prometheus.MustNewConstMetric(descTriggers, prometheus.GaugeValue, n, state)
		}
	}
	ms := r.FunctionsMemory
	ch <- prometheus.MustNewConstMetric(descFunctionsMemory, prometheus.GaugeValue, float64(ms.InUse))
	ch <- prometheus.MustNewConstMetric(descFunctionsMemoryBudget, prometheus.GaugeValue, float64(ms.Budget))
	if r.SubscriptionsErr != nil {
		return
	}
	var live, durable float64
	for _, sub := range r.Subscriptions {
		switch {
		case !sub.Durable:
			live++
		case sub.Connected:
			durable++
		}
		if sub.Durable && c.names {
			ch <- prometheus.MustNewConstMetric(descSubBacklog, prometheus.GaugeValue, float64(sub.Backlog), sub.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descSubsConnected, prometheus.GaugeValue, live, "false")
	ch <- prometheus.MustNewConstMetric(descSubsConnected, prometheus.GaugeValue, durable, "true")
}
