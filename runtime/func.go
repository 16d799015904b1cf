package runtime

import "context"

// New returns a component made of functions: run (nil: wait until ctx
// ends), closeFn (nil: nothing to release) and the names it depends on. It
// suits parts whose own types already have Run and Close shapes.
func New(name string, run, closeFn func(context.Context) error, dependsOn ...string) *Func {
	return &Func{name: name, run: run, close: closeFn, deps: dependsOn}
}

// Func is a component made of functions (see New).
type Func struct {
	name       string
	run, close func(context.Context) error
	deps       []string
	isolated   bool
}

// Isolate makes f an Isolated component: its failure stops only itself.
func (f *Func) Isolate() *Func { f.isolated = true; return f }

func (f *Func) Name() string        { return f.name }
func (f *Func) DependsOn() []string { return f.deps }
func (f *Func) Isolated() bool      { return f.isolated }

func (f *Func) Run(ctx context.Context) error {
	if f.run == nil {
		<-ctx.Done()
		return nil
	}
	return f.run(ctx)
}

func (f *Func) Close(ctx context.Context) error {
	if f.close == nil {
		return nil
	}
	return f.close(ctx)
}
