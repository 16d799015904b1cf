package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"gopkg.in/yaml.v3"

	"github.com/godwit-dev/godwit/change"
)

// Defaults of Config.
const (
	DefaultThreshold = 100
	DefaultWindow    = 10 * time.Second
	DefaultSample    = 10
	DefaultHeadEvery = 1000

	// MaxThreshold bounds mass_delete.threshold: the sink keeps the times
	// and keys of up to threshold+1 recent deletes per namespace in its
	// state file, which is rewritten after every batch with deletes.
	MaxThreshold = 10000
	// MaxSample bounds mass_delete.sample.
	MaxSample = 100
)

// Config configures the audit sink. It opens nothing; Open validates it.
//
//	audit:
//	  path: /var/lib/godwit/audit.jsonl
//	  disable: [modify]
//	  severity: {drop: critical}
//	  mass_delete: {threshold: 100, window: 10s, sample: 10, ignore: ["app.sessions"]}
//	  rules:
//	    - name: admin-role-granted
//	      namespaces: ["auth.users"]
//	      operation_types: [update, replace]
//	      match: {"fullDocument.role": "admin"}
//	      severity: critical
type Config struct {
	// Path is the audit log file (JSON lines). Required. The sink keeps its
	// state (with the current sealing key) next to it, in Path + ".state",
	// and writes the verification key to Path + ".key" when sealing starts.
	Path string `yaml:"path"`
	// Disable turns built-in classes off (see BuiltinClasses).
	Disable []string `yaml:"disable"`
	// Severity overrides the default severity of a class (built-in or
	// system), for example {drop: critical}.
	Severity map[string]string `yaml:"severity"`
	// MassDelete tunes mass-delete detection.
	MassDelete MassDelete `yaml:"mass_delete"`
	// Rules are user rules; an event matching any of them is recorded.
	Rules []Rule `yaml:"rules"`
	// HeadEvery logs the chain head every this many records (and at open
	// and close). Default 1000.
	HeadEvery int `yaml:"head_every"`
	// Mirror, when set, copies every record into a MongoDB collection as
	// well. The file stays the record of truth.
	Mirror *Mirror `yaml:"mirror"`
}

// MassDelete tunes mass-delete detection: a burst is more than Threshold
// deletes in one namespace within Window, by event time.
type MassDelete struct {
	// Threshold N: N+1 deletes within Window make a burst. Default 100,
	// at most MaxThreshold.
	Threshold int `yaml:"threshold"`
	// Window T. Default 10s.
	Window time.Duration `yaml:"window"`
	// Sample is how many document keys a burst record lists. Default 10.
	Sample int `yaml:"sample"`
	// Ignore lists namespace globs whose deletes are not counted, such as
	// collections with TTL indexes.
	Ignore []string `yaml:"ignore"`
}

// Rule records events that match it. Empty lists match everything.
type Rule struct {
	// Name identifies the rule in records; required and unique.
	Name string `yaml:"name"`
	// Namespaces are globs (see change.ParseGlob); empty: every namespace.
	Namespaces []string `yaml:"namespaces"`
	// OperationTypes are change-event operationType values; empty: every
	// type. Unknown types are allowed: servers add new ones.
	OperationTypes []string `yaml:"operation_types"`
	// Match is a MongoDB query evaluated against the whole change event
	// (fields such as "fullDocument.role", "ns.coll",
	// "updateDescription.updatedFields.status"). Values may use Extended
	// JSON ({"$oid": "..."}, {"$date": "..."}). Empty: every event.
	Match MatchQuery `yaml:"match"`
	// Severity is low, medium (default), high or critical.
	Severity string `yaml:"severity"`
}

// Mirror names a MongoDB collection the records are copied into.
type Mirror struct {
	// URI is a mongodb:// or mongodb+srv:// connection string.
	URI        string `yaml:"uri"`
	Database   string `yaml:"database"`
	Collection string `yaml:"collection"`
}

// MatchQuery is a MongoDB query document. In YAML it is written as a mapping
// (keys keep their order); in Go, build it like a bson.D or with ParseMatch.
type MatchQuery bson.D

// ParseMatch parses a query written in (relaxed or canonical) Extended JSON.
func ParseMatch(extJSON string) (MatchQuery, error) {
	var d bson.D
	if err := bson.UnmarshalExtJSON([]byte(extJSON), false, &d); err != nil {
		return nil, err
	}
	return MatchQuery(d), nil
}

// UnmarshalYAML reads a YAML mapping as an Extended JSON query, keeping the
// order of keys.
func (q *MatchQuery) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		*q = nil
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: match must be a mapping (a MongoDB query)", n.Line)
	}
	var buf bytes.Buffer
	if err := yamlToJSON(&buf, n); err != nil {
		return err
	}
	d, err := ParseMatch(buf.String())
	if err != nil {
		return fmt.Errorf("line %d: match: %v", n.Line, err)
	}
	*q = d
	return nil
}

// MarshalYAML writes the query as a mapping in relaxed Extended JSON.
func (q MatchQuery) MarshalYAML() (any, error) {
	if q == nil {
		return nil, nil
	}
	b, err := bson.MarshalExtJSON(bson.D(q), false, false)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, err
	}
	return n.Content[0], nil
}

func yamlToJSON(buf *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.AliasNode:
		return yamlToJSON(buf, n.Alias)
	case yaml.MappingNode:
		buf.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				buf.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			buf.Write(k)
			buf.WriteByte(':')
			if err := yamlToJSON(buf, n.Content[i+1]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := yamlToJSON(buf, c); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	default:
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %v", n.Line, err)
		}
		if t, ok := v.(time.Time); ok {
			// A YAML timestamp is a date, as in a MongoDB query.
			v = map[string]string{"$date": t.UTC().Format(time.RFC3339Nano)}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: %v", n.Line, err)
		}
		buf.Write(b)
	}
	return nil
}

// Validate names the first bad field and says why.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: required (the audit log file, for example /var/lib/godwit/audit.jsonl)")
	}
	for i, cl := range c.Disable {
		if !contains(BuiltinClasses, cl) {
			return fmt.Errorf("disable[%d]: %q is not a built-in class (one of %s)", i, cl, strings.Join(BuiltinClasses, ", "))
		}
	}
	for cl, sev := range c.Severity {
		if SeverityRank(sev) == 0 {
			return fmt.Errorf("severity.%s: %q is not one of %s", cl, sev, strings.Join(Severities, ", "))
		}
	}
	m := c.MassDelete
	switch {
	case m.Threshold < 0 || m.Threshold > MaxThreshold:
		return fmt.Errorf("mass_delete.threshold: %d is outside 1..%d (0 means the default, %d)", m.Threshold, MaxThreshold, DefaultThreshold)
	case m.Window < 0:
		return fmt.Errorf("mass_delete.window: %s is negative", m.Window)
	case m.Window > 0 && m.Window < time.Millisecond:
		return fmt.Errorf("mass_delete.window: %s is below 1ms, the resolution of event times", m.Window)
	case m.Sample < 0 || m.Sample > MaxSample:
		return fmt.Errorf("mass_delete.sample: %d is outside 0..%d", m.Sample, MaxSample)
	}
	for i, g := range m.Ignore {
		if _, err := change.ParseGlob(g); err != nil {
			return fmt.Errorf("mass_delete.ignore[%d]: %v", i, err)
		}
	}
	names := map[string]bool{}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rules[%d]: %w", i, err)
		}
		if names[r.Name] {
			return fmt.Errorf("rules[%d].name: %q is used by an earlier rule", i, r.Name)
		}
		names[r.Name] = true
	}
	if c.HeadEvery < 0 {
		return fmt.Errorf("head_every: %d is negative", c.HeadEvery)
	}
	if mr := c.Mirror; mr != nil {
		switch {
		case mr.URI == "":
			return errors.New("mirror.uri: required when mirror is set (a mongodb:// URI)")
		case !strings.HasPrefix(mr.URI, "mongodb://") && !strings.HasPrefix(mr.URI, "mongodb+srv://"):
			return errors.New("mirror.uri: must start with mongodb:// or mongodb+srv://")
		case mr.Database == "":
			return errors.New("mirror.database: required when mirror is set")
		case mr.Collection == "":
			return errors.New("mirror.collection: required when mirror is set")
		}
	}
	return nil
}

func (r Rule) validate() error {
	if r.Name == "" {
		return errors.New("name: required (it is written into the records the rule produces)")
	}
	for i, g := range r.Namespaces {
		if _, err := change.ParseGlob(g); err != nil {
			return fmt.Errorf("namespaces[%d]: %v", i, err)
		}
	}
	for i, op := range r.OperationTypes {
		if op == "" {
			return fmt.Errorf("operation_types[%d]: empty", i)
		}
	}
	if r.Severity != "" && SeverityRank(r.Severity) == 0 {
		return fmt.Errorf("severity: %q is not one of %s", r.Severity, strings.Join(Severities, ", "))
	}
	if r.Match != nil {
		// Running the query once finds unknown operators and malformed
		// operands before the first event does.
		q := bson.D(r.Match)
		if _, err := mongokit.Match(&bson.D{}, &q); err != nil {
			return fmt.Errorf("match: %v", err)
		}
	}
	return nil
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	if c.MassDelete.Threshold == 0 {
		c.MassDelete.Threshold = DefaultThreshold
	}
	if c.MassDelete.Window == 0 {
		c.MassDelete.Window = DefaultWindow
	}
	if c.MassDelete.Sample == 0 {
		c.MassDelete.Sample = DefaultSample
	}
	if c.HeadEvery == 0 {
		c.HeadEvery = DefaultHeadEvery
	}
	return c
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
