package wasm

import (
	"fmt"
	"sync"
	"time"
)

// Defaults of Config.LogBytesPerSecond and Config.LogLinesPerSecond.
const (
	DefaultLogBytesPerSecond = 16 << 10
	DefaultLogLinesPerSecond = 50
)

// LogStats counts what a module's guests logged past its log budget.
type LogStats struct {
	// DroppedLines counts lines dropped whole; DroppedBytes every byte
	// dropped, of those lines and of lines cut short.
	DroppedLines, DroppedBytes uint64
}

// logBucket is a module's log budget: token buckets of lines and bytes,
// each holding one second's worth and refilled continuously.
type logBucket struct {
	linesPerSec, bytesPerSec float64

	mu           sync.Mutex
	lines, bytes float64
	last         time.Time
	dropping     bool
	stats        LogStats
}

func newLogBucket(linesPerSec, bytesPerSec int) *logBucket {
	return &logBucket{linesPerSec: float64(linesPerSec), bytesPerSec: float64(bytesPerSec),
		lines: float64(linesPerSec), bytes: float64(bytesPerSec), last: time.Now()}
}

// take returns how much of a line of n bytes may be logged (0: drop it),
// and a notice to log first when the module just went over its budget.
func (b *logBucket) take(n int) (keep int, notice string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.lines = min(b.linesPerSec, b.lines+dt*b.linesPerSec)
		b.bytes = min(b.bytesPerSec, b.bytes+dt*b.bytesPerSec)
		b.last = now
	}
	if b.lines >= 1 && b.bytes >= 1 {
		keep = min(n, int(b.bytes))
		b.lines--
		b.bytes -= float64(keep)
	}
	if keep < n {
		if keep == 0 {
			b.stats.DroppedLines++
		}
		b.stats.DroppedBytes += uint64(n - keep)
		if !b.dropping {
			b.dropping = true
			notice = fmt.Sprintf("function logs more than its budget of %d lines and %d bytes per second: dropping the excess (counted in status and metrics; raise triggers.log_lines_per_second or triggers.log_bytes_per_second)",
				int(b.linesPerSec), int(b.bytesPerSec))
		}
	} else {
		b.dropping = false
	}
	return keep, notice
}

// LogStats returns what the module's guests logged past the budget since
// it was compiled.
func (m *Module) LogStats() LogStats {
	m.logs.mu.Lock()
	defer m.logs.mu.Unlock()
	return m.logs.stats
}
