package replicate_test

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/replicate"
)

// ev builds a change event: op on db.coll for document id, at cluster time
// t; extra fields are appended.
func ev(t *testing.T, op, db, coll string, id any, ct uint32, extra ...bson.E) *change.Event {
	t.Helper()
	d := bson.D{{Key: "_id", Value: bson.D{{Key: "ts", Value: primitive.Timestamp{T: ct, I: 1}}}},
		{Key: "operationType", Value: op}, {Key: "clusterTime", Value: primitive.Timestamp{T: ct, I: 1}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: coll}}}}
	if id != nil {
		d = append(d, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}})
	}
	d = append(d, extra...)
	raw, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	e, err := change.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func full(d bson.D) bson.E { return bson.E{Key: "fullDocument", Value: d} }

func txn(lsid byte, n int64) []bson.E {
	return []bson.E{
		{Key: "lsid", Value: bson.D{{Key: "id", Value: primitive.Binary{Subtype: 4, Data: []byte{lsid, 1, 2, 3}}}}},
		{Key: "txnNumber", Value: n},
	}
}

func TestEchoFilter_Observe(t *testing.T) {
	type step struct {
		ev      *change.Event
		drop    bool
		pending bool
	}
	run := func(t *testing.T, steps []step) {
		t.Helper()
		f := replicate.NewEchoFilter(meta)
		for i, s := range steps {
			if got := f.Observe(s.ev); got != s.drop {
				t.Fatalf("step %d (%s %s): drop %v, want %v", i, s.ev.OperationType, s.ev.NS, got, s.drop)
			}
			if got := f.Pending(); got != s.pending {
				t.Fatalf("step %d (%s %s): pending %v, want %v", i, s.ev.OperationType, s.ev.NS, got, s.pending)
			}
		}
	}
	mid := primitive.NewObjectID()
	marker := func(ct uint32, extra ...bson.E) *change.Event {
		return ev(t, "insert", meta, replicate.MarkersCollection, mid, ct,
			append([]bson.E{full(bson.D{{Key: "_id", Value: mid}, {Key: "kind", Value: "dml"}, {Key: "pipeline", Value: "p"}})}, extra...)...)
	}
	closing := func(ct uint32, extra ...bson.E) *change.Event {
		return ev(t, "delete", meta, replicate.MarkersCollection, mid, ct, extra...)
	}

	t.Run("EmbeddedGroupIsContiguous", func(t *testing.T) {
		run(t, []step{
			{ev(t, "insert", "shop", "orders", 1, 10), false, false},
			{marker(11), true, true},
			{ev(t, "insert", "shop", "orders", 2, 11), true, true},
			{ev(t, "update", "shop", "orders", 1, 11), true, true},
			{ev(t, "insert", meta, replicate.StateCollection, "p/applied/0", 11), true, true},
			{closing(11), true, false},
			{ev(t, "delete", "shop", "orders", 2, 12), false, false},
		})
	})
	t.Run("RealServerGroupMatchesTransaction", func(t *testing.T) {
		run(t, []step{
			{marker(20, txn(7, 3)...), true, true},
			{ev(t, "insert", "shop", "orders", 5, 20, txn(7, 3)...), true, true},
			// A user's own transaction is not ours, even while the
			// marker is open.
			{ev(t, "insert", "shop", "orders", 6, 20, txn(8, 3)...), false, true},
			{ev(t, "update", "shop", "orders", 5, 20, txn(7, 3)...), true, true},
			{closing(20, txn(7, 3)...), true, false},
			{ev(t, "insert", "shop", "orders", 7, 21, txn(7, 4)...), false, false},
		})
	})
	t.Run("DDLMarkerDropsOnlyItsOperation", func(t *testing.T) {
		did := primitive.NewObjectID()
		run(t, []step{
			{ev(t, "insert", meta, replicate.MarkersCollection, did, 30, full(bson.D{{Key: "_id", Value: did}, {Key: "kind", Value: "ddl"},
				{Key: "op", Value: "drop"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "tmp"}}}})), true, true},
			{ev(t, "insert", "shop", "tmp", 1, 30), false, true},
			{ev(t, "drop", "shop", "other", nil, 30), false, true},
			{ev(t, "drop", "shop", "tmp", nil, 31), true, true},
			{ev(t, "delete", meta, replicate.MarkersCollection, did, 31), true, false},
			{ev(t, "drop", "shop", "tmp", nil, 32), false, false},
		})
	})
	t.Run("AbandonedMarkerExpires", func(t *testing.T) {
		run(t, []step{
			{marker(40), true, true},
			{ev(t, "insert", "shop", "orders", 1, 40), true, true},
			{ev(t, "insert", "shop", "orders", 2, 200), false, false},
		})
	})
	t.Run("MetadataIsAlwaysDropped", func(t *testing.T) {
		run(t, []step{
			{ev(t, "insert", meta, "workload", "w", 50), true, false},
			{ev(t, "update", meta, replicate.VersionsCollection, "x", 50), true, false},
		})
	})
}
