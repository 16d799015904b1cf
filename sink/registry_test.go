package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// memoryConfig is the section of the "memory" sink type this test
// registers, as a new sink package would.
type memoryConfig struct {
	Spool string `yaml:"spool"`
	Limit int    `yaml:"limit"`
}

type memorySink struct {
	cfg  memoryConfig
	deps sink.Deps
}

func (m *memorySink) Deliver(context.Context, []outbox.Record) error { return nil }

func init() {
	// One registration is all a new sink type needs.
	sink.Register(sink.Factory[memoryConfig]{
		Name:    "memory",
		Example: "memory: {limit: 10}",
		Check: func(c *memoryConfig, env sink.Env) error {
			env.DataPath(&c.Spool)
			var errs []string
			if c.Limit <= 0 {
				errs = append(errs, "memory.limit: must be positive")
			}
			if c.Spool == "" {
				errs = append(errs, "memory.spool: required")
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "\n"))
			}
			return nil
		},
		Open: func(_ context.Context, c *memoryConfig, deps sink.Deps) (sink.Sink, error) {
			return &memorySink{cfg: *c, deps: deps}, nil
		},
		MaxAttempts: 42,
	})
}

func TestRegister(t *testing.T) {
	const head = "data_dir: /var/lib/godwit\nsources: [{id: a, uri: 'lungo:memory'}]\nsinks:\n"
	t.Run("ConfigDecodesTheSection", func(t *testing.T) {
		c, err := config.Parse([]byte(head+"  - {id: m, type: memory, memory: {spool: spool.d, limit: 3}}\n"), "/etc/godwit")
		if err != nil {
			t.Fatal(err)
		}
		got, ok := c.Sinks[0].Settings.(*memoryConfig)
		if !ok || got.Limit != 3 || got.Spool != "/var/lib/godwit/spool.d" {
			t.Fatalf("settings %#v", c.Sinks[0].Settings)
		}
		s, err := sink.Open(context.Background(), "memory", got, sink.Deps{ID: "m"})
		if err != nil {
			t.Fatal(err)
		}
		if m := s.(*memorySink); m.cfg != *got || m.deps.ID != "m" {
			t.Fatalf("opened %+v", m)
		}
		if n := sink.DefaultMaxAttempts("memory"); n != 42 {
			t.Fatalf("DefaultMaxAttempts = %d", n)
		}
	})
	t.Run("EveryProblemNamesItsField", func(t *testing.T) {
		_, err := config.Parse([]byte(head+"  - {id: m, type: memory, memory: {limit: 0}}\n  - {id: n, type: memory}\n"), "/tmp")
		for _, want := range []string{
			"sinks[0].memory.limit: must be positive",
			"sinks[0].memory.spool: required",
			"sinks[1].memory: required for type memory (memory: {limit: 10})",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v lacks %q", err, want)
			}
		}
	})
	t.Run("SettingsBuiltInCode", func(t *testing.T) {
		c, err := config.Parse([]byte(head+"  - {id: m, type: memory, memory: {spool: s, limit: 1}}\n"), "/tmp")
		if err != nil {
			t.Fatal(err)
		}
		c.Sinks = append(c.Sinks, config.Sink{ID: "n", Type: "memory", Settings: &memoryConfig{Spool: "t", Limit: -1}})
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sinks[1].memory.limit") {
			t.Fatalf("Validate = %v", err)
		}
		c.Sinks[1].Settings = &struct{}{}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "settings of type *struct {}") {
			t.Fatalf("Validate of the wrong settings type = %v", err)
		}
	})
	t.Run("UnknownTypeListsTheRegisteredOnes", func(t *testing.T) {
		_, err := sink.Decode("rabbitmq", nil, nil, sink.Env{})
		if !errors.Is(err, sink.ErrUnknownType) || !strings.Contains(err.Error(), fmt.Sprint(sink.Types())) {
			t.Fatalf("Decode = %v", err)
		}
		if _, err := sink.Open(context.Background(), "rabbitmq", nil, sink.Deps{}); !errors.Is(err, sink.ErrUnknownType) {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("TwiceIsAProgrammingError", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("a second registration of memory did not panic")
			}
		}()
		sink.Register(sink.Factory[memoryConfig]{Name: "memory", Check: func(*memoryConfig, sink.Env) error { return nil },
			Open: func(context.Context, *memoryConfig, sink.Deps) (sink.Sink, error) { return nil, nil }})
	})
}
