package audit

import "errors"

// ErrCrash is returned by failpoints installed with FailAt.
var ErrCrash = errors.New("simulated crash")

// FailAt makes the sink fail at the named point of its write path
// ("before-log-sync", "after-log-sync", "before-state") the next time it
// gets there. After "after-log-sync" or "before-state" the sink's memory is
// ahead of its state file: the test must Crash it, as a real crash would.
func FailAt(s *Sink, point string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failpoint = func(name string) error {
		if name != point {
			return nil
		}
		s.failpoint = nil
		return ErrCrash
	}
}

// Crash closes the sink's file without flushing bursts or saving state,
// releasing its lock as the death of the process would.
func Crash(s *Sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.mirror != nil {
		s.mirror.cancel()
		<-s.mirror.done
	}
	s.f.Close()
}

// MirroredThrough returns the index of the last record the mirror copied.
func MirroredThrough(s *Sink) uint64 {
	if s.mirror == nil {
		return 0
	}
	s.mirror.mu.Lock()
	defer s.mirror.mu.Unlock()
	if s.mirror.next == 0 {
		return 0
	}
	return s.mirror.next - 1
}

// WithoutSealing opens a sink that writes the plain hash chain godwit wrote
// before sealing, so that benchmarks can compare the two in one run.
func WithoutSealing() Option {
	return func(o *openOptions) { o.plain = true }
}
