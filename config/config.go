// Package config reads godwit's YAML configuration. Every field, its default
// and its meaning are documented in docs/config.md; Validate reports every
// problem at once, each naming its field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/sink"
)

// Config is the whole configuration file.
type Config struct {
	// DataDir holds the outbox and relative sink files. Default "./godwit-data".
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`
	// Metadata is where godwit keeps its own state inside MongoDB.
	Metadata Metadata `yaml:"metadata"`
	// Outbox tunes the local log.
	Outbox Outbox `yaml:"outbox"`
	// API configures the network listeners.
	API API `yaml:"api"`
	// Triggers tunes the trigger functions' runtime.
	Triggers Triggers `yaml:"triggers"`
	// Sources are the deployments to capture.
	Sources []Source `yaml:"sources"`
	// Sinks drain the outbox.
	Sinks []Sink `yaml:"sinks"`

	// dir is the config file's directory: relative paths resolve against it.
	dir string
}

// Metadata configures godwit's own database.
type Metadata struct {
	// Database is godwit's database name in every deployment it touches;
	// capture always ignores it. Default "godwit".
	Database string `yaml:"database"`
	// URI is the deployment holding triggers and functions. Default
	// "lungo:DATA_DIR/metadata.lungo" (an embedded engine).
	URI string `yaml:"uri"`
}

// API configures godwit's listeners.
type API struct {
	// HTTPAddr serves /metrics, /healthz and /readyz. Default
	// "127.0.0.1:9464"; "off" disables the listener.
	HTTPAddr string `yaml:"http_addr"`
	// GRPCAddr serves the gRPC API (triggers, functions, events, audit,
	// admin). Default "127.0.0.1:7701"; "off" disables it.
	GRPCAddr string `yaml:"grpc_addr"`
	// Insecure allows plaintext gRPC on a non-loopback address. Default
	// false: godwit refuses to start that way.
	Insecure bool `yaml:"insecure"`
	// HTTPInsecure allows a non-loopback HTTPAddr without TLS and tokens.
	// Default false: such an address needs api.tls and api.tokens (then
	// /metrics needs a token), or godwit refuses to start.
	HTTPInsecure bool `yaml:"http_insecure"`
	// MetricsLabels says who sees the per-trigger and per-subscription
	// metric series, labelled with trigger ids and names and subscription
	// names: "all" (default: whoever may scrape), "admin" (scrapes with an
	// admin token; others get counts without names) or "none".
	MetricsLabels string `yaml:"metrics_labels"`
	// TLS serves gRPC over TLS; with ClientCA, clients need certificates
	// signed by it (mTLS).
	TLS *TLS `yaml:"tls"`
	// Tokens are the bearer tokens the API accepts. With none, the API needs
	// no token (and should stay on loopback).
	Tokens []Token `yaml:"tokens"`
}

// TLS names PEM files. Relative paths resolve against the config file's
// directory.
type TLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// Token is one API credential. The token itself is never in the config: only
// its SHA-256 (`printf %s TOKEN | sha256sum`, or `godwit token hash`).
type Token struct {
	// User is the user id the token acts as: owner of what it creates.
	User string `yaml:"user"`
	// Role is "user" (default: sees only its own triggers and functions) or
	// "admin" (sees everything).
	Role string `yaml:"role"`
	// SHA256 is the hex SHA-256 of the token.
	SHA256 string `yaml:"sha256"`
	// Allow limits what the user's triggers may watch and write. Empty
	// lists allow everything.
	Allow Allow `yaml:"allow"`
}

// Allow is a per-user allow-list.
type Allow struct {
	// Sources are the data sources (source ids) the user's triggers may
	// watch and write.
	Sources []string `yaml:"sources"`
	// Namespaces are globs of the namespaces they may watch and write.
	Namespaces []string `yaml:"namespaces"`
}

// Triggers tunes the wasm runtime of trigger functions.
type Triggers struct {
	// MemoryLimit caps each function instance's memory in bytes. Default
	// 128 MiB.
	MemoryLimit int64 `yaml:"memory_limit"`
	// MaxMemoryBytes bounds the memory of all function instances together.
	// Default: a quarter of the machine's memory (or cgroup limit), at
	// least 256 MiB and at most 16 GiB.
	MaxMemoryBytes int64 `yaml:"max_memory_bytes"`
	// MaxFunctionsPerUser, MaxTriggersPerUser and MaxModuleBytesPerUser
	// are each user's quotas. Defaults 100, 100 and 256 MiB; -1: none.
	MaxFunctionsPerUser   int   `yaml:"max_functions_per_user"`
	MaxTriggersPerUser    int   `yaml:"max_triggers_per_user"`
	MaxModuleBytesPerUser int64 `yaml:"max_module_bytes_per_user"`
	// LogBytesPerSecond and LogLinesPerSecond bound what each function
	// logs (a token bucket holding one second's worth); the excess is
	// dropped and counted. Defaults 16 KiB and 50.
	LogBytesPerSecond int `yaml:"log_bytes_per_second"`
	LogLinesPerSecond int `yaml:"log_lines_per_second"`
	// Timeout is the deadline of one function call. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxModuleBytes bounds an uploaded module. Default 32 MiB.
	MaxModuleBytes int `yaml:"max_module_bytes"`
	// QueueMaxBytes bounds the trigger queue (DATA_DIR/trigger-queue.db):
	// authentication events and scheduled runs not yet handled by every
	// trigger they are for. Default 64 MiB.
	QueueMaxBytes int64 `yaml:"queue_max_bytes"`
	// CompilationCache is the directory of wazero's compilation cache.
	// Default DATA_DIR/wazero-cache. Several godwit processes may share one.
	CompilationCache string `yaml:"compilation_cache"`
}

// Outbox configures the bbolt outbox.
type Outbox struct {
	// Path of the outbox file. Default DATA_DIR/outbox.db.
	Path string `yaml:"path"`
	// MaxBytes bounds retained events; capture pauses at the bound.
	// Default 1 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// KeepAcked turns retention off. Default false.
	KeepAcked bool `yaml:"keep_acked"`
}

// Source is one deployment to capture.
type Source struct {
	// ID names the source (letters, digits, '_', '-'; at most 64).
	ID string `yaml:"id"`
	// URI is mongodb://, mongodb+srv:// or lungo:PATH / lungo:memory.
	URI string `yaml:"uri"`
	// Database narrows the watch to one database; Collection (which needs
	// Database) to one collection. Default: the whole deployment.
	Database   string `yaml:"database"`
	Collection string `yaml:"collection"`
	// Include keeps only namespaces matching one of these globs ("shop.*").
	Include []string `yaml:"include"`
	// Ignore drops namespaces matching any of these globs ("*.tmp_*").
	Ignore []string `yaml:"ignore"`
	// OperationTypes keeps only these operation types. Default: all.
	OperationTypes []string `yaml:"operation_types"`
	// FullDocument: updateLookup (default), whenAvailable, required or off.
	FullDocument string `yaml:"full_document"`
	// FullDocumentBeforeChange: off (default), whenAvailable or required.
	FullDocumentBeforeChange string `yaml:"full_document_before_change"`
	// ShowExpandedEvents asks for DDL events (MongoDB 6.0+). Default true;
	// set false for older servers.
	ShowExpandedEvents *bool `yaml:"show_expanded_events"`
	// SplitLargeEvents adds $changeStreamSplitLargeEvent (7.0+). Default false.
	SplitLargeEvents bool `yaml:"split_large_events"`
	// BatchSize is the most events per outbox write. Default 1000.
	BatchSize int `yaml:"batch_size"`
	// BatchInterval is the longest a batch stays open. Default 100ms.
	BatchInterval time.Duration `yaml:"batch_interval"`
}

// Sink is one consumer of the outbox. The fields here are those of every
// sink type; the type's own section (jsonl: {...}, replicate: {...}) is
// decoded and checked by the factory the type registered in package sink
// (package sink/all registers them all).
type Sink struct {
	// ID names the sink's cursor (same rule as source ids).
	ID string `yaml:"id"`
	// Type is a registered sink type: "jsonl", "audit", "replicate",
	// "kafka" or "nats" in this build (sink.Types lists them).
	Type string `yaml:"type"`
	// OnFailure is "park" (default: move the event to dead letters after
	// MaxAttempts) or "halt" (stop this sink).
	OnFailure string `yaml:"on_failure"`
	// MaxAttempts per event before OnFailure applies. Default 5 (kafka and
	// nats: unlimited, see docs/sinks.md).
	MaxAttempts int `yaml:"max_attempts"`
	// BatchSize is the most events per delivery. Default 1000.
	BatchSize int `yaml:"batch_size"`
	// Settings is the type's section after Validate: a pointer to the
	// config struct the type registered (*jsonl.Config for jsonl,
	// *replicate.Config for replicate, ...). Code that builds a config may
	// set it instead of writing YAML; Validate then checks it.
	Settings any `yaml:"-"`

	// sections are the entry's sections named after a sink type, as read.
	sections map[string]*yaml.Node
}

// sinkFields are the YAML keys of Sink's own fields.
var sinkFields = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[Sink]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}()

// UnmarshalYAML reads the fields every sink has and keeps the sections
// named after registered sink types for Validate. Any other key is an
// error, as with the rest of the file.
func (s *Sink) UnmarshalYAML(n *yaml.Node) error {
	type plain Sink // without this method
	if err := n.Decode((*plain)(s)); err != nil {
		return err
	}
	var unknown []string
	for i := 0; i+1 < len(n.Content) && n.Kind == yaml.MappingNode; i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case sinkFields[k.Value]:
		case sink.Registered(k.Value):
			if s.sections == nil {
				s.sections = map[string]*yaml.Node{}
			}
			if v.Tag != "!!null" {
				s.sections[k.Value] = v
			}
		default:
			unknown = append(unknown, fmt.Sprintf("line %d: field %s not found in type config.Sink (sink types: %v)", k.Line, k.Value, sink.Types()))
		}
	}
	if len(unknown) > 0 {
		return &yaml.TypeError{Errors: unknown}
	}
	return nil
}

var idRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Override changes a parsed configuration before defaults and validation:
// a command-line flag standing in for a field (godwit serve --insecure).
type Override func(*Config)

// Load reads and validates a config file, applying overrides first.
func Load(path string, overrides ...Override) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data, filepath.Dir(abs), overrides...)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// Parse decodes YAML (rejecting unknown fields), applies overrides and
// defaults, and validates. dir resolves relative paths.
func Parse(data []byte, dir string, overrides ...Override) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("  %v", err)
	}
	for _, o := range overrides {
		o(&c)
	}
	c.dir = dir
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "godwit-data"
	}
	if !filepath.IsAbs(c.DataDir) && c.dir != "" {
		c.DataDir = filepath.Join(c.dir, c.DataDir)
	}
	if c.API.HTTPAddr == "" {
		c.API.HTTPAddr = "127.0.0.1:9464"
	}
	if c.API.GRPCAddr == "" {
		c.API.GRPCAddr = "127.0.0.1:7701"
	}
	if t := c.API.TLS; t != nil && c.dir != "" {
		for _, p := range []*string{&t.Cert, &t.Key, &t.ClientCA} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(c.dir, *p)
			}
		}
	}
	for i := range c.API.Tokens {
		if c.API.Tokens[i].Role == "" {
			c.API.Tokens[i].Role = "user"
		}
	}
	if c.Metadata.URI == "" {
		c.Metadata.URI = "lungo:" + filepath.Join(c.DataDir, "metadata.lungo")
	}
	if c.Metadata.Database == "" {
		c.Metadata.Database = "godwit"
	}
	if c.Triggers.CompilationCache == "" {
		c.Triggers.CompilationCache = filepath.Join(c.DataDir, "wazero-cache")
	} else if !filepath.IsAbs(c.Triggers.CompilationCache) {
		c.Triggers.CompilationCache = filepath.Join(c.DataDir, c.Triggers.CompilationCache)
	}
	if c.Outbox.Path == "" {
		c.Outbox.Path = filepath.Join(c.DataDir, "outbox.db")
	} else if !filepath.IsAbs(c.Outbox.Path) {
		c.Outbox.Path = filepath.Join(c.DataDir, c.Outbox.Path)
	}
	for i := range c.Sources {
		s := &c.Sources[i]
		if s.FullDocument == "" {
			s.FullDocument = "updateLookup"
		}
		if s.ShowExpandedEvents == nil {
			t := true
			s.ShowExpandedEvents = &t
		}
	}
}

// Dir returns the directory relative paths resolve against.
func (c *Config) Dir() string { return c.dir }

// Validate reports every problem, one line each, naming the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		if format == "" { // field already holds "name: message"
			errs = append(errs, fmt.Errorf("  %s", field))
			return
		}
		errs = append(errs, fmt.Errorf("  %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, err := levelOK(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if a := c.API.HTTPAddr; a != "off" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("api.http_addr", "%q: want host:port (127.0.0.1:9464) or off", a)
		}
	}
	if a := c.API.HTTPAddr; a != "off" {
		if host, _, err := net.SplitHostPort(a); err == nil && !isLoopback(host) && !c.API.HTTPInsecure &&
			(c.API.TLS == nil || len(c.API.Tokens) == 0) {
			bad("api.http_addr", "%q is not a loopback address: configure api.tls and api.tokens (/metrics then needs a token), or set api.http_insecure: true (or start with --http-insecure) on a trusted network", a)
		}
	}
	switch c.API.MetricsLabels {
	case "", "all", "admin", "none":
	default:
		bad("api.metrics_labels", "%q: use all, admin or none", c.API.MetricsLabels)
	}
	if a := c.API.GRPCAddr; a != "off" {
		if host, _, err := net.SplitHostPort(a); err != nil {
			bad("api.grpc_addr", "%q: want host:port (127.0.0.1:7701) or off", a)
		} else if !isLoopback(host) && c.API.TLS == nil && !c.API.Insecure {
			bad("api.grpc_addr", "%q is not a loopback address: configure api.tls, or set api.insecure: true (or start with --insecure) to serve plaintext on a trusted network", a)
		}
	}
	if t := c.API.TLS; t != nil {
		if t.Cert == "" || t.Key == "" {
			bad("api.tls", "cert and key are both required")
		}
	}
	users := map[string]bool{}
	for i, tk := range c.API.Tokens {
		f := fmt.Sprintf("api.tokens[%d]", i)
		if !idRule.MatchString(tk.User) {
			bad(f+".user", "%q: use 1 to 64 letters, digits, '_' or '-'", tk.User)
		}
		if tk.Role != "user" && tk.Role != "admin" {
			bad(f+".role", "%q: use user or admin", tk.Role)
		}
		if len(tk.SHA256) != 64 || strings.Trim(strings.ToLower(tk.SHA256), "0123456789abcdef") != "" {
			bad(f+".sha256", "want the 64 hex digits of the token's SHA-256 (printf %%s TOKEN | sha256sum); never the token itself")
		}
		if users[tk.SHA256] {
			bad(f+".sha256", "the same token is listed twice")
		}
		users[tk.SHA256] = true
		for j, g := range tk.Allow.Namespaces {
			if _, err := change.ParseGlob(g); err != nil {
				bad(fmt.Sprintf("%s.allow.namespaces[%d]", f, j), "%v", err)
			}
		}
		for j, src := range tk.Allow.Sources {
			if !slices.ContainsFunc(c.Sources, func(s Source) bool { return s.ID == src }) {
				bad(fmt.Sprintf("%s.allow.sources[%d]", f, j), "no source with id %q", src)
			}
		}
	}
	if _, _, err := mongodb.ParseURI(c.Metadata.URI, c.dir); err != nil {
		bad("metadata.uri", "%v", err)
	}
	if c.Triggers.MemoryLimit < 0 || (c.Triggers.MemoryLimit > 0 && c.Triggers.MemoryLimit < 64<<10) {
		bad("triggers.memory_limit", "want at least 65536 bytes (one wasm page), or 0 for the default 128 MiB")
	}
	if c.Triggers.MaxMemoryBytes < 0 || (c.Triggers.MaxMemoryBytes > 0 && c.Triggers.MaxMemoryBytes < 64<<10) {
		bad("triggers.max_memory_bytes", "want at least 65536 bytes (one wasm page), or 0 for the default sized for the machine")
	}
	if c.Triggers.Timeout < 0 {
		bad("triggers.timeout", "must not be negative")
	}
	for _, q := range []struct {
		field string
		v     int64
	}{
		{"triggers.max_functions_per_user", int64(c.Triggers.MaxFunctionsPerUser)},
		{"triggers.max_triggers_per_user", int64(c.Triggers.MaxTriggersPerUser)},
		{"triggers.max_module_bytes_per_user", c.Triggers.MaxModuleBytesPerUser},
	} {
		if q.v < -1 {
			bad(q.field, "want a positive number, 0 for the default or -1 for no quota")
		}
	}
	if c.Triggers.LogBytesPerSecond < 0 {
		bad("triggers.log_bytes_per_second", "must not be negative (0 means the default, 16 KiB)")
	}
	if c.Triggers.LogLinesPerSecond < 0 {
		bad("triggers.log_lines_per_second", "must not be negative (0 means the default, 50)")
	}
	if c.Triggers.MaxModuleBytes < 0 {
		bad("triggers.max_module_bytes", "must not be negative")
	}
	if c.Triggers.QueueMaxBytes < 0 {
		bad("triggers.queue_max_bytes", "must not be negative")
	}
	if c.Outbox.MaxBytes < 0 {
		bad("outbox.max_bytes", "must not be negative (0 means the default, 1 GiB)")
	}
	if len(c.Sources) == 0 {
		bad("sources", "at least one source is required")
	}
	ids := map[string]string{}
	checkID := func(field, id string) {
		switch {
		case id == "":
			bad(field+".id", "required")
		case !idRule.MatchString(id):
			bad(field+".id", "%q: use 1 to 64 letters, digits, '_' or '-'", id)
		case ids[id] != "":
			bad(field+".id", "%q is already used by %s", id, ids[id])
		default:
			ids[id] = field
		}
	}
	for i, s := range c.Sources {
		f := fmt.Sprintf("sources[%d]", i)
		checkID(f, s.ID)
		if s.URI == "" {
			bad(f+".uri", "required (mongodb://…, mongodb+srv://… or lungo:PATH)")
		} else if _, _, err := mongodb.ParseURI(s.URI, c.dir); err != nil {
			bad(f+".uri", "%v", err)
		}
		if s.Collection != "" && s.Database == "" {
			bad(f+".collection", "needs database: a collection is watched within one database")
		}
		if s.Database == c.Metadata.Database && s.Database != "" {
			bad(f+".database", "%q is godwit's own metadata database, which is never captured", s.Database)
		}
		for j, g := range s.Include {
			if _, err := change.ParseGlob(g); err != nil {
				bad(fmt.Sprintf("%s.include[%d]", f, j), "%v", err)
			}
		}
		for j, g := range s.Ignore {
			if _, err := change.ParseGlob(g); err != nil {
				bad(fmt.Sprintf("%s.ignore[%d]", f, j), "%v", err)
			}
		}
		for j, op := range s.OperationTypes {
			if !change.Known(op) {
				bad(fmt.Sprintf("%s.operation_types[%d]", f, j), "%q is not a known operation type (one of %v)", op, change.KnownOperationTypes)
			}
		}
		if !slices.Contains([]string{"updateLookup", "whenAvailable", "required", "off"}, s.FullDocument) {
			bad(f+".full_document", "%q: use updateLookup, whenAvailable, required or off", s.FullDocument)
		}
		if !slices.Contains([]string{"", "off", "whenAvailable", "required"}, s.FullDocumentBeforeChange) {
			bad(f+".full_document_before_change", "%q: use off, whenAvailable or required", s.FullDocumentBeforeChange)
		}
		if s.BatchSize < 0 {
			bad(f+".batch_size", "must not be negative")
		}
		if s.BatchInterval < 0 {
			bad(f+".batch_interval", "must not be negative")
		}
	}
	for i, s := range c.Sinks {
		f := fmt.Sprintf("sinks[%d]", i)
		checkID(f, s.ID)
		rc := sink.RunnerConfig{Policy: s.OnFailure, MaxAttempts: s.MaxAttempts, BatchSize: s.BatchSize}
		if err := rc.Validate(); err != nil {
			bad(f, "%v", err)
		}
		switch {
		case s.Type == "":
			bad(f+".type", "required (one of %v)", sink.Types())
		case !sink.Registered(s.Type):
			bad(f+".type", "%q is not a sink type (one of %v)", s.Type, sink.Types())
		default:
			c.checkSink(&c.Sinks[i], f, bad)
		}
	}
	return errors.Join(errs...)
}

// checkSink decodes and checks a sink's section through its type's
// factory, keeping the result in Settings.
func (c *Config) checkSink(s *Sink, field string, bad func(field, format string, args ...any)) {
	env := sink.Env{ID: s.ID, Dir: c.dir, DataDir: c.DataDir}
	for _, src := range c.Sources {
		env.Sources = append(env.Sources, src.ID)
	}
	section, settings := s.sections[s.Type], s.Settings
	if section != nil {
		settings = nil
	}
	decoded, err := sink.Decode(s.Type, section, settings, env)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			bad(field+"."+line, "")
		}
		return
	}
	s.Settings = decoded
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func levelOK(l string) (string, error) {
	switch l {
	case "", "debug", "info", "warn", "error", "trace":
		return l, nil
	}
	return "", fmt.Errorf("%q: use debug, info, warn or error", l)
}

// Filter compiles a source's include and ignore globs.
func (s Source) Filter() change.Filter {
	var f change.Filter
	for _, g := range s.Include {
		f.Include = append(f.Include, change.MustGlob(g))
	}
	for _, g := range s.Ignore {
		f.Ignore = append(f.Ignore, change.MustGlob(g))
	}
	return f
}
