package replicate_test

import (
	"bytes"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/replicate"
)

func TestVerify(t *testing.T) {
	t.Run("ReportsEveryKindOfDifference", func(t *testing.T) {
		verifyReportsEveryKindOfDifference(t, memory)
	})
	t.Run("FieldOrder", func(t *testing.T) {
		a, b := memory(t), memory(t)
		ctx := testCtx(t)
		if _, err := a.Client.Database("s").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "x", Value: 1}, {Key: "y", Value: bson.D{{Key: "p", Value: 1}, {Key: "q", Value: 2}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client.Database("s").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "y", Value: bson.D{{Key: "q", Value: 2}, {Key: "p", Value: 1}}}, {Key: "x", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		exact, err := replicate.Verify(ctx, a.Client, b.Client, replicate.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		loose, err := replicate.Verify(ctx, a.Client, b.Client, replicate.VerifyOptions{IgnoreFieldOrder: true})
		if err != nil {
			t.Fatal(err)
		}
		if exact.Equal || !loose.Equal {
			t.Fatalf("exact equal %v, ignoring field order %v; want false, true", exact.Equal, loose.Equal)
		}
	})
}

// verifyReportsEveryKindOfDifference: verify names the missing, extra and
// differing documents of every compared namespace, through a mapping.
func verifyReportsEveryKindOfDifference(t *testing.T, open deployment) {
	a, b := open(t), open(t)
	insertMany(t, a.Client, "shop", "orders", 1, 20)
	insertMany(t, b.Client, "shop_copy", "orders", 1, 20)
	ctx := testCtx(t)
	if _, err := b.Client.Database("shop_copy").Collection("orders").DeleteOne(ctx, bson.D{{Key: "_id", Value: int32(3)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.Database("shop_copy").Collection("orders").UpdateOne(ctx, bson.D{{Key: "_id", Value: int32(7)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "changed"}}}}); err != nil {
		t.Fatal(err)
	}
	insertMany(t, b.Client, "shop_copy", "orders", 50, 1)
	// A namespace left only on the target counts too.
	insertMany(t, b.Client, "shop_copy", "stale", 1, 2)
	insertMany(t, a.Client, "shop", "same", 1, 5)
	insertMany(t, b.Client, "shop_copy", "same", 1, 5)
	insertMany(t, a.Client, "other", "ignored", 1, 1)

	var out bytes.Buffer
	rep, err := replicate.Verify(ctx, a.Client, b.Client, replicate.VerifyOptions{
		Include: []string{"shop.*"}, Mapping: map[string]string{"shop": "shop_copy"}, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Equal {
		t.Fatalf("report says equal:\n%s", out.String())
	}
	got := map[string]replicate.NSReport{}
	for _, n := range rep.Namespaces {
		got[n.Source] = n
	}
	if len(got) != 3 {
		t.Fatalf("compared %v, want shop.orders, shop.same and shop.stale", got)
	}
	o := got["shop.orders"]
	if o.Target != "shop_copy.orders" || o.Missing != 1 || o.Extra != 1 || o.Differ != 1 || len(o.First) != 3 {
		t.Fatalf("shop.orders: %+v", o)
	}
	if !got["shop.same"].Equal() || got["shop.stale"].Extra != 2 {
		t.Fatalf("shop.same %+v, shop.stale %+v", got["shop.same"], got["shop.stale"])
	}
	for _, want := range []string{"missing  _id 3", "differs  _id 7", "extra    _id 50", "shop.same → shop_copy.same: 5 documents, equal"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
