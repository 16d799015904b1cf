package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/internal/testwait"
)

// queryLog writes a log with a spread of classes, namespaces, sources and
// times, and returns its path.
func queryLog(t *testing.T) string {
	t.Helper()
	path := logPath(t)
	s := open(t, mdConfig(path))
	a, b := &feed{source: "a"}, &feed{source: "b"}
	deliver(t, s, a.evts(
		evt{op: "drop", db: "shop", coll: "orders", at: 0},                    // 1 drop high
		evt{op: "rename", db: "shop", coll: "x", to: "arch.x", at: time.Hour}, // 2 rename high
		evt{op: "dropDatabase", db: "tmp", at: 2 * time.Hour},                 // 3 critical
	))
	b.seq = a.seq
	deliver(t, s, b.evts(cat(
		deletes("users", 1, 6, 3*time.Hour, time.Second),                         // 4 mass_delete high, written at the next event
		[]evt{{op: "dropIndexes", db: "shop", coll: "users", at: 4 * time.Hour}}, // 5 medium
	)...))
	if err := s.RecordSystem(context.Background(), audit.SystemEvent{Class: audit.ClassDaemonStop, Time: t0.Add(5 * time.Hour)}); err != nil { // 6 low
		t.Fatal(err)
	}
	closeSink(t, s)
	return path
}

func indexes(t *testing.T, path string, f audit.Filter) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []uint64
	for r, err := range audit.Query(fh, f) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Index)
	}
	return fmt.Sprint(out)
}

func TestQuery(t *testing.T) {
	path := queryLog(t)
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"All", audit.Filter{}, "[1 2 3 4 5 6]"},
		{"Since", audit.Filter{Since: t0.Add(2 * time.Hour)}, "[3 4 5 6]"},
		{"Until", audit.Filter{Until: t0.Add(2 * time.Hour)}, "[1 2]"},
		{"Range", audit.Filter{Since: t0.Add(time.Hour), Until: t0.Add(3*time.Hour + time.Second)}, "[2 3 4]"},
		{"Namespace", audit.Filter{Namespaces: []change.Glob{change.MustGlob("shop.*")}}, "[1 2 4 5]"},
		{"NamespaceRenameTarget", audit.Filter{Namespaces: []change.Glob{change.MustGlob("arch.*")}}, "[2]"},
		{"NamespaceDatabase", audit.Filter{Namespaces: []change.Glob{change.MustGlob("tmp")}}, "[3]"},
		{"Class", audit.Filter{Classes: []string{audit.ClassMassDelete, audit.ClassDaemonStop}}, "[4 6]"},
		{"MinSeverity", audit.Filter{MinSeverity: audit.SeverityHigh}, "[1 2 3 4]"},
		{"MinSeverityCritical", audit.Filter{MinSeverity: audit.SeverityCritical}, "[3]"},
		{"Source", audit.Filter{Source: "b"}, "[4 5]"},
		{"Combined", audit.Filter{Source: "b", MinSeverity: audit.SeverityHigh, Namespaces: []change.Glob{change.MustGlob("shop.users")}}, "[4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := indexes(t, path, tc.f); got != tc.want {
				t.Fatalf("indexes %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("BadLine", func(t *testing.T) {
		ls := lines(t, path)
		ls[2] = []byte("not a record\n")
		bad := logPath(t)
		writeLines(t, bad, ls)
		fh, _ := os.Open(bad)
		defer fh.Close()
		var got []uint64
		var errs []error
		for r, err := range audit.Query(fh, audit.Filter{}) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			got = append(got, r.Index)
		}
		if fmt.Sprint(got) != "[1 2 4 5 6]" || len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 3") || !errors.Is(errs[0], audit.ErrMalformedRecord) {
			t.Fatalf("records %v errors %v", got, errs)
		}
	})
	t.Run("Line", func(t *testing.T) {
		fh, _ := os.Open(path)
		defer fh.Close()
		ls := lines(t, path)
		i := 0
		for r := range audit.Query(fh, audit.Filter{}) {
			if !bytes.Equal(append(r.Line(), '\n'), ls[i]) {
				t.Fatalf("Line() of record %d differs from the log", r.Index)
			}
			i++
		}
	})
}

func TestFollow(t *testing.T) {
	path := logPath(t)
	s := open(t, audit.Config{Path: path})
	defer closeSink(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	f := &feed{}
	deliver(t, s, f.evts(evt{op: "drop", db: "shop", coll: "a"}, evt{op: "drop", db: "other", coll: "b"}))

	got := make(chan uint64)
	done := make(chan error, 1)
	go func() {
		defer close(got)
		for r, err := range audit.Follow(ctx, path, audit.Filter{Namespaces: []change.Glob{change.MustGlob("shop.*")}}, 10*time.Millisecond) {
			if err != nil {
				done <- err
				return
			}
			got <- r.Index
		}
		done <- nil
	}()
	want := func(i uint64) {
		t.Helper()
		select {
		case g := <-got:
			if g != i {
				t.Fatalf("followed record %d, want %d", g, i)
			}
		case <-ctx.Done():
			t.Fatalf("record %d never came", i)
		}
	}
	want(1)
	// A record written while following, and half a line: the half line
	// is read once it is complete.
	deliver(t, s, f.evts(evt{op: "drop", db: "other", coll: "c"}, evt{op: "drop", db: "shop", coll: "d"}))
	want(4)
	if err := s.RecordSystem(ctx, audit.SystemEvent{Class: "x", Namespace: "shop.e"}); err != nil {
		t.Fatal(err)
	}
	want(5)
	cancel()
	for range got {
	}
	if err := <-done; err != nil {
		t.Fatalf("Follow ended with %v", err)
	}
}

func TestParseTimeBound(t *testing.T) {
	now := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-05-01T10:00:00Z":      time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
		"2026-05-01T10:00:00+02:00": time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC),
		"2026-05-01":                time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
	} {
		t.Run(in, func(t *testing.T) {
			got, err := audit.ParseTimeBound(in, now)
			if err != nil || !got.Equal(want) {
				t.Fatalf("ParseTimeBound = %v, %v; want %v", got, err, want)
			}
		})
	}
	for _, in := range []string{"", "yesterday", "-5m", "2026-13-01"} {
		if _, err := audit.ParseTimeBound(in, now); err == nil {
			t.Errorf("ParseTimeBound(%q) succeeded", in)
		}
	}
}

func TestTableWriter_Write(t *testing.T) {
	path := queryLog(t)
	fh, _ := os.Open(path)
	defer fh.Close()
	var buf bytes.Buffer
	tw := audit.NewTableWriter(&buf)
	for r := range audit.Query(fh, audit.Filter{}) {
		if err := tw.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.String()
	for _, want := range []string{"INDEX", "SEVERITY", "renamed to arch.x", "6 deletes 13:00:00.000..13:00:05.000", "dropDatabase", "daemon_stop"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 7 {
		t.Errorf("%d lines, want header + 6:\n%s", n, out)
	}
}
