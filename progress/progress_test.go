package progress_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/progress"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestMeter(t *testing.T) {
	t.Run("PlainLinesEveryInterval", func(t *testing.T) {
		var out bytes.Buffer
		c := &clock{t: time.Unix(1000, 0)}
		m := progress.New(&out, "workload", 1000, "operations", progress.WithClock(c.now), progress.WithInterval(2*time.Second))
		c.advance(time.Second)
		m.Add(100) // within the interval: no line
		if out.Len() != 0 {
			t.Fatalf("printed before the interval: %q", out.String())
		}
		c.advance(time.Second)
		m.Add(100)
		c.advance(2 * time.Second)
		m.Set(400)
		m.Finish()
		m.Finish()
		want := []string{
			"workload: 200/1000 operations (20%), 100/s, 8s left",
			"workload: 400/1000 operations (40%), 100/s, 6s left",
			"workload: 400/1000 operations (40%), 100/s, done in 4s",
		}
		if got := strings.Split(strings.TrimSpace(out.String()), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("TerminalRedrawsOneLine", func(t *testing.T) {
		var out bytes.Buffer
		c := &clock{t: time.Unix(1000, 0)}
		m := progress.New(&out, "copy shop.orders", 50, "documents", progress.WithClock(c.now), progress.WithTTY(true))
		for range 5 {
			c.advance(200 * time.Millisecond)
			m.Add(10)
		}
		m.Finish()
		s := out.String()
		if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
			t.Fatalf("a terminal gets one line, redrawn, ended once: %q", s)
		}
		if strings.Count(s, "\r\033[K") != 6 || !strings.Contains(s, "copy shop.orders: 30/50 documents (60%), 50/s, 400ms left") {
			t.Fatalf("redraws: %q", s)
		}
	})

	t.Run("ResumedRateCountsThisRun", func(t *testing.T) {
		var out bytes.Buffer
		c := &clock{t: time.Unix(1000, 0)}
		m := progress.New(&out, "workload", 1000, "operations", progress.WithClock(c.now), progress.WithStart(500))
		c.advance(5 * time.Second)
		m.Add(250)
		if got := strings.TrimSpace(out.String()); got != "workload: 750/1000 operations (75%), 50/s, 5s left" {
			t.Fatalf("line = %q", got)
		}
	})

	t.Run("MoreThanTheEstimatedTotal", func(t *testing.T) {
		// Documents counted before a copy: the source grew meanwhile.
		var out bytes.Buffer
		c := &clock{t: time.Unix(1000, 0)}
		m := progress.New(&out, "initial sync", 3, "documents", progress.WithClock(c.now))
		c.advance(5 * time.Second)
		m.Add(5)
		if got := strings.TrimSpace(out.String()); got != "initial sync: 5/5 documents (100%), 1.0/s" {
			t.Fatalf("line = %q", got)
		}
	})

	t.Run("UnknownTotal", func(t *testing.T) {
		var out bytes.Buffer
		c := &clock{t: time.Unix(1000, 0)}
		m := progress.New(&out, "events", 0, "events", progress.WithClock(c.now))
		c.advance(4 * time.Second)
		m.Add(10)
		if got := strings.TrimSpace(out.String()); got != "events: 10 events, 2.5/s" {
			t.Fatalf("line = %q", got)
		}
	})
}
