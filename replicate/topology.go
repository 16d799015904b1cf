package replicate

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
)

// ErrShardedTwoWay is returned by Open for a two-way pipeline whose target
// is a sharded cluster (mongos). There, the target's change stream merges
// the shards' streams in resume-token order: the events of a distributed
// transaction written on other shards can sort before its marker's insert
// or after its delete, so the echo filter cannot recognise them, and a
// replicated write would come back as a user write and overwrite newer
// data. docs/replicate.md explains the choice.
var ErrShardedTwoWay = errors.New("two-way replication into a sharded cluster is not supported")

// checkTwoWayTarget refuses a two-way pipeline into a sharded cluster.
func (s *Sink) checkTwoWayTarget(ctx context.Context) error {
	if !s.cfg.Bidirectional || s.target.Engine != nil {
		return nil
	}
	var hello struct {
		Msg string `bson:"msg"`
	}
	if err := s.target.Client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return fmt.Errorf("ask the target %s whether it is sharded: %w", s.target.Redacted, err)
	}
	if hello.Msg == "isdbgrid" {
		return fmt.Errorf("replicate config: bidirectional: %w: the target %s is a mongos; replicate one way into it (bidirectional: false), or pair replica sets",
			ErrShardedTwoWay, s.target.Redacted)
	}
	return nil
}
