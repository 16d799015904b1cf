package admin

import (
	"context"
	"time"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/status"
)

// HealthSetter sets a gRPC health service's status (rpc.Server does).
type HealthSetter interface {
	SetServing(service string, serving bool)
}

// DefaultHealthInterval is how often WatchHealth reads the daemon's status.
const DefaultHealthInterval = time.Second

// SourceHealthName is the health service name of source id.
func SourceHealthName(id string) string { return "source/" + id }

// SinkHealthName is the health service name of sink id.
func SinkHealthName(id string) string { return "sink/" + id }

// Health returns the health service statuses st implies: one per source
// (serving while running), one per sink (serving unless halted) and the
// overall "" (serving when all of them are).
func Health(st status.Snapshot) map[string]bool {
	out := map[string]bool{}
	all := true
	for _, s := range st.Sources {
		ok := s.State == capture.StateRunning
		out[SourceHealthName(s.ID)] = ok
		all = all && ok
	}
	for _, s := range st.Sinks {
		out[SinkHealthName(s.ID)] = !s.Halted
		all = all && !s.Halted
	}
	out[""] = all
	return out
}

// WatchHealth sets h's statuses from the daemon's status every interval
// (DefaultHealthInterval if zero) until ctx ends. Only changes are set.
func (s *Service) WatchHealth(ctx context.Context, h HealthSetter, interval time.Duration) error {
	return WatchHealth(ctx, s.d.Status, h, interval)
}

// WatchHealth is Service.WatchHealth over any status source.
func WatchHealth(ctx context.Context, snapshot func() status.Snapshot, h HealthSetter, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	known := map[string]bool{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		for name, ok := range Health(snapshot()) {
			if was, seen := known[name]; !seen || was != ok {
				h.SetServing(name, ok)
				known[name] = ok
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
