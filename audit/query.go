package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-dev/godwit/change"
)

// Filter selects records. Zero fields select everything.
type Filter struct {
	// Since (inclusive) and Until (exclusive) bound Record.Time.
	Since, Until time.Time
	// Namespaces: a record matches when its ns or its rename target matches
	// one of the globs. Records without a namespace never match a non-empty
	// list.
	Namespaces []change.Glob
	// Classes: the record's class is one of them.
	Classes []string
	// MinSeverity: the record's severity is at least this.
	MinSeverity string
	// Source: the record came from this source.
	Source string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *Record) bool {
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.Time.Before(f.Until) {
		return false
	}
	if len(f.Classes) > 0 && !contains(f.Classes, r.Class) {
		return false
	}
	if f.MinSeverity != "" && SeverityRank(r.Severity) < SeverityRank(f.MinSeverity) {
		return false
	}
	if f.Source != "" && r.Source != f.Source {
		return false
	}
	if len(f.Namespaces) > 0 {
		ok := false
		for _, g := range f.Namespaces {
			if r.NS != nil && g.Match(*r.NS) || r.To != nil && g.Match(*r.To) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Query yields the records of an audit log that pass f, in log order. A
// line that does not decode is yielded as an error naming its line number
// (iteration goes on if the caller continues); an incomplete last line is
// skipped. Query does not check the hash chain: use Verify for that.
func Query(r io.Reader, f Filter) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		lr := newLineReader(r)
		for n := 1; ; n++ {
			line, err := lr.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(Record{}, fmt.Errorf("read audit log line %d: %w", n, err))
				return
			}
			rec, err := DecodeLine(line)
			if err != nil {
				if !yield(Record{}, fmt.Errorf("audit log line %d: %w", n, err)) {
					return
				}
				continue
			}
			if f.Match(&rec) && !yield(rec, nil) {
				return
			}
		}
	}
}

// DefaultPoll is how often Follow looks for new records.
const DefaultPoll = 250 * time.Millisecond

// Follow is Query over the file at path that, at the end of the file, waits
// for more records (looking every poll, DefaultPoll if zero) until ctx ends.
// It ends with an error if the file shrinks under it.
func Follow(ctx context.Context, path string, f Filter, poll time.Duration) iter.Seq2[Record, error] {
	if poll <= 0 {
		poll = DefaultPoll
	}
	return func(yield func(Record, error) bool) {
		file, err := os.Open(path)
		if err != nil {
			yield(Record{}, err)
			return
		}
		defer file.Close()
		var offset int64 // start of the first line not yet read completely
		line := 0
		for {
			fi, err := file.Stat()
			if err != nil {
				yield(Record{}, err)
				return
			}
			size := fi.Size()
			if size < offset {
				yield(Record{}, fmt.Errorf("%s shrank from %d to %d bytes while following it: %w; run 'godwit audit verify'", path, offset, size, ErrTailCut))
				return
			}
			progressed := false
			if size > offset {
				// An incomplete last line is read again next time, when
				// its writer has finished it.
				buf := make([]byte, size-offset)
				if _, err := file.ReadAt(buf, offset); err != nil && err != io.EOF {
					yield(Record{}, err)
					return
				}
				for {
					i := bytes.IndexByte(buf, '\n')
					if i < 0 {
						break
					}
					progressed = true
					line++
					rec, err := DecodeLine(buf[:i])
					offset += int64(i) + 1
					buf = buf[i+1:]
					if err != nil {
						if !yield(Record{}, fmt.Errorf("audit log line %d: %w", line, err)) {
							return
						}
						continue
					}
					if f.Match(&rec) && !yield(rec, nil) {
						return
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
			if !progressed {
				select {
				case <-ctx.Done():
					return
				case <-time.After(poll):
				}
			}
		}
	}
}

// ParseTimeBound reads a time for --since and --until: RFC 3339
// ("2026-05-01T10:00:00Z"), a date ("2026-05-01", UTC midnight), or a
// duration before now ("90m", "24h", "7d").
func ParseTimeBound(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.ParseFloat(days, 64); err == nil && n >= 0 {
			return now.Add(-time.Duration(n * 24 * float64(time.Hour))), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-05-01T10:00:00Z), a date (2026-05-01) or a duration ago (90m, 24h, 7d)", s)
}

// TableWriter prints records as a table, one line each, for people.
type TableWriter struct {
	w      io.Writer
	header bool
}

// NewTableWriter returns a TableWriter on w.
func NewTableWriter(w io.Writer) *TableWriter { return &TableWriter{w: w} }

const tableFormat = "%-7s %-20s %-8s %-14s %-28s %s\n"

// Write prints r, after the header line the first time.
func (t *TableWriter) Write(r Record) error {
	if !t.header {
		t.header = true
		if _, err := fmt.Fprintf(t.w, tableFormat, "INDEX", "TIME", "SEVERITY", "CLASS", "NAMESPACE", "WHAT"); err != nil {
			return err
		}
	}
	ns := "-"
	if r.NS != nil {
		ns = r.NS.String()
	}
	_, err := fmt.Fprintf(t.w, tableFormat, strconv.FormatUint(r.Index, 10), r.Time.UTC().Format("2006-01-02T15:04:05Z"),
		r.Severity, r.Class, ns, summary(r))
	return err
}

// summary says in a few words what a record is about.
func summary(r Record) string {
	var parts []string
	switch {
	case r.Burst != nil:
		b := r.Burst
		parts = append(parts, fmt.Sprintf("%d deletes %s..%s", b.Count, b.FirstTime.UTC().Format("15:04:05.000"), b.LastTime.UTC().Format("15:04:05.000")))
		if b.Ended == EndedClose {
			parts = append(parts, "(ended by shutdown)")
		}
	case r.To != nil:
		parts = append(parts, "renamed to "+r.To.String())
	case r.Op != "" && r.Class == ClassRule:
		parts = append(parts, r.Op)
	}
	if len(r.DocumentKey) > 0 && r.Burst == nil {
		parts = append(parts, string(r.DocumentKey))
	}
	if len(r.Rules) > 0 {
		parts = append(parts, "rules: "+strings.Join(r.Rules, ","))
	}
	if r.User != "" {
		parts = append(parts, "by "+r.User)
	}
	if r.Message != "" {
		parts = append(parts, r.Message)
	}
	if r.Source != "" && r.Seq != 0 {
		parts = append(parts, fmt.Sprintf("[%s #%d]", r.Source, r.Seq))
	}
	return strings.Join(parts, " ")
}
