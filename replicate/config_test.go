package replicate_test

import (
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
		{"TransactionsOff", func(c *replicate.Config) { c.Transactions = replicate.TransactionsOff }, ""},
		{"BadTransactions", func(c *replicate.Config) { c.Transactions = "sometimes" }, "transactions"},
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
