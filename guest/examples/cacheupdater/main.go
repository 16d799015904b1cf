//go:build wasip1

// Command cacheupdater keeps a read cache of every collection its trigger
// watches: collection "<db>.<coll>" is mirrored into "cache.<db>.<coll>",
// one document per source _id holding the latest full document.
//
// Trigger: database, operation types insert, update, replace, delete, with
// full_document (so updates carry the new document), writes.namespaces
// ["cache.*"]. Retries are harmless: $set upserts and deletes are
// idempotent, and an ordered trigger applies events in order.
package main

import (
	"fmt"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/godwit-dev/godwit/guest/godwit"
)

func init() { godwit.Handle(handle) }

func handle(ev godwit.Event) error {
	db, coll := ev.Namespace()
	id := ev.Lookup("documentKey", "_id")
	if db == "" || coll == "" || id.Type == 0 {
		return nil // not a document change
	}
	ns := "cache." + db + "." + coll
	filter := bsoncore.NewDocumentBuilder().AppendValue("_id", id).Build()
	switch op := ev.OperationType(); op {
	case "insert", "update", "replace":
		doc := ev.FullDocument()
		if doc == nil {
			return fmt.Errorf("%s of %s.%s carries no fullDocument: set full_document on the trigger", op, db, coll)
		}
		update := bsoncore.NewDocumentBuilder().
			StartDocument("$set").AppendDocument("doc", doc).AppendString("op", op).FinishDocument().
			Build()
		return godwit.Update(ns, filter, update, true)
	case "delete":
		return godwit.Delete(ns, filter)
	}
	return nil
}

func main() {}
