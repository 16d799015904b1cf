package trigger

import (
	"context"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/trigger/wasm"
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

// SetCompileHook makes m call hook before it compiles a trigger's function
// (not when CreateFunction or UpdateFunction validate one): the tests
// hold a compile in progress with it. Set it before Run.
func SetCompileHook(m *Manager, hook func(context.Context)) { m.compileHook = hook }

// RunningModule is the module running trigger id calls; nil when the
// trigger is not running.
func RunningModule(m *Manager, id string) *wasm.Module {
	if a := m.running(id); a != nil {
		return a.mod.mod
	}
	return nil
}
