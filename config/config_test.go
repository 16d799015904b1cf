package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/config"
	_ "github.com/godwit-dev/godwit/sink/all"
	"github.com/godwit-dev/godwit/sink/jsonl"
)

const valid = `
data_dir: /var/lib/godwit
sources:
  - id: shop
    uri: mongodb://godwit:s3cret@db1.example:27017,db2.example:27017/?replicaSet=rs0
    include: ["shop.*"]
    ignore: ["*.tmp_*"]
    operation_types: [insert, update, replace, delete]
  - id: local
    uri: lungo:local.lungo
sinks:
  - id: events
    type: jsonl
    jsonl: {path: events.jsonl}
`

func TestParse_Valid(t *testing.T) {
	c, err := config.Parse([]byte(valid), "/etc/godwit")
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbox.Path != "/var/lib/godwit/outbox.db" {
		t.Errorf("outbox path default = %q", c.Outbox.Path)
	}
	if j, ok := c.Sinks[0].Settings.(*jsonl.Config); !ok || j.Path != "/var/lib/godwit/events.jsonl" {
		t.Errorf("relative sink paths resolve against data_dir: %#v", c.Sinks[0].Settings)
	}
	if c.Metadata.Database != "godwit" || c.Sources[0].FullDocument != "updateLookup" || !*c.Sources[0].ShowExpandedEvents {
		t.Errorf("defaults not applied: %+v %+v", c.Metadata, c.Sources[0])
	}
	f := c.Sources[0].Filter()
	if len(f.Include) != 1 || len(f.Ignore) != 1 {
		t.Errorf("filter = %+v", f)
	}
}

func TestParse_DataDirRelativeToConfigFile(t *testing.T) {
	c, err := config.Parse([]byte("sources: [{id: a, uri: 'lungo:memory'}]"), "/etc/godwit")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join("/etc/godwit", "godwit-data") {
		t.Errorf("data_dir = %q", c.DataDir)
	}
}

// Each case breaks one field; the error must name it and say what to do.
func TestParse_Invalid(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"no sources", `sinks: []`, []string{"sources: at least one source"}},
		{"missing id", `sources: [{uri: "lungo:memory"}]`, []string{"sources[0].id: required"}},
		{"bad id", `sources: [{id: "my source", uri: "lungo:memory"}]`, []string{"sources[0].id", "letters, digits"}},
		{"duplicate id", `sources: [{id: a, uri: "lungo:memory"}, {id: a, uri: "lungo:memory"}]`,
			[]string{`sources[1].id: "a" is already used by sources[0]`}},
		{"sink id clashes with source", `
sources: [{id: a, uri: "lungo:memory"}]
sinks: [{id: a, type: jsonl, jsonl: {path: x}}]`, []string{`sinks[0].id: "a" is already used`}},
		// A sink's id is its outbox cursor's key: "trigger:x" would be trigger x's.
		{"sink id with a cursor prefix", `
sources: [{id: a, uri: "lungo:memory"}]
sinks: [{id: "trigger:x", type: jsonl, jsonl: {path: x}}]`, []string{`sinks[0].id: "trigger:x"`, "letters, digits"}},
		{"missing uri", `sources: [{id: a}]`, []string{"sources[0].uri: required"}},
		{"unknown scheme", `sources: [{id: a, uri: "postgres://u:pw@h/db"}]`, []string{"sources[0].uri", `unknown URI scheme "postgres"`}},
		{"malformed mongodb uri", `sources: [{id: a, uri: "mongodb://h:notaport"}]`, []string{"sources[0].uri"}},
		{"empty lungo path", `sources: [{id: a, uri: "lungo:"}]`, []string{"sources[0].uri", "file path or 'memory'"}},
		{"collection without database", `sources: [{id: a, uri: "lungo:memory", collection: c}]`, []string{"sources[0].collection: needs database"}},
		{"watching the metadata database", `sources: [{id: a, uri: "lungo:memory", database: godwit}]`, []string{"sources[0].database", "metadata database"}},
		{"bad include glob", `sources: [{id: a, uri: "lungo:memory", include: ["shop.[a-"]}]`, []string{"sources[0].include[0]", "bad pattern"}},
		{"empty ignore glob part", `sources: [{id: a, uri: "lungo:memory", ignore: ["shop."]}]`, []string{"sources[0].ignore[0]", "collection part is empty"}},
		{"unknown operation type", `sources: [{id: a, uri: "lungo:memory", operation_types: [upsert]}]`, []string{"sources[0].operation_types[0]", `"upsert"`}},
		{"bad full_document", `sources: [{id: a, uri: "lungo:memory", full_document: always}]`, []string{"sources[0].full_document"}},
		{"bad pre-image option", `sources: [{id: a, uri: "lungo:memory", full_document_before_change: yes}]`, []string{"sources[0].full_document_before_change"}},
		{"negative batch size", `sources: [{id: a, uri: "lungo:memory", batch_size: -1}]`, []string{"sources[0].batch_size"}},
		{"negative outbox bound", "outbox: {max_bytes: -5}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"outbox.max_bytes"}},
		{"bad log level", "log_level: loud\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"log_level"}},
		{"sink without type", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s}]", []string{"sinks[0].type: required"}},
		{"unknown sink type", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: rabbitmq}]", []string{`sinks[0].type: "rabbitmq" is not a sink type`}},
		{"jsonl without settings", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: jsonl}]", []string{"sinks[0].jsonl: required"}},
		{"jsonl without path", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: jsonl, jsonl: {}}]", []string{"sinks[0].jsonl: path: required"}},
		{"bad failure policy", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: jsonl, on_failure: retry, jsonl: {path: x}}]", []string{"sinks[0]", "on_failure"}},
		{"grpc on a public address without TLS", "api: {grpc_addr: \"0.0.0.0:7701\"}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"api.grpc_addr", "api.tls", "api.insecure"}},
		{"TLS without key", "api: {tls: {cert: c.pem}}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"api.tls: cert and key are both required"}},
		{"token in clear", "api: {tokens: [{user: alice, sha256: hunter2}]}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"api.tokens[0].sha256", "never the token itself"}},
		{"bad role", "api: {tokens: [{user: alice, role: root, sha256: " + strings.Repeat("ab", 32) + "}]}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"api.tokens[0].role"}},
		{"allow-list names an unknown source", "api: {tokens: [{user: alice, sha256: " + strings.Repeat("ab", 32) + ", allow: {sources: [crm]}}]}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"api.tokens[0].allow.sources[0]", `"crm"`}},
		{"bad metadata uri", "metadata: {uri: \"redis://x\"}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"metadata.uri"}},
		{"tiny memory limit", "triggers: {memory_limit: 100}\nsources: [{id: a, uri: \"lungo:memory\"}]", []string{"triggers.memory_limit"}},
		{"unknown field", "sources: [{id: a, uri: \"lungo:memory\", colection: c}]", []string{"colection", "not found"}},
		{"unknown sink field", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: jsonl, jsonl: {path: x}, on_falure: halt}]",
			[]string{"line 2: field on_falure not found", "sink types: [audit jsonl kafka nats replicate]"}},
		{"unknown field in a sink's section", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: jsonl, jsonl: {pth: x}}]",
			[]string{"sinks[0].jsonl (line 2): field pth not found in type jsonl.Config"}},
		{"unknown sink type lists the registered ones", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: rabbitmq}]",
			[]string{`(one of [audit jsonl kafka nats replicate])`}},
		{"a section of the wrong type", "sources: [{id: a, uri: \"lungo:memory\"}]\nsinks: [{id: s, type: audit, jsonl: {path: x}}]",
			[]string{"sinks[0].audit: required for type audit (audit: {path: audit.jsonl})"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml), "/tmp")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParse_ReportsEveryProblem(t *testing.T) {
	_, err := config.Parse([]byte(`sources: [{id: "", uri: "http://x"}, {id: b, uri: "lungo:memory", operation_types: [nope]}]`), "/tmp")
	if err == nil {
		t.Fatal("accepted")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Fatalf("want one line per problem (3), got %d:\n%v", n, err)
	}
}

func TestParse_NeverLeaksPasswords(t *testing.T) {
	_, err := config.Parse([]byte(`sources: [{id: a, uri: "mongodb://admin:hunter2@h:notaport/"}, {id: b, uri: "mongo://admin:hunter2@h/"}]`), "/tmp")
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("sources: [{id: a, uri: 'lungo:memory', include: ['a.*']}]"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "/tmp")
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted a config Validate rejects")
		}
	})
}
