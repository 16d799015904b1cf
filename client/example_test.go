package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/client"
)

// Order is the application's own model: the documents of shop.orders.
type Order struct {
	ID     string  `bson:"_id"`
	Status string  `bson:"status"`
	Total  float64 `bson:"total"`
}

// A cache invalidator: every change to an order evicts it from the
// application's cache; the typed stream decodes each event's document
// into Order.
func Example_cacheInvalidator() {
	ctx := context.Background()
	addr, shop := exampleDaemon() // in production: "127.0.0.1:7701", and the shop writes on its own

	c, err := client.Dial(ctx, addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(ctx, client.Filter{Namespaces: []string{"shop.orders"}})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	cache := map[string]Order{"o-1": {ID: "o-1"}}
	placeAndCancelOrder(ctx, shop)

	orders := client.Typed[Order](s)
	for handled := 0; handled < 3; handled++ {
		if !orders.Next(ctx) {
			var lag *client.LaggedError
			if errors.As(orders.Err(), &lag) {
				clear(cache) // events were skipped: nothing cached can be trusted
				continue
			}
			log.Fatal(orders.Err())
		}
		ev := orders.Event()
		id := ev.ID().StringValue()
		delete(cache, id)
		switch ev.Operation {
		case client.OpInsert:
			fmt.Printf("%s %s: %s, %.2f\n", ev.Operation, id, ev.Doc.Status, ev.Doc.Total)
		case client.OpUpdate:
			fmt.Printf("%s %s: %s (changed %v)\n", ev.Operation, id, ev.Doc.Status, ev.ChangedFields())
		default:
			fmt.Printf("%s %s\n", ev.Operation, id)
		}
	}
	fmt.Println("cached:", len(cache))
	// Output:
	// insert o-1: new, 42.50
	// update o-1: paid (changed [status])
	// delete o-1
	// cached: 0
}

// placeAndCancelOrder is what the shop application does meanwhile.
func placeAndCancelOrder(ctx context.Context, shop lungo.IDatabase) {
	orders := shop.Collection("orders")
	must(orders.InsertOne(ctx, Order{ID: "o-1", Status: "new", Total: 42.5}))
	must(orders.UpdateOne(ctx, bson.M{"_id": "o-1"}, bson.M{"$set": bson.M{"status": "paid"}}))
	must(orders.DeleteOne(ctx, bson.M{"_id": "o-1"}))
}

// A durable consumer: it acknowledges what it handled, and a new stream
// of the same subscription (after a restart of the application or of
// godwit) starts after the last acknowledged event.
func Example_durableConsumer() {
	ctx := context.Background()
	addr, shop := exampleDaemon()

	c, err := client.Dial(ctx, addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	filter := client.Filter{Namespaces: []string{"shop.payments"}, Operations: []string{client.OpInsert}}
	mail := func(s *client.Stream, n int) {
		for ; n > 0 && s.Next(ctx); n-- {
			var p struct {
				ID    string `bson:"_id"`
				Email string `bson:"email"`
			}
			if err := s.Event().Decode(&p); err != nil {
				log.Fatal(err)
			}
			fmt.Printf("receipt for %s to %s\n", p.ID, p.Email)
			if err := s.Ack(); err != nil { // batched: no round trip here
				log.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			log.Fatal(err)
		}
	}

	s, err := c.Subscribe(ctx, filter, client.Durable("receipts"))
	if err != nil {
		log.Fatal(err)
	}
	pay(ctx, shop, "p-1", "p-2")
	mail(s, 2)
	if err := s.Close(); err != nil { // sends the pending acks
		log.Fatal(err)
	}

	pay(ctx, shop, "p-3") // while the consumer is away
	s, err = c.Subscribe(ctx, filter, client.Durable("receipts"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("resumed:", s.Started().Resumed)
	mail(s, 1)
	s.Close()

	// A subscription no longer used is deleted, or it holds godwit's
	// retention forever.
	if err := c.DeleteSubscription(ctx, "receipts"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// receipt for p-1 to ann@example.com
	// receipt for p-2 to ann@example.com
	// resumed: true
	// receipt for p-3 to ann@example.com
}

func pay(ctx context.Context, shop lungo.IDatabase, ids ...string) {
	for _, id := range ids {
		must(shop.Collection("payments").InsertOne(ctx, bson.M{"_id": id, "email": "ann@example.com"}))
	}
}

func must[T any](_ T, err error) {
	if err != nil {
		panic(err)
	}
}
