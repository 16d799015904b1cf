package envelope_test

import (
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink/envelope"
)

// An insert in the Debezium MongoDB layout, as a Kafka record's key, value
// and headers.
func ExampleEncoder_Encode() {
	raw, _ := bson.Marshal(bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: "82"}}},
		{Key: "operationType", Value: "insert"},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: 3}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(1004)}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int32(1004)}, {Key: "sku", Value: "A-1"}}},
	})
	enc, _ := envelope.New(envelope.Config{Format: envelope.FormatDebezium, Name: "fulfillment"})
	m, _, _ := enc.Encode(outbox.Record{Seq: 7, Source: "shop", CapturedAt: time.UnixMilli(1700000000500), Raw: raw})
	fmt.Printf("key:   %s\nvalue: %s\n", m.Key, m.Value)
	for _, h := range m.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
	}
	// Output:
	// key:   {"id":"1004"}
	// value: {"before":null,"after":"{\"_id\":{\"$numberInt\":\"1004\"},\"sku\":\"A-1\"}","updateDescription":null,"source":{"version":"godwit","connector":"mongodb","name":"fulfillment","ts_ms":1700000000000,"snapshot":"false","db":"shop","sequence":null,"rs":"shop","collection":"orders","ord":3,"lsid":null,"txnNumber":null,"wallTime":null},"op":"c","ts_ms":1700000000500,"transaction":null}
	// godwit-source: shop
	// godwit-seq: 7
	// godwit-operation: insert
	// godwit-namespace: shop.orders
	// godwit-cluster-time: 1700000000:3
	// content-type: application/json
}
