// Package jsonl is a sink that appends events to a file as JSON lines, one
// event per line in MongoDB Extended JSON:
//
//	{"seq":12,"source":"shop","captured_at":"2026-11-22T09:35:16.123Z","event":{...}}
//
// Lines are fsync'd before the runner acknowledges them. On open, a partial
// last line left by a crash is cut off, and events at or below the last
// written sequence are skipped, so every event appears exactly once and in
// order, however often godwit is killed.
package jsonl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/internal/lines"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// Config configures the sink.
type Config struct {
	// Path of the file; created if missing.
	Path string `yaml:"path"`
	// Canonical writes canonical Extended JSON (every BSON type explicit)
	// instead of relaxed (default, easier to read).
	Canonical bool `yaml:"canonical"`
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: required (the file the events are appended to)")
	}
	return nil
}

// Sink appends events to one file.
type Sink struct {
	cfg  Config
	f    *os.File
	w    *bufio.Writer
	last uint64 // highest sequence durably in the file
	end  int64  // offset just past the last durable line
}

// Line is one decoded line of the file.
type Line struct {
	Seq        uint64          `json:"seq"`
	Source     string          `json:"source"`
	CapturedAt time.Time       `json:"captured_at"`
	Event      json.RawMessage `json:"event"`
}

// Open opens (or creates) the file and recovers from a torn last line.
func Open(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open jsonl sink: %w", err)
	}
	last, end, err := recoverTail(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open jsonl sink %s: %w", cfg.Path, err)
	}
	if err := f.Truncate(end); err != nil {
		f.Close()
		return nil, fmt.Errorf("open jsonl sink %s: cut torn line: %w", cfg.Path, err)
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &Sink{cfg: cfg, f: f, w: bufio.NewWriterSize(f, 1<<20), last: last, end: end}, nil
}

// recoverTail finds the last complete line and returns its sequence and the
// offset just past it.
func recoverTail(f *os.File) (uint64, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	end, err := lines.CompleteEnd(f, fi.Size())
	if err != nil || end == 0 {
		return 0, 0, err
	}
	line, start, err := lines.Before(f, end)
	if err != nil {
		return 0, 0, err
	}
	var l struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return 0, 0, fmt.Errorf("last line (at byte %d) is not a godwit event line: %v", start, err)
	}
	return l.Seq, end, nil
}

// Deliver implements sink.Sink.
func (s *Sink) Deliver(_ context.Context, batch []outbox.Record) (err error) {
	defer func() {
		if err != nil {
			s.rewind()
		}
	}()
	wrote := false
	for _, r := range batch {
		if r.Seq <= s.last {
			continue // replay of an event already in the file
		}
		ej, err := bson.MarshalExtJSON(bson.Raw(r.Raw), s.cfg.Canonical, false)
		if err != nil {
			return sink.Permanent(fmt.Errorf("event %d is not valid BSON: %w", r.Seq, err))
		}
		src, _ := json.Marshal(r.Source)
		b := s.w.AvailableBuffer()
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
		b = append(b, `,"source":`...)
		b = append(b, src...)
		b = append(b, `,"captured_at":"`...)
		b = r.CapturedAt.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","event":`...)
		b = append(b, ej...)
		b = append(b, "}\n"...)
		if _, err := s.w.Write(b); err != nil {
			return err
		}
		wrote = true
	}
	if !wrote {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", s.cfg.Path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", s.cfg.Path, err)
	}
	s.last = batch[len(batch)-1].Seq
	s.end, err = s.f.Seek(0, io.SeekCurrent)
	return err
}

// rewind drops whatever a failed Deliver left after the last durable line,
// so a retry never writes after a torn line.
func (s *Sink) rewind() {
	s.w.Reset(s.f)
	if s.f.Truncate(s.end) == nil {
		_, _ = s.f.Seek(s.end, io.SeekStart)
	}
}

// Close implements sink.Closer.
func (s *Sink) Close(context.Context) error {
	err := s.w.Flush()
	if e := s.f.Close(); err == nil {
		err = e
	}
	return err
}

// ReadFile decodes every line of a jsonl sink file.
func ReadFile(path string) ([]Line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for n := 1; sc.Scan(); n++ {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return out, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}
