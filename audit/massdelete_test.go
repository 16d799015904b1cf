package audit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// mdConfig: more than 5 deletes within 10s is a burst; 3 sample keys.
func mdConfig(path string) audit.Config {
	return audit.Config{Path: path, MassDelete: audit.MassDelete{Threshold: 5, Window: 10 * time.Second, Sample: 3}}
}

// deletes returns n deletes in shop.<coll> with ids from id, the first at
// start and then every step.
func deletes(coll string, id, n int, start, step time.Duration) []evt {
	out := make([]evt, n)
	for i := range out {
		out[i] = del(coll, id+i, start+time.Duration(i)*step)
	}
	return out
}

// later is an event of the same source far after everything: it closes
// every open window.
func later(at time.Duration) evt {
	return evt{op: "insert", db: "other", coll: "x", id: 1, at: at}
}

// run delivers the events in batches of size batch (all at once if 0) to a
// fresh sink, closes it, and returns the mass-delete records.
func run(t *testing.T, cfg audit.Config, batch int, events ...evt) []audit.Record {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = logPath(t)
	}
	s := open(t, cfg)
	f := &feed{}
	recs := f.evts(events...)
	if batch == 0 {
		batch = len(recs)
	}
	for i := 0; i < len(recs); i += batch {
		deliver(t, s, recs[i:min(i+batch, len(recs))])
	}
	closeSink(t, s)
	return ofClass(readLog(t, cfg.Path), audit.ClassMassDelete)
}

func cat(groups ...[]evt) []evt {
	var out []evt
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func TestSink_Deliver_massDelete(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want int
	}{{4, 0}, {5, 0}, {6, 1}} {
		t.Run(fmt.Sprintf("Threshold/%dDeletes", tc.n), func(t *testing.T) {
			got := run(t, mdConfig(""), 0, cat(deletes("orders", 1, tc.n, 0, time.Second), []evt{later(time.Minute)})...)
			if len(got) != tc.want {
				t.Fatalf("%d mass-delete records, want %d", len(got), tc.want)
			}
			if tc.want == 0 {
				return
			}
			r := got[0]
			b := r.Burst
			if r.Severity != audit.SeverityHigh || r.Op != "delete" || *r.NS != (change.Namespace{DB: "shop", Coll: "orders"}) || r.Source != "src" {
				t.Errorf("record %+v", r)
			}
			if b.Count != 6 || b.FirstSeq != 1 || b.LastSeq != 6 || !b.FirstTime.Equal(t0) || !b.LastTime.Equal(t0.Add(5*time.Second)) {
				t.Errorf("burst %+v", b)
			}
			if !r.Time.Equal(t0) || r.ClusterTime == nil || r.ClusterTime.T != uint32(t0.Unix()) {
				t.Errorf("time %v cluster_time %+v", r.Time, r.ClusterTime)
			}
			if r.Seq != 7 {
				t.Errorf("seq %d, want 7 (the event that closed the window)", r.Seq)
			}
			if len(b.SampleKeys) != 3 || string(b.SampleKeys[0]) != `{"_id":1}` || string(b.SampleKeys[2]) != `{"_id":3}` {
				t.Errorf("sample keys %s", b.SampleKeys)
			}
			if b.Threshold != 5 || b.WindowSeconds != 10 || b.Ended != audit.EndedWindow {
				t.Errorf("settings %+v", b)
			}
		})
	}
	t.Run("WindowEdge", func(t *testing.T) {
		// 6 deletes spanning exactly the window are not "within" it...
		if got := run(t, mdConfig(""), 0, cat(deletes("orders", 1, 6, 0, 2*time.Second), []evt{later(time.Minute)})...); len(got) != 0 {
			t.Fatalf("6 deletes over 10s: %d records", len(got))
		}
		// ...1ms less is.
		ev := cat(deletes("orders", 1, 5, 0, 2*time.Second), []evt{del("orders", 6, 10*time.Second-time.Millisecond), later(time.Minute)})
		if got := run(t, mdConfig(""), 0, ev...); len(got) != 1 {
			t.Fatalf("6 deletes over 9.999s: %d records", len(got))
		}
	})
	t.Run("SplitByWindow", func(t *testing.T) {
		// Two bursts far apart are two records.
		got := run(t, mdConfig(""), 0, cat(deletes("orders", 1, 6, 0, time.Second), deletes("orders", 100, 8, 30*time.Second, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 2 || got[0].Burst.Count != 6 || got[1].Burst.Count != 8 || got[1].Burst.FirstSeq != 7 {
			t.Fatalf("records %+v", got)
		}
		// The first burst is recorded when the second group's time closes
		// its window, before the second one starts.
		if got[0].Seq != 7 {
			t.Errorf("first burst written at seq %d, want 7", got[0].Seq)
		}
		// 3 + 3 deletes with the window between them never reach 6 within it.
		got = run(t, mdConfig(""), 0, cat(deletes("orders", 1, 3, 0, time.Second), deletes("orders", 10, 3, 11*time.Second, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 0 {
			t.Fatalf("3+3 deletes 11s apart: %+v", got)
		}
	})
	t.Run("SlidingWindow", func(t *testing.T) {
		// 3 deletes late in one 10s span and 3 early in the next are 6
		// within 2s: a burst, wherever a fixed window would have split it.
		got := run(t, mdConfig(""), 0, cat([]evt{del("orders", 1, 0)}, deletes("orders", 2, 3, 9*time.Second, 300*time.Millisecond), deletes("orders", 5, 3, 10*time.Second, 300*time.Millisecond), []evt{later(time.Minute)})...)
		if len(got) != 1 || got[0].Burst.Count != 6 || got[0].Burst.FirstSeq != 2 {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("LongBurstIsOneRecord", func(t *testing.T) {
		got := run(t, mdConfig(""), 7, cat(deletes("orders", 1, 300, 0, 100*time.Millisecond), []evt{later(time.Hour)})...)
		if len(got) != 1 || got[0].Burst.Count != 300 || got[0].Burst.LastSeq != 300 {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("TrickleAfterBurstIsNotPartOfIt", func(t *testing.T) {
		// A slow trickle after the burst does not keep it open forever.
		ev := cat(deletes("orders", 1, 6, 0, time.Second), deletes("orders", 100, 20, 10*time.Second, 5*time.Second))
		got := run(t, mdConfig(""), 3, ev...)
		if len(got) != 1 || got[0].Burst.Count != 6 || got[0].Burst.Ended != audit.EndedWindow {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("AcrossBatches", func(t *testing.T) {
		got := run(t, mdConfig(""), 1, cat(deletes("orders", 1, 9, 0, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 1 || got[0].Burst.Count != 9 {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("PerNamespace", func(t *testing.T) {
		got := run(t, mdConfig(""), 0, cat(deletes("a", 1, 3, 0, time.Second), deletes("b", 1, 3, 0, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 0 {
			t.Fatalf("3 deletes in each of two namespaces: %+v", got)
		}
		got = run(t, mdConfig(""), 0, cat(deletes("b", 1, 6, 0, time.Second), deletes("a", 1, 6, 0, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 2 || got[0].NS.Coll != "a" || got[1].NS.Coll != "b" {
			t.Fatalf("two bursts closed by one event must come in namespace order: %+v", got)
		}
	})
	t.Run("PerSource", func(t *testing.T) {
		path := logPath(t)
		s := open(t, mdConfig(path))
		a, b := &feed{source: "a"}, &feed{source: "b"}
		deliver(t, s, a.evts(deletes("orders", 1, 6, 0, time.Second)...))
		b.seq = a.seq
		// Source b's clock says nothing about source a's window.
		deliver(t, s, b.evts(later(time.Hour)))
		if n := len(ofClass(readLog(t, path), audit.ClassMassDelete)); n != 0 {
			t.Fatalf("another source's event closed the burst")
		}
		a.seq = b.seq
		deliver(t, s, a.evts(later(time.Hour)))
		closeSink(t, s)
		if got := ofClass(readLog(t, path), audit.ClassMassDelete); len(got) != 1 || got[0].Source != "a" {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("Ignore", func(t *testing.T) {
		cfg := mdConfig("")
		cfg.MassDelete.Ignore = []string{"shop.sess*"}
		got := run(t, cfg, 0, cat(deletes("sessions", 1, 10, 0, time.Second), deletes("orders", 1, 10, 0, time.Second), []evt{later(time.Minute)})...)
		if len(got) != 1 || got[0].NS.Coll != "orders" {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("Disabled", func(t *testing.T) {
		cfg := mdConfig("")
		cfg.Disable = []string{audit.ClassMassDelete}
		if got := run(t, cfg, 0, cat(deletes("orders", 1, 10, 0, time.Second), []evt{later(time.Minute)})...); len(got) != 0 {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("ClusterTimeOnly", func(t *testing.T) {
		// Without wallTime, times are clusterTime seconds.
		ev := deletes("orders", 1, 6, 0, 1500*time.Millisecond)
		for i := range ev {
			ev[i].noWall = true
		}
		l := later(time.Minute)
		l.noWall = true
		got := run(t, mdConfig(""), 0, append(ev, l)...)
		if len(got) != 1 || !got[0].Burst.LastTime.Equal(t0.Add(7*time.Second)) || got[0].WallTime != nil {
			t.Fatalf("records %+v", got)
		}
	})
	t.Run("FlushedOnClose", func(t *testing.T) {
		path := logPath(t)
		s := open(t, mdConfig(path))
		f := &feed{}
		deliver(t, s, f.evts(cat(deletes("orders", 1, 7, 0, time.Second), []evt{{op: "insert", db: "shop", coll: "orders", id: 99, at: 7 * time.Second}})...))
		closeSink(t, s)
		got := ofClass(readLog(t, path), audit.ClassMassDelete)
		if len(got) != 1 || got[0].Burst.Count != 7 || got[0].Burst.Ended != audit.EndedClose || got[0].Seq != 8 {
			t.Fatalf("records %+v", got)
		}
		// After the restart the burst is not open any more: 3 more deletes
		// in the same window are no new burst, and nothing is recorded twice.
		s = open(t, mdConfig(path))
		deliver(t, s, f.evts(cat(deletes("orders", 100, 3, 8*time.Second, 100*time.Millisecond), []evt{later(time.Minute)})...))
		closeSink(t, s)
		if got := ofClass(readLog(t, path), audit.ClassMassDelete); len(got) != 1 {
			t.Fatalf("records after restart %+v", got)
		}
	})
	t.Run("OpenBurstSurvivesCrash", func(t *testing.T) {
		path := logPath(t)
		s := open(t, mdConfig(path))
		f := &feed{}
		deliver(t, s, f.evts(deletes("orders", 1, 6, 0, time.Second)...))
		audit.Crash(s)
		s = open(t, mdConfig(path))
		deliver(t, s, f.evts(deletes("orders", 7, 2, 6*time.Second, time.Second)...))
		audit.Crash(s)
		s = open(t, mdConfig(path))
		deliver(t, s, f.evts(later(time.Minute)))
		closeSink(t, s)
		got := ofClass(readLog(t, path), audit.ClassMassDelete)
		if len(got) != 1 || got[0].Burst.Count != 8 || got[0].Burst.Ended != audit.EndedWindow {
			t.Fatalf("records %+v", got)
		}
	})
}

// TestSink_Deliver_crash simulates SIGKILL at each point of the write path
// and checks that after a restart and redelivery every record is in the log
// exactly once.
func TestSink_Deliver_crash(t *testing.T) {
	// Events whose records depend on state across batches: a burst opened
	// in batch 1 and closed in batch 2, drops in both.
	f := &feed{}
	batch1 := f.evts(cat([]evt{{op: "drop", db: "shop", coll: "a"}}, deletes("orders", 1, 6, 0, time.Second))...)
	batch2 := f.evts(evt{op: "drop", db: "shop", coll: "b", at: 30 * time.Second}, evt{op: "dropDatabase", db: "tmp", at: 31 * time.Second})
	batch3 := f.evts(cat(deletes("users", 1, 6, 40*time.Second, time.Second), []evt{later(2 * time.Minute)})...)

	// reference: the log of an uncrashed run.
	refPath := logPath(t)
	s := open(t, mdConfig(refPath))
	for _, b := range [][]outbox.Record{batch1, batch2, batch3} {
		deliver(t, s, b)
	}
	closeSink(t, s)
	want := summarize(readLog(t, refPath))

	for _, point := range []string{"before-log-sync", "after-log-sync", "before-state"} {
		for crashIn := range 3 {
			t.Run(fmt.Sprintf("%s/batch%d", point, crashIn+1), func(t *testing.T) {
				path := logPath(t)
				s := open(t, mdConfig(path))
				batches := [][]outbox.Record{batch1, batch2, batch3}
				for i, b := range batches {
					if i == crashIn {
						audit.FailAt(s, point)
						if err := s.Deliver(t.Context(), b); err == nil {
							t.Fatalf("failpoint %s did not fire", point)
						}
						audit.Crash(s)
						s = open(t, mdConfig(path))
						// The runner redelivers the unacknowledged batch,
						// and (as after any restart) the one before too.
						if i > 0 {
							deliver(t, s, batches[i-1])
						}
					}
					deliver(t, s, b)
				}
				closeSink(t, s)
				if got := summarize(readLog(t, path)); got != want {
					t.Fatalf("after crash:\n%s\nwant:\n%s", got, want)
				}
			})
		}
	}
	t.Run("TornLastLine", func(t *testing.T) {
		path := logPath(t)
		s := open(t, mdConfig(path))
		deliver(t, s, batch1)
		deliver(t, s, batch2)
		audit.Crash(s)
		// A crash in the middle of writing the next batch's lines.
		fh, err := openAppend(path)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString(`{"index":4,"prev":"abc`)
		fh.Close()
		s = open(t, mdConfig(path))
		deliver(t, s, batch2)
		deliver(t, s, batch3)
		closeSink(t, s)
		if got := summarize(readLog(t, path)); got != want {
			t.Fatalf("after torn line:\n%s\nwant:\n%s", got, want)
		}
	})
	t.Run("RetryAfterFailedWrite", func(t *testing.T) {
		// A write that fails without a crash is retried by the runner on
		// the same sink.
		path := logPath(t)
		s := open(t, mdConfig(path))
		deliver(t, s, batch1)
		audit.FailAt(s, "before-log-sync")
		if err := s.Deliver(t.Context(), batch2); err == nil {
			t.Fatal("failpoint did not fire")
		}
		deliver(t, s, batch2)
		deliver(t, s, batch3)
		closeSink(t, s)
		if got := summarize(readLog(t, path)); got != want {
			t.Fatalf("after retry:\n%s\nwant:\n%s", got, want)
		}
	})
}

// summarize renders the parts of records that must not depend on crashes.
func summarize(recs []audit.Record) string {
	var out string
	for _, r := range recs {
		out += fmt.Sprintf("%d %s seq=%d ns=%v", r.Index, r.Class, r.Seq, r.NS)
		if r.Burst != nil {
			out += fmt.Sprintf(" count=%d %d..%d %s", r.Burst.Count, r.Burst.FirstSeq, r.Burst.LastSeq, r.Burst.Ended)
		}
		out += "\n"
	}
	return out
}
