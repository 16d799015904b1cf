// Package progress shows how far long work has come (the demo's workload,
// copying collections): the count, the rate and the time left. On a
// terminal it redraws one line in place; anywhere else (a log file, a pipe,
// CI) it prints a plain line every few seconds, so that logs stay readable.
//
// A Meter draws only when told of progress (Add or Set): it has no
// goroutine, and work that stalls shows no new line.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
)

// Defaults.
const (
	// DefaultInterval separates plain lines.
	DefaultInterval = 2 * time.Second
	// redrawEvery limits terminal redraws.
	redrawEvery = 100 * time.Millisecond
)

// Meter reports the progress of one piece of work. It is safe for
// concurrent use.
type Meter struct {
	w        io.Writer
	label    string
	unit     string
	total    int64
	tty      bool
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	start     time.Time
	startDone int64 // done when the meter started: a resumed job's rate counts only this run
	done      int64
	drawn     time.Time
	finished  bool
}

// Option changes a Meter.
type Option func(*Meter)

// WithTTY overrides terminal detection.
func WithTTY(tty bool) Option { return func(m *Meter) { m.tty = tty } }

// WithInterval sets the time between plain lines (DefaultInterval).
func WithInterval(d time.Duration) Option { return func(m *Meter) { m.interval = d } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(m *Meter) { m.now = now } }

// WithStart says how much was done before this run (a resumed job):
// the count starts there, the rate counts only what this run does.
func WithStart(done int64) Option { return func(m *Meter) { m.startDone, m.done = done, done } }

// New returns a meter writing to w (nil: io.Discard) for work of total
// units (0 or less: unknown, no percentage or time left). unit names them
// ("operations", "documents").
func New(w io.Writer, label string, total int64, unit string, opts ...Option) *Meter {
	if w == nil {
		w = io.Discard
	}
	m := &Meter{w: w, label: label, unit: unit, total: total, interval: DefaultInterval, now: time.Now}
	if f, ok := w.(*os.File); ok {
		m.tty = isatty.IsTerminal(f.Fd())
	}
	for _, o := range opts {
		o(m)
	}
	m.start = m.now()
	m.drawn = m.start
	return m
}

// Add records n more units done.
func (m *Meter) Add(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += n
	m.maybeDraw()
}

// Set records that done units are done in total.
func (m *Meter) Set(done int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = done
	m.maybeDraw()
}

// Finish draws the final state (on a terminal, ending the line). Later
// calls do nothing.
func (m *Meter) Finish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finished {
		return
	}
	m.finished = true
	line := m.line(m.now(), true)
	if m.tty {
		fmt.Fprintf(m.w, "\r\033[K%s\n", line)
	} else {
		fmt.Fprintln(m.w, line)
	}
}

func (m *Meter) maybeDraw() {
	if m.finished {
		return
	}
	now := m.now()
	if m.tty {
		if now.Sub(m.drawn) < redrawEvery {
			return
		}
		m.drawn = now
		fmt.Fprintf(m.w, "\r\033[K%s", m.line(now, false))
		return
	}
	if now.Sub(m.drawn) < m.interval {
		return
	}
	m.drawn = now
	fmt.Fprintln(m.w, m.line(now, false))
}

// line renders "label: 450/1000 operations (45%), 312/s, 2s left".
func (m *Meter) line(now time.Time, final bool) string {
	elapsed := now.Sub(m.start)
	s := fmt.Sprintf("%s: %d", m.label, m.done)
	if m.total > 0 {
		// The total is an estimate made before the work (documents counted
		// before a copy): when more arrived meanwhile, the work done is the
		// total, never more than 100%.
		total := max(m.total, m.done)
		s += fmt.Sprintf("/%d %s (%d%%)", total, m.unit, 100*m.done/total)
	} else {
		s += " " + m.unit
	}
	var rate float64
	if elapsed > 0 {
		rate = float64(m.done-m.startDone) / elapsed.Seconds()
	}
	if rate > 0 {
		s += fmt.Sprintf(", %s/s", humanRate(rate))
	}
	switch {
	case final:
		s += fmt.Sprintf(", done in %s", round(elapsed))
	case m.total > 0 && rate > 0 && m.done < m.total:
		left := time.Duration(float64(m.total-m.done) / rate * float64(time.Second))
		s += fmt.Sprintf(", %s left", round(left))
	}
	return s
}

func humanRate(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

func round(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}
