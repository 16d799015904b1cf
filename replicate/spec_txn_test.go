package replicate_test

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/replicate"
)

// txnInsert is a real-format insert event of a source transaction (lsid,
// txnNumber) at cluster time ct; op orders events of one cluster time in
// the resume token, as txnOpIndex does, then the document's id. lsid 0
// means outside any transaction.
func txnInsert(t *testing.T, lsid byte, txnNumber int64, ct uint32, op int, coll string, id int32) bson.Raw {
	t.Helper()
	d := bson.D{{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("82%08X%08X2B%04X%08X", ct, 1, op, id)}}},
		{Key: "operationType", Value: "insert"}, {Key: "clusterTime", Value: primitive.Timestamp{T: ct, I: 1}}}
	if lsid != 0 {
		d = append(d, txn(lsid, txnNumber)...)
	}
	d = append(d, bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: coll}}},
		bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}},
		bson.E{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: id}}})
	return raw(t, d)
}

// writesPerCommand lists, for every update command to shop.<coll> the
// target received, how many documents it wrote.
func writesPerCommand(w *wireServer, coll string) []int {
	var out []int
	for _, c := range w.commands("update") {
		if name, _ := c.Lookup("update").StringValueOK(); name == coll {
			ups, _ := c.Lookup("updates").Array().Values()
			out = append(out, len(ups))
		}
	}
	return out
}

func TestSink_SourceTransactionAtomicity(t *testing.T) {
	t.Run("CutByTheBatchBoundary", func(t *testing.T) {
		// The runner hands over the first two of a transaction's three
		// events: the third is read ahead from the outbox, and the whole
		// transaction is one target transaction.
		ob := openOutbox(t)
		events := [][]byte{
			txnInsert(t, 1, 5, 100, 0, "orders", 1), txnInsert(t, 1, 5, 100, 1, "orders", 2), txnInsert(t, 1, 5, 100, 2, "orders", 3),
			txnInsert(t, 0, 0, 101, 0, "other", 9),
		}
		if _, err := ob.Append(testCtx(t), "r", events, outbox.Checkpoint{}); err != nil {
			t.Fatal(err)
		}
		recs, err := ob.Read(0, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		w := newWireServer(t, nil, nil)
		s := wireTarget(t, w, replicate.Config{}, replicate.WithOutbox(ob))
		if err := s.Deliver(testCtx(t), recs[:2]); err != nil {
			t.Fatal(err)
		}
		if got := writesPerCommand(w, "orders"); len(got) != 1 || got[0] != 3 {
			t.Fatalf("writes to shop.orders per command %v, want the transaction's 3 in one", got)
		}
		if err := s.Deliver(testCtx(t), recs[2:]); err != nil {
			t.Fatal(err)
		}
		if got := writesPerCommand(w, "orders"); len(got) != 1 {
			t.Fatalf("writes to shop.orders per command %v: the event read ahead was applied again", got)
		}
		if got := writesPerCommand(w, "other"); len(got) != 1 || got[0] != 1 {
			t.Fatalf("writes to shop.other per command %v, want 1", got)
		}
	})
	t.Run("InterleavedByASharedSource", func(t *testing.T) {
		// mongos merges shard streams in resume-token order: transaction
		// 1's events on two shards surround another shard's event of the
		// same cluster time.
		w := newWireServer(t, nil, nil)
		s := wireTarget(t, w, replicate.Config{})
		w.reset()
		recs := []outbox.Record{
			{Seq: 1, Source: "r", Raw: txnInsert(t, 1, 5, 100, 0, "orders", 1)},
			{Seq: 2, Source: "r", Raw: txnInsert(t, 2, 8, 100, 0, "orders", 2)},
			{Seq: 3, Source: "r", Raw: txnInsert(t, 1, 5, 100, 1, "orders", 3)},
		}
		if err := s.Deliver(testCtx(t), recs); err != nil {
			t.Fatal(err)
		}
		if n := len(w.commands("commitTransaction")); n != 1 {
			t.Fatalf("%d target transactions, want 1 holding all of source transaction 1", n)
		}
		if got := writesPerCommand(w, "orders"); len(got) != 1 || got[0] != 3 {
			t.Fatalf("writes to shop.orders per command %v, want 3 in one", got)
		}
	})
}
