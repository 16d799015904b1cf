package nats

import (
	"context"
	"math"

	"github.com/godwit-dev/godwit/sink"
)

func init() {
	sink.Register(sink.Factory[Config]{
		Name:    "nats",
		Example: "nats: {servers: [nats://HOST:4222]}",
		Check: func(c *Config, env sink.Env) error {
			env.ConfigPath(&c.CredentialsFile, &c.NKeySeedFile)
			if c.TLS != nil {
				env.ConfigPath(&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key)
			}
			return sink.PrefixLines("nats.", c.Validate())
		},
		// Open does not wait for the servers: an outage at start is
		// retried by the runner, for ever (a malformed event parks at once).
		Open:        func(ctx context.Context, c *Config, _ sink.Deps) (sink.Sink, error) { return Open(ctx, *c) },
		MaxAttempts: math.MaxInt,
	})
}
