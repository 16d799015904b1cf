package trigger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Compiled functions are shared by the triggers (and the Execute and
// RetryDeadLetters calls) using them, and counted: a module replaced by a
// newer one of its function is retired, and closed by whoever drops its
// last reference, in that goroutine. No goroutine is started for it.
// modMu is held over the map and the counts only: never over a metadata
// read, a compile or a Close.

// loadedModule is a compiled function.
type loadedModule struct {
	mod     *wasm.Module
	sha     string
	refs    int
	retired bool
}

// acquire returns the compiled module of fn, compiling it on first use.
// The caller releases it.
func (m *Manager) acquire(ctx context.Context, fn Function) (*loadedModule, error) {
	m.modMu.Lock()
	if lm := m.modules[fn.ID]; lm != nil && lm.sha == fn.SHA256 {
		lm.refs++
		m.modMu.Unlock()
		return lm, nil
	}
	m.modMu.Unlock()
	full, err := m.store.getFunction(ctx, fn.ID, true)
	if err != nil {
		return nil, err
	}
	if m.compileHook != nil {
		m.compileHook(ctx)
	}
	mod, err := m.rt.Compile(ctx, full.Wasm)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	m.modMu.Lock()
	if lm := m.modules[fn.ID]; lm != nil && lm.sha == full.SHA256 {
		// Another caller compiled the same module meanwhile: share it.
		lm.refs++
		m.modMu.Unlock()
		m.closeModule(mod)
		return lm, nil
	}
	lm := &loadedModule{mod: mod, sha: full.SHA256, refs: 1}
	old := m.retireLocked(fn.ID)
	m.modules[fn.ID] = lm
	m.modMu.Unlock()
	m.closeModule(old)
	return lm, nil
}

// release drops a reference taken by acquire (or counted by hand); the
// last one of a retired module closes it. No call runs on it then: every
// call holds a reference.
func (m *Manager) release(lm *loadedModule) {
	m.modMu.Lock()
	lm.refs--
	var closeIt *wasm.Module
	if lm.retired && lm.refs == 0 {
		delete(m.retired, lm)
		closeIt = lm.mod
	}
	m.modMu.Unlock()
	m.closeModule(closeIt)
}

// adopt keeps a module compiled while validating a create or update, so
// the first trigger does not compile it again.
func (m *Manager) adopt(fnID, sha string, mod *wasm.Module) {
	m.modMu.Lock()
	old := m.retireLocked(fnID)
	m.modules[fnID] = &loadedModule{mod: mod, sha: sha}
	m.modMu.Unlock()
	m.closeModule(old)
}

// retire retires the module of a deleted function.
func (m *Manager) retire(fnID string) {
	m.modMu.Lock()
	old := m.retireLocked(fnID)
	m.modMu.Unlock()
	m.closeModule(old)
}

// retireLocked retires the current module of function fnID and returns it
// when nothing uses it, for the caller to close once modMu is released.
// One still in use stays in m.retired until its last user releases it.
func (m *Manager) retireLocked(fnID string) *wasm.Module {
	old := m.modules[fnID]
	if old == nil {
		return nil
	}
	delete(m.modules, fnID)
	old.retired = true
	if old.refs > 0 {
		m.retired[old] = struct{}{}
		return nil
	}
	return old.mod
}

func (m *Manager) closeModule(mod *wasm.Module) {
	if mod == nil {
		return
	}
	if err := mod.Close(context.Background()); err != nil {
		m.log.Warn().Err(err).Msg("close a replaced function module")
	}
}

// closeModules closes every module, current or retired and still in use
// (Close stopped the triggers; an Execute still running gets
// wasm.ErrClosed or is waited for until ctx ends).
func (m *Manager) closeModules(ctx context.Context) error {
	m.modMu.Lock()
	var mods []*wasm.Module
	for id, lm := range m.modules {
		mods = append(mods, lm.mod)
		delete(m.modules, id)
	}
	for lm := range m.retired {
		mods = append(mods, lm.mod)
		delete(m.retired, lm)
	}
	m.modMu.Unlock()
	var errs []error
	for _, mod := range mods {
		errs = append(errs, mod.Close(ctx))
	}
	return errors.Join(errs...)
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// compile validates a module for create and update.
func (m *Manager) compile(ctx context.Context, b []byte) (*wasm.Module, error) {
	if len(b) == 0 {
		return nil, invalid("wasm", "required: the module's bytes")
	}
	if len(b) > m.cfg.MaxModuleBytes {
		return nil, invalid("wasm", "%d bytes is more than the limit of %d", len(b), m.cfg.MaxModuleBytes)
	}
	mod, err := m.rt.Compile(ctx, b)
	if errors.Is(err, wasm.ErrInvalidModule) || errors.Is(err, wasm.ErrABI) {
		return nil, invalid("wasm", "%v", err)
	}
	return mod, budgetError(err)
}
