//go:build wasip1

// Command auditenricher writes one enriched audit entry per change into
// "audit.enriched": who-what-where in a flat shape (operation, namespace,
// document key, changed and removed fields, event size), keyed by the
// change event's resume token so a retried event is written once.
//
// Trigger: database, any operation types, writes.namespaces ["audit.*"].
package main

import (
	"errors"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/godwit-dev/godwit/guest/godwit"
)

func init() { godwit.Handle(handle) }

func handle(ev godwit.Event) error {
	db, coll := ev.Namespace()
	b := bsoncore.NewDocumentBuilder().
		AppendValue("_id", ev.ID()).
		AppendString("op", ev.OperationType()).
		AppendString("ns", db+"."+coll)
	if key := ev.Lookup("documentKey", "_id"); key.Type != 0 {
		b.AppendValue("key", key)
	}
	if t := ev.Lookup("wallTime"); t.Type != 0 {
		b.AppendValue("at", t)
	}
	changed := bsoncore.NewArrayBuilder()
	if upd := ev.Document("updateDescription", "updatedFields"); upd != nil {
		elems, _ := upd.Elements()
		for _, e := range elems {
			changed.AppendString(e.Key())
		}
	}
	if rem, ok := ev.Lookup("updateDescription", "removedFields").ArrayOK(); ok {
		vals, _ := rem.Values()
		for _, v := range vals {
			if s, ok := v.StringValueOK(); ok {
				changed.AppendString("-" + s)
			}
		}
	}
	b.AppendArray("fields", changed.Build())
	b.AppendInt32("size", int32(len(ev.Raw)))
	err := godwit.Insert("audit.enriched", b.Build())
	if errors.Is(err, godwit.ErrDuplicateKey) {
		return nil // written by an earlier attempt
	}
	return err
}

func main() {}
