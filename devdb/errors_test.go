package devdb_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func TestServer_Errors(t *testing.T) {
	_, _, client := start(t)
	ctx := longCtx(t)
	db := client.Database("app")
	if _, err := db.Collection("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		run      func() error
		code     int32
		codeName string
		inMsg    string
	}{
		{"unknown command", func() error {
			return db.RunCommand(ctx, bson.D{{Key: "frobnicate", Value: 1}}).Err()
		}, 59, "CommandNotFound", "frobnicate"},
		{"drop a missing collection", func() error {
			return db.RunCommand(ctx, bson.D{{Key: "drop", Value: "missing"}}).Err()
		}, 26, "NamespaceNotFound", "app.missing"},
		{"indexes of a missing collection", func() error {
			// The driver's Indexes().List hides this error, as it does a
			// real server's.
			return db.RunCommand(ctx, bson.D{{Key: "listIndexes", Value: "missing"}}).Err()
		}, 26, "NamespaceNotFound", "app.missing"},
		{"create an existing collection", func() error {
			return db.CreateCollection(ctx, "c")
		}, 48, "NamespaceExists", "app.c"},
		{"getMore of an unknown cursor", func() error {
			return db.RunCommand(ctx, bson.D{{Key: "getMore", Value: int64(424242)}, {Key: "collection", Value: "c"}}).Err()
		}, 43, "CursorNotFound", "424242"},
		{"pipeline update", func() error {
			_, err := db.Collection("c").UpdateOne(ctx, bson.M{"_id": 1}, mongo.Pipeline{{{Key: "$set", Value: bson.M{"a": 1}}}})
			return err
		}, 115, "CommandNotSupported", "pipeline"},
		{"unsupported aggregation stage", func() error {
			_, err := db.Collection("c").Aggregate(ctx, mongo.Pipeline{{{Key: "$facet", Value: bson.M{}}}})
			return err
		}, 40324, "Location40324", "$facet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			var ce mongo.CommandError
			var we mongo.WriteException
			switch {
			case errors.As(err, &ce):
				if ce.Code != tc.code || ce.Name != tc.codeName || !strings.Contains(ce.Message, tc.inMsg) {
					t.Fatalf("error = %d %s %q, want %d %s mentioning %q", ce.Code, ce.Name, ce.Message, tc.code, tc.codeName, tc.inMsg)
				}
			case errors.As(err, &we) && len(we.WriteErrors) == 1:
				if e := we.WriteErrors[0]; e.Code != int(tc.code) || !strings.Contains(e.Message, tc.inMsg) {
					t.Fatalf("write error = %d %q, want %d mentioning %q", e.Code, e.Message, tc.code, tc.inMsg)
				}
			default:
				t.Fatalf("error = %v (%T), want code %d", err, err, tc.code)
			}
		})
	}
}

func TestServer_BadBytes(t *testing.T) {
	_, srv, client := start(t)
	ctx := longCtx(t)
	coll := client.Database("app").Collection("c")
	// A change stream stays open across the bad connections.
	cs, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)

	header := func(length, opcode int32) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint32(b[0:], uint32(length))
		binary.LittleEndian.PutUint32(b[4:], 1)
		binary.LittleEndian.PutUint32(b[12:], uint32(opcode))
		return b
	}
	garbage := map[string][]byte{
		"text":              []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"negative length":   header(-5, 2013),
		"huge length":       header(1<<30, 2013),
		"unknown opcode":    append(header(20, 9999), 0, 0, 0, 0),
		"truncated OP_MSG":  append(header(26, 2013), 0, 0, 0, 0, 0, 50, 0, 0, 0, 1),
		"bad BSON body":     append(header(31, 2013), 0, 0, 0, 0, 0, 10, 0, 0, 0, 99, 1, 2, 3, 4, 0),
		"unknown msg flags": append(header(20, 2013), 4, 0, 0, 0),
		// Found by FuzzDecodeMessage: the driver's reader panicked on it.
		"sequence of length -2^31": append(header(27, 2013), 0, 0, 0, 0, 1, 0, 0, 0, 0x80, 'x', 0),
	}
	for name, b := range garbage {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite() // a short message then ends at EOF
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			rest, err := io.ReadAll(c)
			if err != nil || len(rest) != 0 {
				t.Fatalf("server answered %d bytes (%v); want the connection closed without a reply", len(rest), err)
			}
			// The server and the driver's connections keep working.
			if _, err := coll.InsertOne(ctx, bson.M{"case": name}); err != nil {
				t.Fatal(err)
			}
			if !cs.Next(ctx) {
				t.Fatalf("change stream broke: %v", cs.Err())
			}
			if got := cs.Current.Lookup("fullDocument", "case").StringValue(); got != name {
				t.Fatalf("event for %q, want %q", got, name)
			}
		})
	}

	t.Run("a good message after garbage on a fresh connection", func(t *testing.T) {
		if err := client.Ping(ctx, nil); err != nil {
			t.Fatalf("ping after bad connections: %v", err)
		}
	})
}
