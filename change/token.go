package change

import (
	"encoding/hex"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// TokenTime returns the cluster time a resume token stands for, when the
// token's format is known: a real server's {_data: "<hex KeyString>"} (its
// first value is the cluster time, type byte 0x82 then 4 bytes seconds and
// 4 bytes increment, big-endian), or the embedded engine's {ts: Timestamp}.
// Post-batch tokens of an idle stream advance with the server's clock, so
// the time of the stored token measures how far capture is behind.
func TokenTime(token []byte) (primitive.Timestamp, bool) {
	raw := bson.Raw(token)
	if validate(raw) != nil {
		return primitive.Timestamp{}, false
	}
	if t, i, ok := raw.Lookup("ts").TimestampOK(); ok {
		return primitive.Timestamp{T: t, I: i}, true
	}
	data, ok := raw.Lookup("_data").StringValueOK()
	if !ok || len(data) < 18 {
		return primitive.Timestamp{}, false
	}
	b, err := hex.DecodeString(data[:18])
	if err != nil || b[0] != 0x82 {
		return primitive.Timestamp{}, false
	}
	return primitive.Timestamp{
		T: uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]),
		I: uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8]),
	}, true
}
