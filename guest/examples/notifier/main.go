//go:build wasip1

// Command notifier turns changes into notifications in an outbox
// collection, "notify.outbox", for a mailer or webhook relay to send: one
// pending notification per change, topic "<coll>.<operation>", keyed by the
// change event's resume token (a retry does not notify twice).
//
// Trigger: database (typically one collection, with a match expression
// such as {"operationType": {"$in": ["insert", "delete"]}}),
// writes.namespaces ["notify.outbox"].
package main

import (
	"errors"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/godwit-dev/godwit/guest/godwit"
)

func init() { godwit.Handle(handle) }

func handle(ev godwit.Event) error {
	_, coll := ev.Namespace()
	op := ev.OperationType()
	b := bsoncore.NewDocumentBuilder().
		AppendValue("_id", ev.ID()).
		AppendString("topic", coll+"."+op).
		AppendString("state", "pending")
	if key := ev.Lookup("documentKey", "_id"); key.Type != 0 {
		b.AppendValue("subject", key)
	}
	if status := ev.String("fullDocument", "status"); status != "" {
		b.AppendString("status", status)
	}
	err := godwit.Insert("notify.outbox", b.Build())
	if errors.Is(err, godwit.ErrDuplicateKey) {
		return nil
	}
	if err == nil {
		godwit.Logf("queued %s.%s notification", coll, op)
	}
	return err
}

func main() {}
