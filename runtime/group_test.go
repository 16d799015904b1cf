package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/runtime"
)

// part is a component whose behaviour the test drives through channels.
// It is the input of the group under test, not a stand-in for a real
// dependency.
type part struct {
	name    string
	deps    []string
	ready   chan struct{} // nil: no Readier
	started chan struct{}
	run     func(ctx context.Context) error // nil: run until ctx ends
	closeFn func() error
	log     *journal
	cancels chan struct{} // closed when Run saw its context end
}

// journal records what the parts did, in order.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) { j.mu.Lock(); j.entries = append(j.entries, s); j.mu.Unlock() }
func (j *journal) all() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

// lineSignal closes seen at the first log line containing match.
type lineSignal struct {
	match string
	seen  chan struct{}
	once  sync.Once
}

func (l *lineSignal) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.match) {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

func newPart(j *journal, name string, deps ...string) *part {
	return &part{name: name, deps: deps, started: make(chan struct{}), cancels: make(chan struct{}), log: j}
}

func (p *part) Name() string { return p.name }
func (p *part) Run(ctx context.Context) error {
	p.log.add("start " + p.name)
	close(p.started)
	if p.run != nil {
		return p.run(ctx)
	}
	<-ctx.Done()
	close(p.cancels)
	return ctx.Err()
}
func (p *part) Close(context.Context) error {
	p.log.add("close " + p.name)
	if p.closeFn != nil {
		return p.closeFn()
	}
	return nil
}

// readyPart adds Ready to part.
type readyPart struct{ *part }

func (r readyPart) Ready() <-chan struct{} { return r.ready }

// depPart adds DependsOn to part (and Ready when the part has a channel).
type depPart struct{ *part }

func (d depPart) DependsOn() []string { return d.deps }

type readyDepPart struct{ *part }

func (d readyDepPart) DependsOn() []string    { return d.deps }
func (d readyDepPart) Ready() <-chan struct{} { return d.ready }

func component(p *part) runtime.Component {
	switch {
	case p.ready != nil && len(p.deps) > 0:
		return readyDepPart{p}
	case p.ready != nil:
		return readyPart{p}
	case len(p.deps) > 0:
		return depPart{p}
	}
	return p
}

func newGroup(t *testing.T, log zerolog.Logger, parts ...*part) *runtime.Group {
	t.Helper()
	g := runtime.NewGroup(log)
	for _, p := range parts {
		if err := g.Add(component(p)); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// runAsync runs g and returns Run's result channel.
func runAsync(ctx context.Context, g *runtime.Group) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	return done
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testwait.Long):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func started(p *part) bool {
	select {
	case <-p.started:
		return true
	default:
		return false
	}
}

func TestGroup_Run(t *testing.T) {
	t.Run("StartsInDependencyOrder", func(t *testing.T) {
		j := &journal{}
		// Added dependents first: the group orders them.
		sink := newPart(j, "sink", "sync")
		sync := newPart(j, "sync", "source")
		source := newPart(j, "source")
		source.ready, sync.ready = make(chan struct{}), make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		g := newGroup(t, zerolog.Nop(), sink, sync, source)
		done := runAsync(ctx, g)

		wait(t, source.started, "the source to start")
		if started(sync) || started(sink) {
			t.Fatal("a dependent started before the source was ready")
		}
		close(source.ready)
		wait(t, g.Ready("source"), "the group to see the source ready")
		wait(t, sync.started, "the sync to start")
		if started(sink) {
			t.Fatal("the sink started before the sync was ready")
		}
		close(sync.ready)
		wait(t, sink.started, "the sink to start")
		cancel()
		if err := wait(t, done, "Run to return"); err != nil {
			t.Fatalf("Run = %v after the context ended, want nil", err)
		}
		if got := j.all(); !slices.Equal(got, []string{"start source", "start sync", "start sink"}) {
			t.Fatalf("start order %v", got)
		}
		for _, st := range g.States() {
			if st.State != runtime.StateStopped {
				t.Errorf("%s is %s after Run, want stopped", st.Name, st.State)
			}
		}
	})

	t.Run("FirstFailureStopsTheOthers", func(t *testing.T) {
		j := &journal{}
		boom := errors.New("listener: address in use")
		steady := newPart(j, "steady")
		failing := newPart(j, "grpc")
		fail := make(chan struct{})
		failing.run = func(ctx context.Context) error {
			select {
			case <-fail:
				return boom
			case <-ctx.Done():
				return nil
			}
		}
		var logs bytes.Buffer
		g := newGroup(t, zerolog.New(&logs), steady, failing)
		// The parent context never ends: only the failure may stop Run.
		done := runAsync(context.Background(), g)
		wait(t, steady.started, "steady to start")
		wait(t, failing.started, "grpc to start")
		close(fail)
		err := wait(t, done, "Run to return after the failure")
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "grpc: ") {
			t.Fatalf("Run = %v, want the failure naming grpc", err)
		}
		wait(t, steady.cancels, "steady to see its context end")
		if !strings.Contains(logs.String(), `"component":"grpc"`) {
			t.Errorf("the failure was not logged with its component's name: %s", logs.String())
		}
		states := g.States()
		if i := slices.IndexFunc(states, func(s runtime.State) bool { return s.Name == "grpc" }); states[i].State != runtime.StateFailed ||
			!strings.Contains(states[i].Error, "address in use") {
			t.Errorf("grpc state %+v", states[i])
		}
	})

	t.Run("AnIsolatedFailureStopsOnlyItself", func(t *testing.T) {
		j := &journal{}
		down := errors.New("metadata store: authentication failed")
		stop := errors.New("listener died")
		logged := &lineSignal{match: "component failed", seen: make(chan struct{})}
		causes := make(chan error, 1)
		capture := newPart(j, "capture")
		capture.run = func(ctx context.Context) error {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil
		}
		g := runtime.NewGroup(zerolog.New(logged))
		err := g.Add(capture,
			runtime.New("triggers", func(context.Context) error { return down }, nil).Isolate(),
			// Fails only once the isolated failure was handled: had that
			// one stopped the group, it would be the cause and Run's first.
			runtime.New("grpc", func(ctx context.Context) error {
				select {
				case <-logged.seen:
					return stop
				case <-ctx.Done():
					return nil
				}
			}, nil))
		if err != nil {
			t.Fatal(err)
		}
		err = wait(t, runAsync(context.Background(), g), "Run to return")
		if cause := wait(t, causes, "capture to stop"); !errors.Is(cause, stop) || errors.Is(cause, down) {
			t.Fatalf("capture was stopped by %v, want the grpc failure only", cause)
		}
		if !errors.Is(err, stop) || !errors.Is(err, down) || !strings.HasPrefix(err.Error(), "grpc: ") {
			t.Fatalf("Run = %v, want the grpc failure first, then the isolated one", err)
		}
		if st := g.States(); st[1].Name != "triggers" || st[1].State != runtime.StateFailed {
			t.Fatalf("states %+v", st)
		}
	})

	t.Run("FinishingIsNotFailing", func(t *testing.T) {
		j := &journal{}
		once := newPart(j, "once")
		once.run = func(context.Context) error { return nil }
		steady := newPart(j, "steady")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		g := newGroup(t, zerolog.Nop(), once, steady)
		done := runAsync(ctx, g)
		wait(t, steady.started, "steady to start")
		wait(t, once.started, "once to start")
		select {
		case <-steady.cancels:
			t.Fatal("a component that finished stopped the others")
		default:
		}
		cancel()
		if err := wait(t, done, "Run to return"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UnreadyDependencyBlocksItsDependents", func(t *testing.T) {
		j := &journal{}
		halted := newPart(j, "source")
		halted.ready = make(chan struct{}) // never closed
		halted.run = func(context.Context) error { return nil }
		pipeline := newPart(j, "pipeline", "source")
		g := newGroup(t, zerolog.Nop(), halted, pipeline)
		if err := wait(t, runAsync(context.Background(), g), "Run to return"); err != nil {
			t.Fatal(err)
		}
		if started(pipeline) {
			t.Fatal("the pipeline started although its source stopped unready")
		}
		if st := g.States(); st[1].Name != "pipeline" || st[1].State != runtime.StateBlocked {
			t.Fatalf("states %+v", st)
		}
	})

	t.Run("ReadyThenFinishedLetsDependentsStart", func(t *testing.T) {
		j := &journal{}
		sync := newPart(j, "sync")
		sync.ready = make(chan struct{})
		sync.run = func(context.Context) error { close(sync.ready); return nil }
		sink := newPart(j, "sink", "sync")
		sink.run = func(context.Context) error { return nil }
		g := newGroup(t, zerolog.Nop(), sync, sink)
		if err := wait(t, runAsync(context.Background(), g), "Run to return"); err != nil {
			t.Fatal(err)
		}
		if !started(sink) {
			t.Fatalf("the sink did not start after its sync was done: %+v", g.States())
		}
	})

	t.Run("BadDependenciesStartNothing", func(t *testing.T) {
		for name, parts := range map[string]func(j *journal) []*part{
			"Unknown": func(j *journal) []*part { return []*part{newPart(j, "a", "nope")} },
			"Cycle": func(j *journal) []*part {
				return []*part{newPart(j, "a", "c"), newPart(j, "b", "a"), newPart(j, "c", "b"), newPart(j, "d")}
			},
		} {
			t.Run(name, func(t *testing.T) {
				j := &journal{}
				ps := parts(j)
				err := newGroup(t, zerolog.Nop(), ps...).Run(context.Background())
				if !errors.Is(err, runtime.ErrDependencies) {
					t.Fatalf("Run = %v, want ErrDependencies", err)
				}
				want := map[string]string{"Unknown": `"a" depends on "nope", which is not in the group`, "Cycle": "a -> c -> b -> a"}[name]
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
				if got := j.all(); len(got) > 0 {
					t.Errorf("started %v", got)
				}
			})
		}
	})

	t.Run("AddAfterRun", func(t *testing.T) {
		j := &journal{}
		g := newGroup(t, zerolog.Nop())
		if err := wait(t, runAsync(context.Background(), g), "Run of an empty group"); err != nil {
			t.Fatal(err)
		}
		if err := g.Add(newPart(j, "late")); err == nil {
			t.Fatal("Add after Run was accepted")
		}
	})

	t.Run("DuplicateNames", func(t *testing.T) {
		j := &journal{}
		g := runtime.NewGroup(zerolog.Nop())
		if err := g.Add(newPart(j, "a"), newPart(j, "a")); err == nil || !strings.Contains(err.Error(), `"a"`) {
			t.Fatalf("Add = %v", err)
		}
	})
}

func TestGroup_Close(t *testing.T) {
	t.Run("ReverseStartOrderAndEveryErrorJoined", func(t *testing.T) {
		j := &journal{}
		errOutbox, errSink := errors.New("outbox: fsync failed"), errors.New("file: disk full")
		sink := newPart(j, "sink", "outbox")
		sink.closeFn = func() error { return errSink }
		conn := newPart(j, "conn")
		outbox := newPart(j, "outbox")
		outbox.closeFn = func() error { return errOutbox }
		g := newGroup(t, zerolog.Nop(), sink, conn, outbox)
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, g)
		wait(t, sink.started, "the sink to start")
		cancel()
		if err := wait(t, done, "Run to return"); err != nil {
			t.Fatal(err)
		}
		err := g.Close(context.Background())
		if !errors.Is(err, errOutbox) || !errors.Is(err, errSink) ||
			!strings.Contains(err.Error(), "close outbox: ") || !strings.Contains(err.Error(), "close sink: ") {
			t.Fatalf("Close = %v, want both errors, each naming its component", err)
		}
		var closes []string
		for _, e := range j.all() {
			if strings.HasPrefix(e, "close ") {
				closes = append(closes, e)
			}
		}
		// Start order is outbox, sink (after its dependency), conn.
		if want := []string{"close conn", "close sink", "close outbox"}; !slices.Equal(closes, want) {
			t.Fatalf("close order %v, want %v", closes, want)
		}
	})
	t.Run("WithoutRun", func(t *testing.T) {
		j := &journal{}
		g := newGroup(t, zerolog.Nop(), newPart(j, "a"), newPart(j, "b", "a"))
		if err := g.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := j.all(); !slices.Equal(got, []string{"close b", "close a"}) {
			t.Fatalf("closed %v", got)
		}
	})
}
