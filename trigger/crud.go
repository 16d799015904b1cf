package trigger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// TriggerQuery selects triggers; every non-empty field must match.
type TriggerQuery struct {
	UserID, FunctionID string
	Type               Type
	DataSource         string
	Database           string
	Collection         string
}

func (q TriggerQuery) filter() bson.M {
	f := bson.M{}
	set := func(k, v string) {
		if v != "" {
			f[k] = v
		}
	}
	set("user_id", q.UserID)
	set("function_id", q.FunctionID)
	set("type", string(q.Type))
	set("database.data_source", q.DataSource)
	set("database.database", q.Database)
	set("database.collection", q.Collection)
	return f
}

// FunctionQuery selects functions; every non-empty field must match.
type FunctionQuery struct {
	UserID, Name string
}

// checkFunctionRef checks that the trigger's function exists and belongs
// to the trigger's user.
func (m *Manager) checkFunctionRef(ctx context.Context, t *Trigger) error {
	// One query by id and owner: another user's function costs what an
	// unknown id does (see getTriggerOf).
	_, err := m.store.getFunctionOf(ctx, t.FunctionID, t.UserID, false)
	if errors.Is(err, ErrNotFound) {
		return &FieldError{Field: "function_id", Reason: fmt.Sprintf("no function %q of user %q", t.FunctionID, t.UserID), Err: ErrNotFound}
	}
	return err
}

// startAtNow registers a trigger's cursor at the last appended event (of
// the outbox, or of the queue), and makes a scheduled trigger's last run
// now: a trigger fires for what happens after it was created (or enabled
// with skip), not for the retained history or missed runs.
func (m *Manager) startAtNow(t *Trigger) error {
	if t.Type == TypeScheduled {
		t.LastFired = m.cfg.Clock.Now().UTC()
	}
	ob := m.outboxOf(t.Type)
	if _, err := ob.RegisterSink(sinkID(t.ID)); err != nil {
		return err
	}
	return ob.Ack(sinkID(t.ID), ob.LastSeq(), 0)
}

// CreateTrigger validates and stores a new trigger and starts it when it is
// enabled. The id and timestamps are assigned here.
func (m *Manager) CreateTrigger(ctx context.Context, t Trigger) (Trigger, error) {
	t.ID, t.Halted, t.LastFired = newID(), "", time.Time{}
	ts := now()
	t.CreatedAt, t.UpdatedAt = ts, ts
	allow := m.allowOf(t.UserID)
	if err := t.validate(m.sources, allow); err != nil {
		return Trigger{}, err
	}
	if err := t.checkAllow(allow); err != nil {
		return Trigger{}, err
	}
	if err := m.lockOps(); err != nil {
		return Trigger{}, err
	}
	defer m.ops.Unlock()
	if err := m.checkFunctionRef(ctx, &t); err != nil {
		return Trigger{}, err
	}
	if taken, err := nameTaken(ctx, m.store.triggers, t.UserID, t.Name, t.ID); err != nil {
		return Trigger{}, err
	} else if taken {
		return Trigger{}, fmt.Errorf("trigger %q of user %q: %w", t.Name, t.UserID, ErrExists)
	}
	if err := m.checkTriggerQuota(ctx, t.UserID); err != nil {
		return Trigger{}, err
	}
	if err := m.startAtNow(&t); err != nil {
		return Trigger{}, err
	}
	if err := m.store.putTrigger(ctx, t); err != nil {
		return Trigger{}, err
	}
	m.reconcile(ctx, &t, t.ID, false)
	m.changed(ctx, "create", t)
	return t, nil
}

// UpdateTrigger replaces a trigger's name, configuration, function,
// writes and enabled flag. The type cannot change; a database trigger keeps
// its cursor.
func (m *Manager) UpdateTrigger(ctx context.Context, t Trigger) (Trigger, error) {
	if t.ID == "" {
		return Trigger{}, invalid("id", "required")
	}
	if err := m.lockOps(); err != nil {
		return Trigger{}, err
	}
	defer m.ops.Unlock()
	old, err := m.store.getTrigger(ctx, t.ID)
	if err != nil {
		return Trigger{}, err
	}
	if t.UserID == "" {
		t.UserID = old.UserID
	}
	if t.UserID != old.UserID {
		// Moving a trigger to another owner is how an admin revives the
		// triggers of a revoked user without giving the user a token back.
		if id, ok := auth.FromContext(ctx); !ok || !id.IsAdmin() {
			return Trigger{}, invalid("user_id", "only an admin moves a trigger to another owner")
		}
	}
	if t.Type != old.Type {
		return Trigger{}, invalid("trigger_type", "cannot change from %s to %s; create a new trigger", old.Type, t.Type)
	}
	t.CreatedAt, t.Halted, t.LastFired = old.CreatedAt, old.Halted, old.LastFired
	t.UpdatedAt = now()
	allow := m.allowOf(t.UserID)
	if err := t.validate(m.sources, allow); err != nil {
		return Trigger{}, err
	}
	if err := t.checkAllow(allow); err != nil {
		return Trigger{}, err
	}
	if err := m.checkFunctionRef(ctx, &t); err != nil {
		return Trigger{}, err
	}
	if taken, err := nameTaken(ctx, m.store.triggers, t.UserID, t.Name, t.ID); err != nil {
		return Trigger{}, err
	} else if taken {
		return Trigger{}, fmt.Errorf("trigger %q of user %q: %w", t.Name, t.UserID, ErrExists)
	}
	if err := m.store.putTrigger(ctx, t); err != nil {
		return Trigger{}, err
	}
	m.reconcile(ctx, &t, t.ID, true)
	m.changed(ctx, "update", t)
	return t, nil
}

// EnableTrigger enables a trigger and clears a halt. skipToNow moves the
// trigger's cursor past every event captured (or queued) so far, and makes
// a scheduled trigger forget the runs it missed.
func (m *Manager) EnableTrigger(ctx context.Context, id string, skipToNow bool) (Trigger, error) {
	if err := m.lockOps(); err != nil {
		return Trigger{}, err
	}
	defer m.ops.Unlock()
	t, err := m.store.getTrigger(ctx, id)
	if err != nil {
		return Trigger{}, err
	}
	restart := t.Halted != "" || skipToNow
	t.Enabled, t.Halted = true, ""
	t.UpdatedAt = now()
	if skipToNow {
		m.stop(id)
		if err := m.startAtNow(&t); err != nil {
			return Trigger{}, err
		}
	}
	if err := m.store.putTrigger(ctx, t); err != nil {
		return Trigger{}, err
	}
	m.reconcile(ctx, &t, id, restart)
	m.changed(ctx, "enable", t)
	return t, nil
}

// DisableTrigger stops a trigger. A database trigger's cursor stays where
// it is; enabling resumes from there.
func (m *Manager) DisableTrigger(ctx context.Context, id string) (Trigger, error) {
	if err := m.lockOps(); err != nil {
		return Trigger{}, err
	}
	defer m.ops.Unlock()
	t, err := m.store.getTrigger(ctx, id)
	if err != nil {
		return Trigger{}, err
	}
	t.Enabled = false
	t.UpdatedAt = now()
	if err := m.store.putTrigger(ctx, t); err != nil {
		return Trigger{}, err
	}
	m.reconcile(ctx, &t, id, false)
	m.changed(ctx, "disable", t)
	return t, nil
}

// DeleteTrigger stops and deletes a trigger.
func (m *Manager) DeleteTrigger(ctx context.Context, id string) error {
	if err := m.lockOps(); err != nil {
		return err
	}
	defer m.ops.Unlock()
	t, err := m.store.getTrigger(ctx, id)
	if err != nil {
		return err
	}
	m.reconcile(ctx, nil, id, false)
	if err := m.store.deleteTrigger(ctx, id); err != nil {
		return err
	}
	m.changed(ctx, "delete", t)
	// The cursor and dead letters go with the trigger.
	if err := m.outboxOf(t.Type).RemoveSink(sinkID(id)); err != nil {
		m.log.Warn().Err(err).Str("trigger_id", id).Msg("remove trigger cursor")
	}
	m.statsMu.Lock()
	delete(m.stats, id)
	m.statsMu.Unlock()
	return nil
}

// GetTrigger returns a trigger.
func (m *Manager) GetTrigger(ctx context.Context, id string) (Trigger, error) {
	return m.store.getTrigger(ctx, id)
}

// GetTriggerOf returns trigger id if owner owns it, and otherwise the
// ErrNotFound of an id that does not exist. Both cases run the same single
// query (by id and owner), so neither the answer nor the time it takes
// tells another user's id from an unknown one: what the API uses for
// callers that are not admins.
func (m *Manager) GetTriggerOf(ctx context.Context, id, owner string) (Trigger, error) {
	return m.store.getTriggerOf(ctx, id, owner)
}

// QueryTriggers returns the matching triggers, by user and name.
func (m *Manager) QueryTriggers(ctx context.Context, q TriggerQuery) ([]Trigger, error) {
	return m.store.findTriggers(ctx, q.filter())
}

// CreateFunction validates (compiles and instantiates) and stores a new
// function. It is enabled.
func (m *Manager) CreateFunction(ctx context.Context, f Function) (Function, error) {
	f.ID, f.Enabled = newID(), true
	ts := now()
	f.CreatedAt, f.UpdatedAt = ts, ts
	if f.Type == "" {
		f.Type = FunctionTypeWasm
	}
	if err := f.validate(); err != nil {
		return Function{}, err
	}
	// Checked again under the lock; first here, so a user past a quota
	// cannot make godwit compile modules it will refuse.
	if err := m.checkFunctionQuota(ctx, f.UserID, "", int64(len(f.Wasm))); err != nil {
		return Function{}, err
	}
	mod, err := m.compile(ctx, f.Wasm)
	if err != nil {
		return Function{}, err
	}
	if err := m.lockOps(); err != nil {
		_ = mod.Close(ctx)
		return Function{}, err
	}
	defer m.ops.Unlock()
	if taken, err := nameTaken(ctx, m.store.functions, f.UserID, f.Name, f.ID); err != nil || taken {
		_ = mod.Close(ctx)
		if err == nil {
			err = fmt.Errorf("function %q of user %q: %w", f.Name, f.UserID, ErrExists)
		}
		return Function{}, err
	}
	if err := m.checkFunctionQuota(ctx, f.UserID, "", int64(len(f.Wasm))); err != nil {
		_ = mod.Close(ctx)
		return Function{}, err
	}
	f.Size, f.SHA256 = int64(len(f.Wasm)), digest(f.Wasm)
	if f.ModuleID, err = m.store.putModule(ctx, f.Wasm); err != nil {
		_ = mod.Close(ctx)
		return Function{}, err
	}
	if err := m.store.putFunction(ctx, f); err != nil {
		_ = mod.Close(ctx)
		_ = m.store.deleteModule(ctx, f.ModuleID)
		return Function{}, err
	}
	m.adopt(f.ID, f.SHA256, mod)
	f.Wasm = nil
	m.functionChanged(ctx, "create", f)
	return f, nil
}

// UpdateFunction renames a function and, when f.Wasm is set, replaces its
// module; its running triggers switch to the new module.
func (m *Manager) UpdateFunction(ctx context.Context, f Function) (Function, error) {
	if f.ID == "" {
		return Function{}, invalid("id", "required")
	}
	var mod *wasm.Module
	if len(f.Wasm) > 0 {
		compiled, err := m.compile(ctx, f.Wasm)
		if err != nil {
			return Function{}, err
		}
		mod = compiled
		defer func() {
			if mod != nil {
				_ = mod.Close(ctx)
			}
		}()
	}
	if err := m.lockOps(); err != nil {
		return Function{}, err
	}
	defer m.ops.Unlock()
	old, err := m.store.getFunction(ctx, f.ID, false)
	if err != nil {
		return Function{}, err
	}
	if f.UserID != "" && f.UserID != old.UserID {
		return Function{}, invalid("user_id", "a function cannot change owner")
	}
	if f.Type != "" && f.Type != old.Type {
		return Function{}, invalid("function_type", "cannot change")
	}
	upd := old
	if f.Name != "" {
		upd.Name = f.Name
	}
	if err := upd.validate(); err != nil {
		return Function{}, err
	}
	if taken, err := nameTaken(ctx, m.store.functions, upd.UserID, upd.Name, upd.ID); err != nil {
		return Function{}, err
	} else if taken {
		return Function{}, fmt.Errorf("function %q of user %q: %w", upd.Name, upd.UserID, ErrExists)
	}
	upd.UpdatedAt = now()
	if len(f.Wasm) > 0 {
		if err := m.checkFunctionQuota(ctx, upd.UserID, upd.ID, int64(len(f.Wasm))); err != nil {
			return Function{}, err
		}
		upd.Size, upd.SHA256 = int64(len(f.Wasm)), digest(f.Wasm)
		if upd.ModuleID, err = m.store.putModule(ctx, f.Wasm); err != nil {
			return Function{}, err
		}
	}
	if err := m.store.putFunction(ctx, upd); err != nil {
		return Function{}, err
	}
	if upd.ModuleID != old.ModuleID {
		_ = m.store.deleteModule(ctx, old.ModuleID)
		m.adopt(upd.ID, upd.SHA256, mod)
		mod = nil
		if err := m.reconcileUsers(ctx, upd.ID); err != nil {
			return Function{}, err
		}
	}
	m.functionChanged(ctx, "update", upd)
	return upd, nil
}

// reconcileUsers re-evaluates every trigger calling function id.
func (m *Manager) reconcileUsers(ctx context.Context, fnID string) error {
	ts, err := m.store.findTriggers(ctx, bson.M{"function_id": fnID})
	if err != nil {
		return err
	}
	for i := range ts {
		m.reconcile(ctx, &ts[i], ts[i].ID, false)
	}
	return nil
}

func (m *Manager) setFunctionEnabled(ctx context.Context, id string, enabled bool) (Function, error) {
	if err := m.lockOps(); err != nil {
		return Function{}, err
	}
	defer m.ops.Unlock()
	f, err := m.store.getFunction(ctx, id, false)
	if err != nil {
		return Function{}, err
	}
	f.Enabled = enabled
	f.UpdatedAt = now()
	if err := m.store.putFunction(ctx, f); err != nil {
		return Function{}, err
	}
	action := "disable"
	if enabled {
		action = "enable"
	}
	m.functionChanged(ctx, action, f)
	return f, m.reconcileUsers(ctx, id)
}

// EnableFunction lets the function's triggers call it again.
func (m *Manager) EnableFunction(ctx context.Context, id string) (Function, error) {
	return m.setFunctionEnabled(ctx, id, true)
}

// DisableFunction pauses every trigger calling the function; database
// triggers keep their cursors.
func (m *Manager) DisableFunction(ctx context.Context, id string) (Function, error) {
	return m.setFunctionEnabled(ctx, id, false)
}

// DeleteFunction deletes a function no trigger calls.
func (m *Manager) DeleteFunction(ctx context.Context, id string) error {
	if err := m.lockOps(); err != nil {
		return err
	}
	defer m.ops.Unlock()
	f, err := m.store.getFunction(ctx, id, false)
	if err != nil {
		return err
	}
	users, err := m.store.findTriggers(ctx, bson.M{"function_id": id})
	if err != nil {
		return err
	}
	if len(users) > 0 {
		names := make([]string, len(users))
		for i, t := range users {
			names[i] = t.Name
		}
		return fmt.Errorf("function %s: %w: %s", f.Name, ErrInUse, strings.Join(names, ", "))
	}
	if err := m.store.deleteFunction(ctx, id); err != nil {
		return err
	}
	_ = m.store.deleteModule(ctx, f.ModuleID)
	m.retire(id)
	m.functionChanged(ctx, "delete", f)
	return nil
}

// GetFunction returns a function, with its module when withWasm is set.
func (m *Manager) GetFunction(ctx context.Context, id string, withWasm bool) (Function, error) {
	return m.store.getFunction(ctx, id, withWasm)
}

// GetFunctionOf is GetTriggerOf for functions (without the module).
func (m *Manager) GetFunctionOf(ctx context.Context, id, owner string) (Function, error) {
	return m.store.getFunctionOf(ctx, id, owner, false)
}

// QueryFunctions returns the matching functions (without modules).
func (m *Manager) QueryFunctions(ctx context.Context, q FunctionQuery) ([]Function, error) {
	f := bson.M{}
	if q.UserID != "" {
		f["user_id"] = q.UserID
	}
	if q.Name != "" {
		f["name"] = q.Name
	}
	return m.store.findFunctions(ctx, f)
}

// now is the current time at the precision MongoDB stores (milliseconds),
// so what a call returns equals what a later read returns.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
