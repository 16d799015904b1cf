package replicate_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/replicate"
)

func TestConfig_Validate(t *testing.T) {
	ok := replicate.Config{ID: "a2b", Source: "a", Target: "lungo:memory"}
	for _, tc := range []struct {
		name  string
		edit  func(*replicate.Config)
		field string // "" means valid
	}{
		{"Minimal", func(*replicate.Config) {}, ""},
		{"Full", func(c *replicate.Config) {
			c.Include, c.Ignore = []string{"shop.*"}, []string{"shop.tmp_*"}
			c.Mapping = map[string]string{"shop": "shop_copy", "shop.orders": "archive.orders_v2"}
			c.DDL, c.Workers, c.FullDocumentFallback, c.CopyBatchSize = replicate.DDLHalt, 8, replicate.FallbackAlways, 50
		}, ""},
		{"NoSource", func(c *replicate.Config) { c.Source = "" }, "source"},
		{"NoTarget", func(c *replicate.Config) { c.Target = "" }, "target"},
		{"BadTarget", func(c *replicate.Config) { c.Target = "postgres://x" }, "target"},
		{"BadID", func(c *replicate.Config) { c.ID = "a b" }, "id"},
		{"BadInclude", func(c *replicate.Config) { c.Include = []string{".x"} }, "include[0]"},
		{"BadIgnore", func(c *replicate.Config) { c.Ignore = []string{"shop."} }, "ignore[0]"},
		{"MappingDBToCollection", func(c *replicate.Config) { c.Mapping = map[string]string{"shop": "x.y"} }, "mapping"},
		{"MappingSharedTarget", func(c *replicate.Config) { c.Mapping = map[string]string{"a.x": "b.y", "c.z": "b.y"} }, "mapping"},
		{"MappingCollision", func(c *replicate.Config) { c.Mapping = map[string]string{"a": "t", "b.c": "t.c"} }, "mapping"},
		{"BadDDL", func(c *replicate.Config) { c.DDL = "maybe" }, "ddl"},
		{"BadWorkers", func(c *replicate.Config) { c.Workers = -1 }, "workers"},
		{"BadFallback", func(c *replicate.Config) { c.FullDocumentFallback = "never" }, "full_document_fallback"},
		{"BadCopyBatch", func(c *replicate.Config) { c.CopyBatchSize = -5 }, "copy_batch_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.field != "" && err == nil:
				t.Fatalf("no error, want one naming %s", tc.field)
			case tc.field != "" && !strings.HasPrefix(err.Error(), tc.field+":"):
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestPipelines(t *testing.T) {
	write := func(t *testing.T, yaml string) string {
		p := filepath.Join(t.TempDir(), "godwit.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("ReadsReplicateSinks", func(t *testing.T) {
		p := write(t, `
metadata: {database: gw}
sources:
  - {id: a, uri: "lungo:a.lungo"}
  - {id: b, uri: "mongodb://localhost:27017"}
sinks:
  - {id: events, type: jsonl, jsonl: {path: e.jsonl}}
  - id: a2b
    type: replicate
    replicate:
      source: a
      target: lungo:b.lungo
      include: ["shop.*"]
      mapping: {shop: shop_copy}
      ddl: ignore
`)
		ps, err := replicate.Pipelines(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 {
			t.Fatalf("%d pipelines, want 1", len(ps))
		}
		got := ps[0]
		if got.Config.ID != "a2b" || got.Config.Source != "a" || got.SourceURI != "lungo:a.lungo" || got.MetadataDB != "gw" ||
			got.Config.Mapping["shop"] != "shop_copy" || got.Config.DDL != replicate.DDLIgnore || got.Dir != filepath.Dir(p) {
			t.Fatalf("pipeline %+v", got)
		}
	})
	t.Run("UnknownSourceNamesTheField", func(t *testing.T) {
		p := write(t, `
sources: [{id: a, uri: "lungo:memory"}]
sinks:
  - {id: x, type: replicate, replicate: {source: nope, target: "lungo:memory"}}
`)
		_, err := replicate.Pipelines(p)
		if err == nil || !strings.Contains(err.Error(), "sinks[0].replicate.source") {
			t.Fatalf("error %v, want one naming sinks[0].replicate.source", err)
		}
	})
}
