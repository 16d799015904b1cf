// Package testwait bounds the waits in godwit's tests.
//
// A bound only turns a hang into a failure: a test waits for an event
// (a channel, outbox.WaitUntil, a runner's WaitAcked), never for time to
// pass, so a generous bound costs nothing when the code works. The bound
// is the same everywhere and sized for a 2-core CI machine running the
// suite under -race beside other work; GODWIT_TEST_WAIT (a Go duration)
// changes it, for example to fail faster while debugging a hang.
package testwait

import (
	"context"
	"os"
	"testing"
	"time"
)

// Long is how long a test waits for anything before it fails.
var Long = fromEnv()

func fromEnv() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("GODWIT_TEST_WAIT")); err == nil && d > 0 {
		return d
	}
	return 4 * time.Minute
}

// Context returns a context that ends after Long or when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Long)
	t.Cleanup(cancel)
	return ctx
}
