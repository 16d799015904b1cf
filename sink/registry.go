package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/outbox"
)

// Factory describes one sink type for the registry: the value of a sink
// entry's `type` field, how the entry's section of that name is checked and
// how the sink opens. C is the type's config struct; the section is decoded
// into a new C with unknown fields rejected.
//
// Adding a sink type is one package that calls Register from its init
// function, plus one import line in package sink/all.
type Factory[C any] struct {
	// Name is the type name and the key of its section (jsonl: {...}).
	Name string
	// Example is a minimal section, quoted when an entry lacks it.
	Example string
	// Check resolves relative paths against env and validates c. Every line
	// of its error names the field relative to the sink entry, as in
	// "jsonl: path: required" or "replicate.source: no source with id".
	Check func(c *C, env Env) error
	// Open opens the sink from a checked config. Open should not need the
	// sink's far end to be reachable: the runner retries delivery.
	Open func(ctx context.Context, c *C, deps Deps) (Sink, error)
	// MaxAttempts is the runner's attempts per event when the entry leaves
	// max_attempts at 0; 0 keeps the runner's default. Broker sinks use
	// math.MaxInt: an outage is retried until the broker is back.
	MaxAttempts int
}

// Env is what checking a section may need from the rest of the config.
type Env struct {
	// ID is the sink entry's id.
	ID string
	// Dir is the config file's directory ("" when the config came from
	// bytes with no file).
	Dir string
	// DataDir is the resolved data_dir: sink files resolve against it.
	DataDir string
	// Sources are the configured source ids.
	Sources []string
}

// Deps is what opening a sink may use. The runtime fills it once per sink.
type Deps struct {
	// ID is the sink entry's id.
	ID string
	// Dir is the config file's directory, for URIs with relative paths.
	Dir string
	// MetadataDatabase is godwit's own database name.
	MetadataDatabase string
	// Outbox is the open outbox.
	Outbox *outbox.Outbox
	// Log carries the sink's id.
	Log zerolog.Logger
	// Sources are the open capture sources, by id.
	Sources map[string]Source
	// Progress receives progress lines (nil: none).
	Progress io.Writer
	// Audit records an event in every audit sink; it never fails (it logs).
	Audit func(context.Context, Notice)
}

// Source is an open source connection as a sink sees it.
type Source struct {
	// URI is the configured URI (may hold credentials: never log it).
	URI string
	// Conn is the open deployment.
	Conn *mongodb.Conn
	// Echo is the filter installed in this source's capture.
	Echo capture.EchoFilter
}

// Notice is an event a sink asks the audit sinks to record.
type Notice struct {
	Class     string
	Source    string
	Namespace string
	Message   string
	Details   map[string]any
}

// kind is a registered Factory without its type parameter.
type kind struct {
	name, example string
	maxAttempts   int
	newConfig     func() any
	check         func(c any, env Env) error
	open          func(ctx context.Context, c any, deps Deps) (Sink, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]kind{}
)

// Register adds a sink type. It panics on a duplicate or empty name, or a
// factory without Check or Open: these are programming errors found at
// start.
func Register[C any](f Factory[C]) {
	if f.Name == "" || f.Check == nil || f.Open == nil {
		panic("sink.Register: a factory needs Name, Check and Open")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[f.Name]; dup {
		panic(fmt.Sprintf("sink.Register: type %q registered twice", f.Name))
	}
	as := func(c any) (*C, error) {
		typed, ok := c.(*C)
		if !ok {
			return nil, fmt.Errorf("%s: settings of type %T, want %T", f.Name, c, new(C))
		}
		return typed, nil
	}
	registry[f.Name] = kind{
		name: f.Name, example: f.Example, maxAttempts: f.MaxAttempts,
		newConfig: func() any { return new(C) },
		check: func(c any, env Env) error {
			typed, err := as(c)
			if err != nil {
				return err
			}
			return f.Check(typed, env)
		},
		open: func(ctx context.Context, c any, deps Deps) (Sink, error) {
			typed, err := as(c)
			if err != nil {
				return nil, err
			}
			return f.Open(ctx, typed, deps)
		},
	}
}

// Types returns the registered type names, sorted.
func Types() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for name := range registry {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Registered reports whether typ is a registered sink type.
func Registered(typ string) bool {
	_, ok := lookup(typ)
	return ok
}

func lookup(typ string) (kind, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	k, ok := registry[typ]
	return k, ok
}

// ErrUnknownType is returned by Decode and Open when a type name is not
// registered (the binary was built without it, or the name is misspelt).
var ErrUnknownType = errors.New("unknown sink type")

func unknown(typ string) error {
	return fmt.Errorf("%w %q (one of %v)", ErrUnknownType, typ, Types())
}

var yamlLine = regexp.MustCompile(`^\s*line \d+: `)

// Decode returns the checked config of a sink of type typ. It decodes
// section when it is not nil (unknown fields are errors); otherwise it
// checks settings, a config built in code (nil: the section is missing).
// Every line of the error names its field relative to the sink entry.
func Decode(typ string, section *yaml.Node, settings any, env Env) (any, error) {
	k, ok := lookup(typ)
	if !ok {
		return nil, unknown(typ)
	}
	if section != nil {
		settings = k.newConfig()
		if err := decodeStrict(section, settings); err != nil {
			return nil, fmt.Errorf("%s (line %d): %s", typ, section.Line, err)
		}
	}
	if settings == nil {
		return nil, fmt.Errorf("%s: required for type %s (%s)", typ, typ, k.example)
	}
	if err := k.check(settings, env); err != nil {
		return nil, err
	}
	return settings, nil
}

// decodeStrict decodes n into out rejecting unknown fields, which
// yaml.Node.Decode cannot: the node is written out and read back. Line
// numbers in the result would count from the section, so they are cut.
func decodeStrict(n *yaml.Node, out any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(n); err != nil {
		return err
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	err := dec.Decode(out)
	if errors.Is(err, io.EOF) { // an empty section: {} or null
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			lines[i] = yamlLine.ReplaceAllString(e, "")
		}
		return errors.New(strings.Join(lines, "; "))
	}
	return err
}

// Open opens a sink of type typ from a config Decode returned.
func Open(ctx context.Context, typ string, settings any, deps Deps) (Sink, error) {
	k, ok := lookup(typ)
	if !ok {
		return nil, unknown(typ)
	}
	return k.open(ctx, settings, deps)
}

// DefaultMaxAttempts is the runner's attempts per event for a sink of type
// typ whose entry leaves max_attempts at 0 (0: the runner's default).
func DefaultMaxAttempts(typ string) int {
	k, _ := lookup(typ)
	return k.maxAttempts
}

// PrefixLines prefixes every line of err (nil stays nil): a section's
// validation error, one problem per line, becomes relative to the sink
// entry.
func PrefixLines(prefix string, err error) error {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

// DataPath resolves a relative file path against the data directory, as
// sink files (jsonl, audit logs) are.
func (e Env) DataPath(p *string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(e.DataDir, *p)
	}
}

// ConfigPath resolves a relative file path against the config file's
// directory, as credentials and TLS files are (like api.tls).
func (e Env) ConfigPath(paths ...*string) {
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) && e.Dir != "" {
			*p = filepath.Join(e.Dir, *p)
		}
	}
}
