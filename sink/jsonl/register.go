package jsonl

import (
	"context"

	"github.com/godwit-dev/godwit/sink"
)

func init() {
	sink.Register(sink.Factory[Config]{
		Name:    "jsonl",
		Example: "jsonl: {path: events.jsonl}",
		Check: func(c *Config, env sink.Env) error {
			env.DataPath(&c.Path)
			return sink.PrefixLines("jsonl: ", c.Validate())
		},
		Open: func(_ context.Context, c *Config, _ sink.Deps) (sink.Sink, error) { return Open(*c) },
	})
}
