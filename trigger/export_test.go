package trigger

import (
	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// Fires is what a database trigger with c (and an unrestricted owner)
// decides for rec, for the shared filter table (change/filtertest): running
// a wasm function per case would test the runtime, not the filter.
func Fires(c DatabaseConfig, metadataDB string, rec outbox.Record) (bool, error) {
	f, err := newFilter(&c, metadataDB, auth.Allow{})
	if err != nil {
		return false, err
	}
	_, ok, err := f.apply(rec)
	return ok, err
}

// DeliverySink is the sink that runs a started trigger's function, for the
// sink conformance suite (sink/sinktest); nil when the trigger is not
// running.
func (m *Manager) DeliverySink(id string) sink.Sink {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.active[id]; a != nil {
		return a.sink
	}
	return nil
}
