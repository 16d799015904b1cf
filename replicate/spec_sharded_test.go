package replicate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/replicate"
)

func TestSink_OpenRefusesTwoWayIntoShardedTarget(t *testing.T) {
	mongos := bson.D{{Key: "isWritablePrimary", Value: true}, {Key: "ismaster", Value: true}, {Key: "helloOk", Value: true},
		{Key: "msg", Value: "isdbgrid"}, {Key: "maxWireVersion", Value: int32(21)}, {Key: "minWireVersion", Value: int32(0)},
		{Key: "maxBsonObjectSize", Value: int32(16 << 20)}, {Key: "maxMessageSizeBytes", Value: int32(48000000)},
		{Key: "maxWriteBatchSize", Value: int32(100000)}, {Key: "localTime", Value: time.Now()},
		{Key: "logicalSessionTimeoutMinutes", Value: int32(30)}, {Key: "ok", Value: 1.0}}
	w := newWireServer(t, nil, mongos)
	conn := w.connect(t)
	cfg := replicate.Config{ID: "a2b", Source: "a", Target: w.uri(), Bidirectional: true}
	peer := replicate.WithPeer(replicate.Peer{SourceID: "b", Echo: replicate.NewEchoFilter(meta)})
	_, err := replicate.Open(testCtx(t), cfg, conn, meta, testLog(t), peer)
	if !errors.Is(err, replicate.ErrShardedTwoWay) || !strings.Contains(err.Error(), "bidirectional: false") {
		t.Fatalf("Open: %v, want ErrShardedTwoWay saying what to do", err)
	}
	// One way into the same target is fine.
	cfg.Bidirectional = false
	if _, err := replicate.Open(testCtx(t), cfg, conn, meta, testLog(t)); err != nil {
		t.Fatalf("one-way Open: %v", err)
	}
}
