package replicate_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/replicate"
	_ "github.com/godwit-dev/godwit/sink/all"
)

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
		c, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		ps := replicate.Pipelines(c)
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
		_, err := config.Load(p)
		if err == nil || !strings.Contains(err.Error(), "sinks[0].replicate.source") {
			t.Fatalf("error %v, want one naming sinks[0].replicate.source", err)
		}
	})
}
