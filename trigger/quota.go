package trigger

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Defaults of the per-user quotas (Config).
const (
	DefaultMaxFunctionsPerUser         = 100
	DefaultMaxTriggersPerUser          = 100
	DefaultMaxModuleBytesPerUser int64 = 256 << 20
)

// ErrExhausted is returned (wrapped in a *LimitError) by CreateTrigger,
// CreateFunction and UpdateFunction when the change would take a user past
// a quota (functions, triggers, module bytes), and by CreateFunction and
// UpdateFunction when the functions' memory budget had no room to validate
// the module before the call's deadline.
var ErrExhausted = errors.New("resource exhausted")

// LimitError names the limit a request would pass and the setting that
// raises it. The API answers it with gRPC ResourceExhausted.
type LimitError struct {
	// Setting is the configuration field of the limit, for example
	// "triggers.max_functions_per_user".
	Setting string
	Reason  string
}

func (e *LimitError) Error() string { return e.Reason }

func (e *LimitError) Unwrap() error { return ErrExhausted }

// GRPCStatus makes the API (which passes status errors through) answer
// ResourceExhausted.
func (e *LimitError) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

func (c *Config) quotaDefaults() {
	if c.MaxFunctionsPerUser == 0 {
		c.MaxFunctionsPerUser = DefaultMaxFunctionsPerUser
	}
	if c.MaxTriggersPerUser == 0 {
		c.MaxTriggersPerUser = DefaultMaxTriggersPerUser
	}
	if c.MaxModuleBytesPerUser == 0 {
		c.MaxModuleBytesPerUser = DefaultMaxModuleBytesPerUser
	}
}

// checkTriggerQuota refuses a new trigger of a user who has as many as the
// quota allows. Called with m.ops held, so concurrent creates cannot both
// pass.
func (m *Manager) checkTriggerQuota(ctx context.Context, user string) error {
	q := m.cfg.MaxTriggersPerUser
	if q < 0 {
		return nil
	}
	n, err := m.store.triggers.CountDocuments(ctx, bson.M{"user_id": user})
	if err != nil {
		return fmt.Errorf("count triggers of user %s: %w", user, err)
	}
	if n >= int64(q) {
		return &LimitError{Setting: "triggers.max_triggers_per_user", Reason: fmt.Sprintf(
			"user %q has %d triggers, the quota is %d: delete one, or ask an administrator to raise triggers.max_triggers_per_user", user, n, q)}
	}
	return nil
}

// checkFunctionQuota refuses a function (a new one when replacing is "",
// else a new module for function replacing) that would take its user past
// the number of functions or the total module bytes allowed.
func (m *Manager) checkFunctionQuota(ctx context.Context, user, replacing string, size int64) error {
	fns, err := m.store.findFunctions(ctx, bson.M{"user_id": user})
	if err != nil {
		return err
	}
	if q := m.cfg.MaxFunctionsPerUser; replacing == "" && q >= 0 && len(fns) >= q {
		return &LimitError{Setting: "triggers.max_functions_per_user", Reason: fmt.Sprintf(
			"user %q has %d functions, the quota is %d: delete one, or ask an administrator to raise triggers.max_functions_per_user", user, len(fns), q)}
	}
	q := m.cfg.MaxModuleBytesPerUser
	if q < 0 {
		return nil
	}
	total := size
	for _, f := range fns {
		if f.ID != replacing {
			total += f.Size
		}
	}
	if total > q {
		return &LimitError{Setting: "triggers.max_module_bytes_per_user", Reason: fmt.Sprintf(
			"user %q's modules would take %d bytes, the quota is %d: delete or shrink a function, or ask an administrator to raise triggers.max_module_bytes_per_user", user, total, q)}
	}
	return nil
}

// budgetError turns the wasm runtime's memory budget error into a
// LimitError.
func budgetError(err error) error {
	if errors.Is(err, wasm.ErrMemoryBudget) {
		return &LimitError{Setting: "triggers.max_memory_bytes", Reason: "wasm: " + err.Error()}
	}
	return err
}
