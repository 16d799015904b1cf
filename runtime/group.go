package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// Component is one long-running part of godwit.
type Component interface {
	// Name is unique in a group ("source shop", "sink events").
	Name() string
	// Run runs until ctx ends (returning nil) or the component fails
	// (returning why). Returning nil early means the component finished.
	// When another component failed, context.Cause(ctx) is that failure.
	Run(ctx context.Context) error
	// Close releases what the component holds. It is called once, after
	// Run returned or when Run was never called.
	Close(ctx context.Context) error
}

// Readier is implemented by components whose dependents must wait until
// they are ready (a capture whose change stream is open). Without it a
// component is ready as soon as it starts.
type Readier interface {
	Ready() <-chan struct{}
}

// Dependent is implemented by components that start only after others are
// ready. DependsOn returns their names; the group reads it once, in Add.
type Dependent interface {
	DependsOn() []string
}

// Isolated is implemented by components whose failure must stop only
// themselves, when Isolated returns true: the trigger manager, when the
// metadata store is down, must not stop capture and the sinks. The failure
// is logged with the component's name, shown by States, and returned by Run
// when the group stops (after any failure of another component).
type Isolated interface {
	Isolated() bool
}

// Reporter is implemented by components with a status to show.
type Reporter interface {
	Status() any
}

// ErrDependencies is returned by Run when a component depends on a name
// that is not in the group, or the dependencies form a cycle.
var ErrDependencies = errors.New("runtime: bad component dependencies")

// States of a component in a group.
const (
	StateWaiting = "waiting" // for its dependencies
	StateRunning = "running"
	StateReady   = "ready"   // running and ready
	StateStopped = "stopped" // Run returned nil
	StateFailed  = "failed"  // Run returned an error
	StateBlocked = "blocked" // a dependency stopped before it was ready
)

// State is a component's place in its group's lifecycle.
type State struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Status is the component's own status, when it is a Reporter.
	Status any `json:"status,omitempty"`
}

// Group starts, supervises and closes components. The zero value is not
// usable: call NewGroup.
type Group struct {
	log zerolog.Logger

	mu     sync.Mutex
	comps  []*member
	byName map[string]*member
	order  []*member // start order, set by Run
	ran    bool
}

type member struct {
	c         Component
	deps      []string
	ready     chan struct{} // closed when dependents may start
	readyOnce sync.Once
	exited    chan struct{} // closed when Run returned

	mu    sync.Mutex
	state string
	err   error
}

// markReady closes m.ready once.
func (m *member) markReady() {
	m.readyOnce.Do(func() {
		m.mu.Lock()
		if m.state == StateRunning {
			m.state = StateReady
		}
		m.mu.Unlock()
		close(m.ready)
	})
}

func (m *member) set(state string, err error) {
	m.mu.Lock()
	m.state, m.err = state, err
	m.mu.Unlock()
}

// NewGroup returns an empty group that logs to log.
func NewGroup(log zerolog.Logger) *Group {
	return &Group{log: log, byName: map[string]*member{}}
}

// Add adds components, in the order they were opened. A name used twice is
// an error. DependsOn is read here: a component's dependencies must be
// known when it is added (the components they name may be added later).
func (g *Group) Add(cs ...Component) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ran {
		return errors.New("runtime: Add after Run")
	}
	for _, c := range cs {
		name := c.Name()
		if _, dup := g.byName[name]; dup {
			return fmt.Errorf("runtime: two components are named %q", name)
		}
		m := &member{c: c, ready: make(chan struct{}), exited: make(chan struct{}), state: StateWaiting}
		if d, ok := c.(Dependent); ok {
			m.deps = d.DependsOn()
		}
		g.comps = append(g.comps, m)
		g.byName[name] = m
	}
	return nil
}

// Component returns the component named name, or nil.
func (g *Group) Component(name string) Component {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.byName[name]; ok {
		return m.c
	}
	return nil
}

// sorted returns the members with every dependency before its dependents,
// keeping the order of Add where dependencies allow.
func (g *Group) sorted() ([]*member, error) {
	var problems []string
	for _, m := range g.comps {
		for _, d := range m.deps {
			if _, ok := g.byName[d]; !ok {
				problems = append(problems, fmt.Sprintf("%q depends on %q, which is not in the group", m.c.Name(), d))
			}
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrDependencies, strings.Join(problems, "; "))
	}
	const (
		unvisited = iota
		visiting
		done
	)
	mark := map[*member]int{}
	var out []*member
	var path []string
	var visit func(m *member) error
	visit = func(m *member) error {
		switch mark[m] {
		case done:
			return nil
		case visiting:
			i := slices.Index(path, m.c.Name())
			return fmt.Errorf("%w: a cycle: %s -> %s", ErrDependencies, strings.Join(path[i:], " -> "), m.c.Name())
		}
		mark[m] = visiting
		path = append(path, m.c.Name())
		for _, d := range m.deps {
			if err := visit(g.byName[d]); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		mark[m] = done
		out = append(out, m)
		return nil
	}
	for _, m := range g.comps {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Run starts every component once its dependencies are ready and returns
// when all have returned: after ctx ends, or after the first failure, which
// stops the others. It returns that failure, naming its component, joined
// with the failures of Isolated components (nil when there were none). Run
// may be called once.
func (g *Group) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.ran {
		g.mu.Unlock()
		return errors.New("runtime: Group.Run called twice")
	}
	g.ran = true
	order, err := g.sorted()
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.order = order
	g.mu.Unlock()

	// The others see the failure as their context's cause.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg       sync.WaitGroup
		failOnce sync.Once
		first    error
		mu       sync.Mutex
		isolated []error
	)
	fail := func(m *member, err error) {
		if i, ok := m.c.(Isolated); ok && i.Isolated() {
			g.log.Error().Err(err).Str("component", m.c.Name()).Msg("component failed; the others go on")
			mu.Lock()
			isolated = append(isolated, fmt.Errorf("%s: %w", m.c.Name(), err))
			mu.Unlock()
			return
		}
		failOnce.Do(func() {
			first = fmt.Errorf("%s: %w", m.c.Name(), err)
			g.log.Error().Err(err).Str("component", m.c.Name()).Msg("component failed; stopping the others")
			cancel(first)
		})
	}
	for _, m := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(m.exited)
			if !g.waitDeps(ctx, m) {
				return
			}
			m.set(StateRunning, nil)
			g.watchReady(ctx, m, &wg)
			err := m.c.Run(ctx)
			// Ready, then returned at once (an initial sync that is
			// done): dependents must see it ready before they see it exit.
			if r, ok := m.c.(Readier); ok {
				select {
				case <-r.Ready():
					m.markReady()
				default:
				}
			}
			if err != nil && !stopping(ctx, err) {
				m.set(StateFailed, err)
				fail(m, err)
				return
			}
			m.set(StateStopped, nil)
		}()
	}
	wg.Wait()
	return errors.Join(append([]error{first}, isolated...)...)
}

// stopping reports whether err only says that ctx ended.
func stopping(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// waitDeps waits until every dependency of m is ready. It reports false
// when m must not start: ctx ended, or a dependency stopped unready.
func (g *Group) waitDeps(ctx context.Context, m *member) bool {
	for _, name := range m.deps {
		d := g.byName[name]
		select {
		case <-d.ready:
			continue
		case <-ctx.Done():
			m.set(StateStopped, nil)
			return false
		case <-d.exited:
		}
		select {
		case <-d.ready: // ready, then stopped: m may still run
		default:
			m.set(StateBlocked, fmt.Errorf("%s stopped before it was ready", name))
			g.log.Warn().Str("component", m.c.Name()).Str("dependency", name).
				Msg("not started: a component it depends on stopped before it was ready")
			return false
		}
	}
	return true
}

// watchReady closes m.ready when m is ready: at once without Readier, else
// when its channel closes (m must not exit before: a member that stops
// unready blocks its dependents).
func (g *Group) watchReady(ctx context.Context, m *member, wg *sync.WaitGroup) {
	r, ok := m.c.(Readier)
	if !ok {
		m.markReady()
		return
	}
	ch := r.Ready()
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ch:
			m.markReady()
		case <-m.exited:
		case <-ctx.Done():
		}
	}()
}

// Ready returns a channel closed when the component named name is ready
// (nil for an unknown name). It never closes for a component that did not
// start or stopped unready.
func (g *Group) Ready(name string) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.byName[name]; ok {
		return m.ready
	}
	return nil
}

// States returns every component's state, in start order (dependencies
// first; Add order where the dependencies are bad).
func (g *Group) States() []State {
	ms := g.startOrder()
	out := make([]State, 0, len(ms))
	for _, m := range ms {
		m.mu.Lock()
		st := State{Name: m.c.Name(), State: m.state}
		if m.err != nil {
			st.Error = m.err.Error()
		}
		m.mu.Unlock()
		if r, ok := m.c.(Reporter); ok {
			st.Status = r.Status()
		}
		out = append(out, st)
	}
	return out
}

// startOrder is the order Run started (or would start) the components in.
func (g *Group) startOrder() []*member {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.order != nil {
		return g.order
	}
	if sorted, err := g.sorted(); err == nil {
		return sorted
	}
	return g.comps
}

// Close closes every component in the reverse of the start order (the
// reverse of Add order when the dependencies are bad) and returns every error, joined, each naming its component.
func (g *Group) Close(ctx context.Context) error {
	ms := g.startOrder()
	var errs []error
	for _, m := range slices.Backward(ms) {
		if err := m.c.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", m.c.Name(), err))
		}
	}
	return errors.Join(errs...)
}
