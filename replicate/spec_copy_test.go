package replicate_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/replicate"
)

// copySource scripts a real source holding shop.orders: find and getMore
// are answered by the test, the rest as a server would.
func copySource(t *testing.T, total int32, find func(n int, cmd bson.Raw) bson.D, getMore func(n int, cmd bson.Raw) bson.D) *wireServer {
	t.Helper()
	var mu sync.Mutex
	finds, getMores := 0, 0
	return newWireServer(t, func(name string, cmd bson.Raw) bson.D {
		switch name {
		case "listDatabases":
			return bson.D{{Key: "databases", Value: bson.A{bson.D{{Key: "name", Value: "shop"}}}}, {Key: "ok", Value: 1.0}}
		case "listCollections":
			return cursorReply("shop.$cmd.listCollections", 0, []bson.Raw{raw(t, bson.D{{Key: "name", Value: "orders"}, {Key: "type", Value: "collection"}})}, nil)
		case "count":
			return bson.D{{Key: "n", Value: total}, {Key: "ok", Value: 1.0}}
		case "find":
			mu.Lock()
			finds++
			n := finds
			mu.Unlock()
			return find(n, cmd)
		case "getMore":
			mu.Lock()
			getMores++
			n := getMores
			mu.Unlock()
			return getMore(n, cmd)
		}
		return nil
	}, nil)
}

func order(t *testing.T, id int32) bson.Raw {
	return raw(t, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: id * 10}})
}

func TestSink_InitialSyncSnapshot(t *testing.T) {
	ts := func(sec uint32) *primitive.Timestamp { return &primitive.Timestamp{T: sec, I: 1} }
	t.Run("CopyReadsAtOrAfterTheStreamStart", func(t *testing.T) {
		// The majority snapshot lags the stream's start (150) at first:
		// a read then misses order 2, written at 120, which the stream
		// (starting at 150) does not carry either.
		var finds []bson.Raw
		var mu sync.Mutex
		w := copySource(t, 2, func(n int, cmd bson.Raw) bson.D {
			mu.Lock()
			finds = append(finds, cmd)
			mu.Unlock()
			if n == 1 {
				return cursorReply("shop.orders", 0, []bson.Raw{order(t, 1)}, ts(100))
			}
			return cursorReply("shop.orders", 0, []bson.Raw{order(t, 1), order(t, 2)}, ts(200))
		}, nil)
		dst := memory(t)
		cfg := replicate.Config{ID: "copy", Source: "a", Target: "lungo:memory", Include: []string{"shop.*"}, CopyBatchSize: 2}
		s := openSink(t, cfg, dst, replicate.WithStreamStart(func() (primitive.Timestamp, bool) { return *ts(150), true }))
		if err := s.InitialSync(testCtx(t), w.connect(t)); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.Client, "shop", "orders"); n != 2 {
			t.Fatalf("target holds %d documents, want 2 (the copy read before the stream's start)", n)
		}
		for _, f := range finds {
			if lvl, _ := f.Lookup("readConcern", "level").StringValueOK(); lvl != "snapshot" {
				t.Fatalf("find without readConcern snapshot: %s", f)
			}
		}
	})
	t.Run("SnapshotTooOldContinuesAfterTheLastCopiedID", func(t *testing.T) {
		var second bson.Raw
		w := copySource(t, 3, func(n int, cmd bson.Raw) bson.D {
			if n == 1 {
				return cursorReply("shop.orders", 42, []bson.Raw{order(t, 1), order(t, 2)}, ts(100))
			}
			second = cmd
			return cursorReply("shop.orders", 0, []bson.Raw{order(t, 3)}, ts(400))
		}, func(int, bson.Raw) bson.D {
			return errorReply(239, "SnapshotTooOld", "Read timestamp is older than the oldest available timestamp")
		})
		dst := memory(t)
		cfg := replicate.Config{ID: "copy", Source: "a", Target: "lungo:memory", Include: []string{"shop.*"}, CopyBatchSize: 2}
		s := openSink(t, cfg, dst)
		if err := s.InitialSync(testCtx(t), w.connect(t)); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.Client, "shop", "orders"); n != 3 {
			t.Fatalf("target holds %d documents, want 3", n)
		}
		if gt, ok := second.Lookup("filter", "_id", "$gt").Int32OK(); !ok || gt != 2 {
			t.Fatalf("the copy went on with %s, want a find of _id > 2", second)
		}
		if p := s.Status(); p.Phase != replicate.PhaseStreaming || p.Copied != 3 {
			t.Fatalf("status %+v, want streaming with 3 copied", p)
		}
	})
	t.Run("SnapshotTooOldWithoutProgressSaysWhatToChange", func(t *testing.T) {
		w := copySource(t, 3, func(n int, cmd bson.Raw) bson.D {
			if n == 1 {
				return cursorReply("shop.orders", 42, []bson.Raw{order(t, 1), order(t, 2)}, ts(100))
			}
			return errorReply(239, "SnapshotTooOld", "Read timestamp is older than the oldest available timestamp")
		}, func(int, bson.Raw) bson.D {
			return errorReply(239, "SnapshotTooOld", "Read timestamp is older than the oldest available timestamp")
		})
		dst := memory(t)
		cfg := replicate.Config{ID: "copy", Source: "a", Target: "lungo:memory", Include: []string{"shop.*"}, CopyBatchSize: 2}
		s := openSink(t, cfg, dst)
		err := s.InitialSync(testCtx(t), w.connect(t))
		if !errors.Is(err, replicate.ErrSnapshotTooOld) || !strings.Contains(err.Error(), "minSnapshotHistoryWindowInSeconds") ||
			!strings.Contains(err.Error(), "copy_batch_size") {
			t.Fatalf("InitialSync: %v, want ErrSnapshotTooOld naming the window and copy_batch_size", err)
		}
	})
}
