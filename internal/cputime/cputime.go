// Package cputime reads the process's CPU time, for benchmarks that report
// CPU per operation next to wall-clock rates: on a shared machine the wall
// clock also measures the wait for a CPU, the CPU time does not.
package cputime

import (
	"syscall"
	"time"
)

// Process returns the user and system CPU time the process has used so far.
func Process() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
