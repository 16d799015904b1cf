package envelope_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink/envelope"
)

func record(name string) outbox.Record {
	return outbox.Record{Seq: 42, Source: "shop", CapturedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Raw: changetest.Event(name)}
}

func encode(t *testing.T, cfg envelope.Config, name string) (envelope.Message, bool) {
	t.Helper()
	enc, err := envelope.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, ok, err := enc.Encode(record(name))
	if err != nil {
		t.Fatal(err)
	}
	return m, ok
}

func header(m envelope.Message, k string) string {
	for _, h := range m.Headers {
		if h.Key == k {
			return h.Value
		}
	}
	return ""
}

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		cfg   envelope.Config
		field string
	}{
		{envelope.Config{Format: "avro"}, "format:"},
		{envelope.Config{Encoding: "xml"}, "encoding:"},
		{envelope.Config{Format: "debezium", Encoding: "bson"}, "encoding:"},
		{envelope.Config{Name: "x"}, "name:"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	for _, ok := range []envelope.Config{{}, {Format: "godwit", Encoding: "bson"}, {Format: "debezium", Name: "fulfillment"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

func TestEncoder_Godwit(t *testing.T) {
	t.Run("HeadersIdentifyTheEvent", func(t *testing.T) {
		m, ok := encode(t, envelope.Config{}, "update")
		if !ok {
			t.Fatal("update skipped")
		}
		want := map[string]string{
			envelope.HeaderSource: "shop", envelope.HeaderSeq: "42", envelope.HeaderOperation: "update",
			envelope.HeaderNamespace: "shop.orders", envelope.HeaderClusterTime: "1705000000:2",
			envelope.HeaderContentType: "application/json",
		}
		for k, v := range want {
			if got := header(m, k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
	})
	t.Run("ValueRoundTripsToTheEvent", func(t *testing.T) {
		for _, enc := range []string{"relaxed", "canonical", "bson"} {
			m, _ := encode(t, envelope.Config{Encoding: enc}, "update")
			var got bson.Raw
			if enc == "bson" {
				got = m.Value
			} else {
				var d bson.D
				if err := bson.UnmarshalExtJSON(m.Value, enc == "canonical", &d); err != nil {
					t.Fatalf("%s: %v\n%s", enc, err, m.Value)
				}
				got, _ = bson.Marshal(d)
			}
			if enc != "relaxed" && !bytes.Equal(got, changetest.Event("update")) {
				t.Errorf("%s: value does not decode to the original event", enc)
			}
			ev, err := change.Parse(got)
			if err != nil || ev.OperationType != "update" || ev.NS.Coll != "orders" {
				t.Errorf("%s: decoded event %+v, %v", enc, ev, err)
			}
		}
	})
	t.Run("KeyIsTheDocumentKey", func(t *testing.T) {
		a, _ := encode(t, envelope.Config{}, "update")
		b, _ := encode(t, envelope.Config{Encoding: "bson"}, "update_with_lookup")
		if string(a.Key) != `{"_id":{"$oid":"65a1b2c3d4e5f60718293000"}}` {
			t.Errorf("key = %s", a.Key)
		}
		if !bytes.Equal(a.Key, b.Key) {
			t.Errorf("two changes of one document have keys %s and %s: they would land on different partitions", a.Key, b.Key)
		}
	})
	t.Run("DDLIsPublished", func(t *testing.T) {
		m, ok := encode(t, envelope.Config{}, "drop")
		if !ok || m.Key != nil || header(m, envelope.HeaderOperation) != "drop" {
			t.Errorf("drop: ok %v key %s", ok, m.Key)
		}
	})
	t.Run("MalformedIsAnError", func(t *testing.T) {
		enc, _ := envelope.New(envelope.Config{})
		if _, _, err := enc.Encode(outbox.Record{Seq: 1, Raw: []byte{1, 2, 3}}); err == nil {
			t.Fatal("garbage encoded")
		}
	})
}

// dbzEvent is what a consumer written for Debezium's MongoDB connector
// reads (schemaless JsonConverter payload).
type dbzEvent struct {
	Before            *string `json:"before"`
	After             *string `json:"after"`
	UpdateDescription *struct {
		RemovedFields   []string `json:"removedFields"`
		UpdatedFields   *string  `json:"updatedFields"`
		TruncatedArrays []struct {
			Field string `json:"field"`
			Size  int    `json:"size"`
		} `json:"truncatedArrays"`
	} `json:"updateDescription"`
	Source struct {
		Connector  string `json:"connector"`
		Name       string `json:"name"`
		TsMs       int64  `json:"ts_ms"`
		DB         string `json:"db"`
		Collection string `json:"collection"`
		Ord        int    `json:"ord"`
		TxnNumber  *int64 `json:"txnNumber"`
		Lsid       *string
	} `json:"source"`
	Op   string `json:"op"`
	TsMs int64  `json:"ts_ms"`
}

func debezium(t *testing.T, name string) (dbzEvent, envelope.Message) {
	t.Helper()
	m, ok := encode(t, envelope.Config{Format: "debezium", Name: "fulfillment"}, name)
	if !ok {
		t.Fatalf("%s skipped", name)
	}
	var v dbzEvent
	dec := json.NewDecoder(bytes.NewReader(m.Value))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v\n%s", err, m.Value)
	}
	return v, m
}

// ejson parses an Extended JSON string the way a Debezium consumer does
// (BsonDocument.parse in Java; here the Go driver).
func ejson(t *testing.T, s *string) bson.Raw {
	t.Helper()
	if s == nil {
		t.Fatal("field is null")
	}
	var d bson.D
	if err := bson.UnmarshalExtJSON([]byte(*s), true, &d); err != nil {
		t.Fatalf("%v: %s", err, *s)
	}
	raw, _ := bson.Marshal(d)
	return raw
}

func TestEncoder_Debezium(t *testing.T) {
	t.Run("Insert", func(t *testing.T) {
		v, m := debezium(t, "insert")
		ev, _ := change.Parse(changetest.Event("insert"))
		if v.Op != "c" || v.Before != nil || v.UpdateDescription != nil {
			t.Errorf("op %q before %v update %v", v.Op, v.Before, v.UpdateDescription)
		}
		if !bytes.Equal(ejson(t, v.After), ev.FullDocument) {
			t.Errorf("after %s is not the inserted document", *v.After)
		}
		if v.Source.Connector != "mongodb" || v.Source.Name != "fulfillment" || v.Source.DB != ev.NS.DB ||
			v.Source.Collection != ev.NS.Coll || v.Source.TsMs != int64(ev.ClusterTime.T)*1000 || v.Source.Ord != int(ev.ClusterTime.I) {
			t.Errorf("source %+v does not describe %s at %v", v.Source, ev.NS, ev.ClusterTime)
		}
		if v.TsMs != record("insert").CapturedAt.UnixMilli() {
			t.Errorf("ts_ms %d", v.TsMs)
		}
		var key struct{ ID string }
		if err := json.Unmarshal(m.Key, &key); err != nil {
			t.Fatal(err)
		}
		id, _ := ev.DocumentID()
		var back bson.D
		if err := bson.UnmarshalExtJSON([]byte(`{"_id":`+key.ID+`}`), false, &back); err != nil || len(back) != 1 || !rawEqual(back[0].Value, id) {
			t.Errorf("key %s does not name _id %v (%v)", m.Key, id, err)
		}
	})
	t.Run("Update", func(t *testing.T) {
		v, _ := debezium(t, "update")
		if v.Op != "u" || v.After != nil || v.UpdateDescription == nil {
			t.Fatalf("op %q after %v update %v", v.Op, v.After, v.UpdateDescription)
		}
		u := v.UpdateDescription
		if len(u.RemovedFields) != 1 || u.RemovedFields[0] != "note" {
			t.Errorf("removedFields %v", u.RemovedFields)
		}
		if got := ejson(t, u.UpdatedFields); got.Lookup("address.city").StringValue() != "Lyon" {
			t.Errorf("updatedFields %s", *u.UpdatedFields)
		}
		if len(u.TruncatedArrays) != 1 || u.TruncatedArrays[0].Field != "history" || u.TruncatedArrays[0].Size != 2 {
			t.Errorf("truncatedArrays %+v", u.TruncatedArrays)
		}
		lookup, _ := debezium(t, "update_with_lookup")
		if lookup.After == nil {
			t.Error("update with fullDocument has no after")
		}
	})
	t.Run("ReplaceIsAnUpdate", func(t *testing.T) {
		v, _ := debezium(t, "replace")
		if v.Op != "u" || v.After == nil || v.UpdateDescription != nil {
			t.Errorf("op %q after %v update %v", v.Op, v.After, v.UpdateDescription)
		}
	})
	t.Run("DeleteWithPreImage", func(t *testing.T) {
		v, m := debezium(t, "delete_with_preimage")
		ev, _ := change.Parse(changetest.Event("delete_with_preimage"))
		if v.Op != "d" || v.After != nil || !bytes.Equal(ejson(t, v.Before), ev.FullDocumentBeforeChange) {
			t.Errorf("op %q after %v before %v", v.Op, v.After, v.Before)
		}
		if !m.Tombstone() {
			t.Error("a delete does not offer a tombstone")
		}
	})
	t.Run("Transaction", func(t *testing.T) {
		v, _ := debezium(t, "txn_insert_1")
		if v.Source.TxnNumber == nil || v.Source.Lsid == nil {
			t.Errorf("transaction fields missing: %+v", v.Source)
		}
	})
	t.Run("DDLIsSkipped", func(t *testing.T) {
		for _, name := range []string{"drop", "rename", "createIndexes", "invalidate"} {
			if _, ok := encode(t, envelope.Config{Format: "debezium"}, name); ok {
				t.Errorf("%s has no Debezium form but was encoded", name)
			}
		}
	})
}

func rawEqual(a any, b bson.RawValue) bool {
	x, err := bson.Marshal(bson.D{{Key: "v", Value: a}})
	if err != nil {
		return false
	}
	y, _ := bson.Marshal(bson.D{{Key: "v", Value: b}})
	return bytes.Equal(x, y)
}

// FuzzEncoder feeds outside bytes (what a server might send) to both
// envelopes: no panic, and what is encoded as JSON is valid JSON.
func FuzzEncoder(f *testing.F) {
	for _, name := range changetest.Names() {
		f.Add([]byte(changetest.Event(name)))
	}
	f.Add([]byte{5, 0, 0, 0, 0})
	godwit, _ := envelope.New(envelope.Config{})
	dbz, _ := envelope.New(envelope.Config{Format: "debezium", Encoding: "relaxed"})
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, enc := range []*envelope.Encoder{godwit, dbz} {
			m, ok, err := enc.Encode(outbox.Record{Seq: 1, Source: "s", Raw: raw})
			if err != nil || !ok {
				continue
			}
			if !json.Valid(m.Value) {
				t.Fatalf("invalid JSON value %q", m.Value)
			}
			if m.Key != nil && !json.Valid(m.Key) {
				t.Fatalf("invalid JSON key %q", m.Key)
			}
		}
	})
}
