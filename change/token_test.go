package change_test

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/change/changetest"
)

func TestTokenTime(t *testing.T) {
	real := changetest.Event("insert").Lookup("_id").Document()
	if ts, ok := change.TokenTime(real); !ok || ts != (primitive.Timestamp{T: 0x65A1B2C3, I: 1}) {
		t.Errorf("real token: %v %v", ts, ok)
	}
	embedded, _ := bson.Marshal(bson.M{"ts": primitive.Timestamp{T: 1700000000, I: 7}})
	if ts, ok := change.TokenTime(embedded); !ok || ts.T != 1700000000 || ts.I != 7 {
		t.Errorf("embedded token: %v %v", ts, ok)
	}
	for _, bad := range [][]byte{nil, {1, 2}, mustMarshal(t, bson.M{"_data": "zz"}), mustMarshal(t, bson.M{"_data": "0165A1B2C3000000012B"})} {
		if _, ok := change.TokenTime(bad); ok {
			t.Errorf("TokenTime(%x) accepted an unknown format", bad)
		}
	}
}
