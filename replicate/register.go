package replicate

import (
	"context"
	"fmt"
	"slices"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/sink"
)

// TypeName is the sink type of a replication pipeline.
const TypeName = "replicate"

func init() {
	sink.Register(sink.Factory[Config]{
		Name:    TypeName,
		Example: "replicate: {source: ID, target: URI}",
		Check: func(c *Config, env sink.Env) error {
			c.ID = env.ID
			err := sink.PrefixLines("replicate.", c.Validate())
			if c.Source != "" && !slices.Contains(env.Sources, c.Source) {
				err = joinLines(err, fmt.Errorf("replicate.source: no source with id %q", c.Source))
			}
			return err
		},
		Open: openSink,
	})
}

func joinLines(a, b error) error {
	if a == nil {
		return b
	}
	return fmt.Errorf("%v\n%v", a, b)
}

// openSink opens a pipeline's target and, for a two-way pair, links the
// pipeline to the capture of that target. The sink owns the target
// connection.
func openSink(ctx context.Context, c *Config, deps sink.Deps) (_ sink.Sink, err error) {
	rc := *c
	target, err := mongodb.Open(ctx, rc.Target, deps.Dir)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer func() {
		if err != nil {
			_ = target.Close(context.WithoutCancel(ctx))
		}
	}()
	if target.Migrated != "" {
		deps.Log.Info().Str("uri", target.Redacted).Str("backup", target.Migrated).
			Msg("converted the embedded deployment's file to the incremental store; the original is kept as the backup")
	}
	opts := []Option{WithOutbox(deps.Outbox), WithConflictHook(func(cf Conflict) {
		if deps.Audit == nil {
			return
		}
		deps.Audit(context.WithoutCancel(ctx), sink.Notice{Class: "replication_conflict",
			Source: rc.Source, Namespace: cf.Namespace.String(),
			Message: fmt.Sprintf("pipeline %s: %s of _id %v resolved by last writer wins", cf.Pipeline, cf.Operation, cf.ID),
			Details: map[string]any{"incoming": cf.Incoming, "current": cf.Current}})
	})}
	if deps.Progress != nil {
		opts = append(opts, WithProgress(deps.Progress))
	}
	if rc.Bidirectional {
		peer := ""
		for id, src := range deps.Sources {
			if SameDeployment(src.URI, rc.Target, deps.Dir) {
				peer = id
			}
		}
		if peer == "" {
			return nil, fmt.Errorf("replicate.bidirectional: no source captures the target %s; add one (the other half of the pair)", target.Redacted)
		}
		echo, ok := deps.Sources[peer].Echo.(*EchoFilter)
		if !ok {
			return nil, fmt.Errorf("replicate.bidirectional: the capture of source %s has no replicate echo filter", peer)
		}
		opts = append(opts, WithPeer(Peer{SourceID: peer, Echo: echo, Outbox: deps.Outbox}))
	}
	s, err := Open(ctx, rc, target, deps.MetadataDatabase, deps.Log, opts...)
	if err != nil {
		return nil, err
	}
	s.ownsTarget = true
	return s, nil
}

// SameDeployment reports whether two URIs name the same deployment: the
// same embedded file, or the same real URI.
func SameDeployment(a, b, dir string) bool {
	ka, pa, errA := mongodb.ParseURI(a, dir)
	kb, pb, errB := mongodb.ParseURI(b, dir)
	if errA != nil || errB != nil || ka != kb {
		return false
	}
	if ka == mongodb.EmbeddedFile {
		return pa == pb
	}
	return ka == mongodb.Real && a == b
}

// Pipelines returns the replicate sinks of a configuration, each with what
// reaches both of its deployments (godwit verify, the demo).
func Pipelines(c *config.Config) []Pipeline {
	var out []Pipeline
	for _, s := range c.Sinks {
		rc, ok := s.Settings.(*Config)
		if s.Type != TypeName || !ok {
			continue
		}
		p := Pipeline{Config: *rc, MetadataDB: c.Metadata.Database, Dir: c.Dir()}
		p.Config.ID = s.ID
		for _, src := range c.Sources {
			if src.ID == rc.Source {
				p.SourceURI = src.URI
			}
		}
		out = append(out, p)
	}
	return out
}
