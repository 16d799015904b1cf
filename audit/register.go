package audit

import (
	"context"

	"github.com/godwit-dev/godwit/sink"
)

func init() {
	sink.Register(sink.Factory[Config]{
		Name:    "audit",
		Example: "audit: {path: audit.jsonl}",
		Check: func(c *Config, env sink.Env) error {
			env.DataPath(&c.Path)
			return sink.PrefixLines("audit: ", c.Validate())
		},
		Open: func(_ context.Context, c *Config, deps sink.Deps) (sink.Sink, error) { return Open(*c, deps.Log) },
	})
}
