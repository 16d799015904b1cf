package backoff_test

import (
	"testing"
	"time"

	"github.com/godwit-dev/godwit/internal/backoff"
)

func TestDelay(t *testing.T) {
	ms := time.Millisecond
	for attempt, want := range map[int]time.Duration{1: 100 * ms, 2: 200 * ms, 3: 400 * ms, 10: time.Second, 1000: time.Second} {
		if got := backoff.Delay(100*ms, time.Second, attempt); got != want {
			t.Errorf("attempt %d: %v, want %v", attempt, got, want)
		}
	}
}
