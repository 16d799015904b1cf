package change_test

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/changetest"
)

func TestParse_RecordedEvents(t *testing.T) {
	t.Run("insert", func(t *testing.T) {
		e := mustParse(t, "insert")
		if e.OperationType != change.OpInsert || e.NS != (change.Namespace{DB: "shop", Coll: "orders"}) {
			t.Fatalf("got %s %v", e.OperationType, e.NS)
		}
		if e.ClusterTime.T != 1705000000 || e.ClusterTime.I != 1 {
			t.Errorf("clusterTime = %v", e.ClusterTime)
		}
		if !e.WallTime.Equal(time.UnixMilli(1705000000123)) {
			t.Errorf("wallTime = %v", e.WallTime)
		}
		if e.FullDocument.Lookup("sku").StringValue() != "A-1" {
			t.Errorf("fullDocument = %v", e.FullDocument)
		}
		if _, ok := e.DocumentID(); !ok {
			t.Error("no document key _id")
		}
		if e.Token.Lookup("_data").StringValue() == "" {
			t.Error("resume token not parsed")
		}
	})
	t.Run("update", func(t *testing.T) {
		e := mustParse(t, "update")
		u := e.UpdateDescription
		if u == nil {
			t.Fatal("no updateDescription")
		}
		if got := u.UpdatedFields.Lookup("qty").Int32(); got != 4 {
			t.Errorf("updatedFields.qty = %d", got)
		}
		if len(u.RemovedFields) != 1 || u.RemovedFields[0] != "note" {
			t.Errorf("removedFields = %v", u.RemovedFields)
		}
		if len(u.TruncatedArrays) != 1 || u.TruncatedArrays[0] != (change.TruncatedArray{Field: "history", NewSize: 2}) {
			t.Errorf("truncatedArrays = %v", u.TruncatedArrays)
		}
		if u.DisambiguatedPaths == nil {
			t.Error("disambiguatedPaths not kept")
		}
		if e.FullDocument != nil {
			t.Error("update without lookup has no fullDocument")
		}
	})
	t.Run("update whose lookup found nothing", func(t *testing.T) {
		e := mustParse(t, "update_lookup_gone")
		if e.FullDocument != nil {
			t.Error("fullDocument: null must parse as absent")
		}
	})
	t.Run("delete with pre-image", func(t *testing.T) {
		e := mustParse(t, "delete_with_preimage")
		if e.FullDocumentBeforeChange.Lookup("sku").StringValue() != "A-2" {
			t.Error("pre-image not parsed")
		}
	})
	t.Run("transaction", func(t *testing.T) {
		a, b := mustParse(t, "txn_insert_1"), mustParse(t, "txn_insert_2")
		if !a.HasTxn || a.TxnNumber != 7 || !b.HasTxn {
			t.Fatalf("txnNumber not parsed: %v %v", a.TxnNumber, a.HasTxn)
		}
		if !bytesEqual(a.LSID, b.LSID) {
			t.Error("events of one transaction must share lsid")
		}
	})
	t.Run("rename", func(t *testing.T) {
		e := mustParse(t, "rename")
		if e.To != (change.Namespace{DB: "shop", Coll: "orders_2024"}) {
			t.Errorf("to = %v", e.To)
		}
	})
	t.Run("dropDatabase has no collection", func(t *testing.T) {
		e := mustParse(t, "dropDatabase")
		if e.NS.String() != "legacy" {
			t.Errorf("ns = %q", e.NS.String())
		}
	})
	t.Run("invalidate has no namespace", func(t *testing.T) {
		e := mustParse(t, "invalidate")
		if e.OperationType != change.OpInvalidate || e.NS.DB != "" {
			t.Errorf("got %s %v", e.OperationType, e.NS)
		}
	})
	t.Run("expanded DDL events", func(t *testing.T) {
		for _, n := range []string{"createIndexes", "dropIndexes", "create", "modify", "shardCollection"} {
			e := mustParse(t, n)
			if e.OperationType != n || !change.Known(n) {
				t.Errorf("%s parsed as %q", n, e.OperationType)
			}
		}
	})
	t.Run("split fragments", func(t *testing.T) {
		f1, f2 := mustParse(t, "split_1"), mustParse(t, "split_2")
		if f1.Split == nil || *f1.Split != (change.Split{Fragment: 1, Of: 2}) || f2.Split == nil || f2.Split.Fragment != 2 {
			t.Errorf("splitEvent = %v, %v", f1.Split, f2.Split)
		}
	})
	t.Run("unknown operation type is kept", func(t *testing.T) {
		e := mustParse(t, "unknown_op")
		if e.OperationType != "reshardBlockingWrites" || change.Known(e.OperationType) {
			t.Errorf("got %q", e.OperationType)
		}
	})
}

func TestParse_Malformed(t *testing.T) {
	cases := map[string][]byte{
		"not BSON":          []byte("hello"),
		"truncated":         changetest.Event("insert")[:20],
		"ns is a string":    mustMarshal(t, bson.D{{Key: "operationType", Value: "insert"}, {Key: "ns", Value: "shop.orders"}}),
		"token is a number": mustMarshal(t, bson.D{{Key: "_id", Value: 5}}),
		"removedFields holds numbers": mustMarshal(t, bson.D{{Key: "updateDescription",
			Value: bson.D{{Key: "removedFields", Value: bson.A{1}}}}}),
		// The driver's Raw.Validate panics on these.
		"length prefix 0": {0, 0, 0, 0, 0},
		"length prefix 3": {3, 0, 0, 0, 0},
		"length prefix 4": {4, 0, 0, 0, 0, 0, 0},
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := change.Parse(raw); !errors.Is(err, change.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range changetest.Names() {
		f.Add([]byte(changetest.Event(n)))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := change.Parse(raw)
		if err != nil {
			if !errors.Is(err, change.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		_ = e.NS.String()
		e.DocumentID()
	})
}

func mustParse(t *testing.T, name string) *change.Event {
	t.Helper()
	e, err := change.Parse(changetest.Event(name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }
