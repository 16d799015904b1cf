// Package backoff computes capped exponential waits between retries, as
// capture's reconnects and the sink runner's redeliveries use them.
package backoff

import "time"

// Delay returns min·2^(attempt-1), capped at max (attempt counts from 1).
func Delay(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return time.Duration(minOf(int64(d), int64(max)))
}

func minOf(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}
