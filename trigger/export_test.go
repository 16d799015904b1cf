package trigger

import (
	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/outbox"
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
