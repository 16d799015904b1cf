package wasm_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// nested returns {echo: 1, a: {a: … {}}} with depth levels of documents
// below the top level.
func nested(t testing.TB, depth int) []byte {
	inner := bson.D{}
	for range depth - 1 {
		inner = bson.D{{Key: "a", Value: inner}}
	}
	return doc(t, bson.D{{Key: "echo", Value: 1}, {Key: "a", Value: inner}})
}

// TestModule_HostileOutput runs a guest that hands the host malformed,
// oversized and out-of-bounds output: each call fails with a clear error
// (or the write is refused with CodeInvalid), nothing reaches the host's
// Write, and the next call works.
func TestModule_HostileOutput(t *testing.T) {
	hostile, err := os.ReadFile("testdata/hostile.wasm")
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, wasm.Config{MemoryLimit: 16 << 20, Timeout: testwait.Long, PoolSize: 1, MaxResultBytes: 64 << 10})
	m := compile(t, r, hostile)
	ctx := context.Background()
	echo := func(t *testing.T) {
		t.Helper()
		ev := doc(t, bson.D{{Key: "echo", Value: "x"}})
		res, err := m.Call(ctx, ev, &recorder{})
		if err != nil || !bytes.Equal(res.Document, ev) {
			t.Fatalf("echo: %x, %v; want the event back", res.Document, err)
		}
	}
	t.Run("Echo", echo)
	t.Run("EchoAtTheDepthLimit", func(t *testing.T) {
		ev := nested(t, wasm.MaxDepth)
		if res, err := m.Call(ctx, ev, &recorder{}); err != nil || !bytes.Equal(res.Document, ev) {
			t.Fatalf("a result %d levels deep: %v", wasm.MaxDepth, err)
		}
	})
	for _, tc := range []struct {
		name  string
		event []byte
		want  error
		msg   string
	}{
		{"ResultNotBSON", doc(t, bson.D{{Key: "badr", Value: 1}}), wasm.ErrABI, "set_result: not a BSON document"},
		{"ResultTooLarge", doc(t, bson.D{{Key: "bigr", Value: 1}}), wasm.ErrABI, "more than the limit of 65536"},
		{"ResultTooDeep", nested(t, wasm.MaxDepth+1), wasm.ErrABI, "nested deeper than 100 levels"},
		{"LogOutsideMemory", doc(t, bson.D{{Key: "logx", Value: 1}}), wasm.ErrTrap, "outside memory"},
		{"InsertNotBSON", doc(t, bson.D{{Key: "inbd", Value: 1}}), wasm.ErrFunction, "code 2"},
		{"InsertOutsideMemory", doc(t, bson.D{{Key: "inbg", Value: 1}}), wasm.ErrFunction, "code 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &recorder{}
			res, err := m.Call(ctx, tc.event, h)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if res.Document != nil || len(h.writes) != 0 {
				t.Fatalf("a failed call returned %x and wrote %v", res.Document, h.writes)
			}
			echo(t)
		})
	}
}

func TestCheckDocument(t *testing.T) {
	all := doc(t, bson.D{
		{Key: "double", Value: 1.5}, {Key: "string", Value: "s"}, {Key: "doc", Value: bson.D{{Key: "x", Value: 1}}},
		{Key: "array", Value: bson.A{1, "two", bson.D{}}}, {Key: "binary", Value: primitive.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}},
		{Key: "undefined", Value: primitive.Undefined{}}, {Key: "oid", Value: primitive.NewObjectID()}, {Key: "bool", Value: true},
		{Key: "date", Value: primitive.DateTime(1)}, {Key: "null", Value: nil}, {Key: "regex", Value: primitive.Regex{Pattern: "a.*", Options: "i"}},
		{Key: "dbptr", Value: primitive.DBPointer{DB: "db.c", Pointer: primitive.NewObjectID()}}, {Key: "js", Value: primitive.JavaScript("f()")},
		{Key: "symbol", Value: primitive.Symbol("s")}, {Key: "scope", Value: primitive.CodeWithScope{Code: "f()", Scope: bson.D{{Key: "v", Value: bson.A{1}}}}},
		{Key: "int32", Value: int32(1)}, {Key: "ts", Value: primitive.Timestamp{T: 1, I: 2}}, {Key: "int64", Value: int64(1)},
		{Key: "dec", Value: primitive.NewDecimal128(1, 2)}, {Key: "min", Value: primitive.MinKey{}}, {Key: "max", Value: primitive.MaxKey{}},
	})
	for _, tc := range []struct {
		name string
		b    []byte
		want string // "" means valid
	}{
		{"EveryType", all, ""},
		{"Empty", doc(t, bson.D{}), ""},
		{"AtTheDepthLimit", nested(t, wasm.MaxDepth), ""},
		{"TooDeep", nested(t, wasm.MaxDepth+1), "nested deeper than 100"},
		{"Short", []byte{5, 0, 0}, "at least 5"},
		{"LengthMismatch", append(doc(t, bson.D{}), 0), "length prefix"},
		{"NoTerminator", []byte{6, 0, 0, 0, 0x0A, 0}, "element runs past"},
		{"EarlyTerminator", []byte{6, 0, 0, 0, 0, 0}, "terminator before the end"},
		{"UnknownType", []byte{8, 0, 0, 0, 0x42, 'a', 0, 0}, "unknown element type 0x42"},
		{"KeyWithoutTerminator", []byte{7, 0, 0, 0, 0x0A, 'a', 'b'}, "key without terminator"},
		{"StringWithoutNUL", patch(doc(t, bson.D{{Key: "s", Value: "abc"}}), -2, 'x'), "runs past"},
		{"NegativeStringLength", setInt32(doc(t, bson.D{{Key: "s", Value: "abc"}}), 7, -1), "runs past"},
		{"HugeStringLength", setInt32(doc(t, bson.D{{Key: "s", Value: "abc"}}), 7, 1<<30), "runs past"},
		{"EmbeddedLengthTooLarge", setInt32(doc(t, bson.D{{Key: "d", Value: bson.D{}}}), 7, 100), "embedded document with a bad length"},
		{"EmbeddedLengthTooSmall", setInt32(doc(t, bson.D{{Key: "d", Value: bson.D{}}}), 7, 4), "embedded document with a bad length"},
		{"TruncatedInt64", []byte{10, 0, 0, 0, 0x12, 'a', 0, 1, 2, 0}, "runs past"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := wasm.CheckDocument(tc.b)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("CheckDocument(%x) = %v, want %q", tc.b, err, tc.want)
			}
		})
	}
}

func patch(b []byte, at int, c byte) []byte {
	if at < 0 {
		at += len(b)
	}
	b[at] = c
	return b
}

func setInt32(b []byte, at int, v int32) []byte {
	binary.LittleEndian.PutUint32(b[at:], uint32(v))
	return b
}

// FuzzCheckDocument feeds arbitrary bytes to the validator of guest
// output: it must never panic, and what it accepts the BSON library must
// accept too.
func FuzzCheckDocument(f *testing.F) {
	for _, d := range []bson.D{
		{},
		{{Key: "a", Value: bson.A{1, bson.D{{Key: "b", Value: "c"}}}}},
		{{Key: "scope", Value: primitive.CodeWithScope{Code: "f()", Scope: bson.D{{Key: "v", Value: 1}}}}},
		{{Key: "r", Value: primitive.Regex{Pattern: "x", Options: "i"}}, {Key: "bin", Value: []byte{1, 2}}},
	} {
		f.Add(doc(f, d))
	}
	f.Add([]byte{5, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := wasm.CheckDocument(b); err != nil {
			return
		}
		if err := bsoncore.Document(b).Validate(); err != nil {
			t.Fatalf("CheckDocument accepted %x, which the BSON library refuses: %v", b, err)
		}
	})
}
