package kafka

import (
	"context"
	"math"

	"github.com/godwit-dev/godwit/sink"
)

func init() {
	sink.Register(sink.Factory[Config]{
		Name:    "kafka",
		Example: "kafka: {brokers: [HOST:9092]}",
		Check: func(c *Config, env sink.Env) error {
			if c.TLS != nil {
				env.ConfigPath(&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key)
			}
			return sink.PrefixLines("kafka.", c.Validate())
		},
		// Open does not reach the brokers: an outage at start is retried
		// by the runner, for ever (a malformed event parks at once).
		Open:        func(_ context.Context, c *Config, _ sink.Deps) (sink.Sink, error) { return Open(*c) },
		MaxAttempts: math.MaxInt,
	})
}
