package audit_test

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"gopkg.in/yaml.v3"

	"github.com/godwit-dev/godwit/audit"
)

func TestConfig_Validate(t *testing.T) {
	bad, _ := audit.ParseMatch(`{"a": {"$frobnicate": 1}}`)
	for _, tc := range []struct {
		name  string
		cfg   audit.Config
		field string // "" means valid
	}{
		{"Minimal", audit.Config{Path: "a.jsonl"}, ""},
		{"NoPath", audit.Config{}, "path:"},
		{"DisableUnknown", audit.Config{Path: "a", Disable: []string{"insert"}}, "disable[0]:"},
		{"DisableKnown", audit.Config{Path: "a", Disable: []string{audit.ClassMassDelete, audit.ClassModify}}, ""},
		{"SeverityValue", audit.Config{Path: "a", Severity: map[string]string{"drop": "dire"}}, "severity.drop:"},
		{"ThresholdNegative", audit.Config{Path: "a", MassDelete: audit.MassDelete{Threshold: -1}}, "mass_delete.threshold:"},
		{"ThresholdTooHigh", audit.Config{Path: "a", MassDelete: audit.MassDelete{Threshold: audit.MaxThreshold + 1}}, "mass_delete.threshold:"},
		{"WindowNegative", audit.Config{Path: "a", MassDelete: audit.MassDelete{Window: -time.Second}}, "mass_delete.window:"},
		{"WindowTiny", audit.Config{Path: "a", MassDelete: audit.MassDelete{Window: time.Microsecond}}, "mass_delete.window:"},
		{"Sample", audit.Config{Path: "a", MassDelete: audit.MassDelete{Sample: 1000}}, "mass_delete.sample:"},
		{"IgnoreGlob", audit.Config{Path: "a", MassDelete: audit.MassDelete{Ignore: []string{".x"}}}, "mass_delete.ignore[0]:"},
		{"RuleName", audit.Config{Path: "a", Rules: []audit.Rule{{}}}, "rules[0]: name:"},
		{"RuleDuplicate", audit.Config{Path: "a", Rules: []audit.Rule{{Name: "r"}, {Name: "r"}}}, "rules[1].name:"},
		{"RuleGlob", audit.Config{Path: "a", Rules: []audit.Rule{{Name: "r", Namespaces: []string{"shop."}}}}, "rules[0]: namespaces[0]:"},
		{"RuleOp", audit.Config{Path: "a", Rules: []audit.Rule{{Name: "r", OperationTypes: []string{""}}}}, "rules[0]: operation_types[0]:"},
		{"RuleSeverity", audit.Config{Path: "a", Rules: []audit.Rule{{Name: "r", Severity: "urgent"}}}, "rules[0]: severity:"},
		{"RuleMatch", audit.Config{Path: "a", Rules: []audit.Rule{{Name: "r", Match: bad}}}, "rules[0]: match:"},
		{"HeadEvery", audit.Config{Path: "a", HeadEvery: -1}, "head_every:"},
		{"MirrorURI", audit.Config{Path: "a", Mirror: &audit.Mirror{Database: "d", Collection: "c"}}, "mirror.uri:"},
		{"MirrorScheme", audit.Config{Path: "a", Mirror: &audit.Mirror{URI: "http://x", Database: "d", Collection: "c"}}, "mirror.uri:"},
		{"MirrorDatabase", audit.Config{Path: "a", Mirror: &audit.Mirror{URI: "mongodb://x"}}, "mirror.database:"},
		{"MirrorCollection", audit.Config{Path: "a", Mirror: &audit.Mirror{URI: "mongodb://x", Database: "d"}}, "mirror.collection:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("Validate = %v, want an error starting with %q", err, tc.field)
			}
		})
	}
}

func TestConfig_yaml(t *testing.T) {
	const doc = `
path: /var/lib/godwit/audit.jsonl
disable: [modify]
severity: {drop: critical}
mass_delete: {threshold: 50, window: 30s, sample: 5, ignore: ["app.sessions"]}
head_every: 100
rules:
  - name: admin-granted
    namespaces: ["auth.*"]
    operation_types: [update, replace]
    match:
      fullDocument.role: {$in: [admin, root]}
      documentKey._id: {$oid: 65f1a2b6c0ffee0000000001}
      fullDocument.since: 2026-01-01T00:00:00Z
    severity: critical
  - name: anything-in-billing
    namespaces: ["billing"]
mirror: {uri: "mongodb://audit.example:27017", database: godwit, collection: audit}
`
	var cfg audit.Config
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MassDelete.Window != 30*time.Second || cfg.MassDelete.Threshold != 50 || cfg.Severity["drop"] != "critical" || cfg.Mirror.Collection != "audit" {
		t.Fatalf("config %+v", cfg)
	}
	oid, _ := primitive.ObjectIDFromHex("65f1a2b6c0ffee0000000001")
	want := bson.D{
		{Key: "fullDocument.role", Value: bson.D{{Key: "$in", Value: bson.A{"admin", "root"}}}},
		{Key: "documentKey._id", Value: oid},
		{Key: "fullDocument.since", Value: primitive.NewDateTimeFromTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
	}
	got, _ := bson.MarshalExtJSON(bson.D(cfg.Rules[0].Match), true, false)
	exp, _ := bson.MarshalExtJSON(want, true, false)
	if string(got) != string(exp) {
		t.Fatalf("match = %s\nwant    %s", got, exp)
	}
	if cfg.Rules[1].Match != nil {
		t.Fatalf("absent match = %v", cfg.Rules[1].Match)
	}
	// The query survives a round trip through YAML.
	out, err := yaml.Marshal(cfg.Rules[0])
	if err != nil {
		t.Fatal(err)
	}
	var back audit.Rule
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	again, _ := bson.MarshalExtJSON(bson.D(back.Match), true, false)
	if string(again) != string(got) {
		t.Fatalf("round trip: %s\nwant        %s", again, got)
	}
	t.Run("MatchNotAMapping", func(t *testing.T) {
		var r audit.Rule
		if err := yaml.Unmarshal([]byte("name: x\nmatch: [1, 2]\n"), &r); err == nil {
			t.Fatal("a sequence was accepted as a match query")
		}
	})
}
