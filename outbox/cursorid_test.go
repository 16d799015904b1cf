package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/godwit-dev/godwit/outbox"
)

// keys are the cursor ids of each kind and the keys godwit stored them
// under before CursorID: "trigger:"+id (trigger's sinkID), "sub:"+name
// (events.SinkPrefix) and the configured sink's id.
var keys = []struct {
	id   outbox.CursorID
	key  string
	kind outbox.CursorKind
	name string
}{
	{outbox.SinkCursor("replica"), "replica", outbox.KindSink, "replica"},
	{outbox.SinkCursor("audit-1_x"), "audit-1_x", outbox.KindSink, "audit-1_x"},
	{outbox.TriggerCursor("6560f1c2a1b2c3d4e5f60718"), "trigger:6560f1c2a1b2c3d4e5f60718", outbox.KindTrigger, "6560f1c2a1b2c3d4e5f60718"},
	{outbox.SubscriptionCursor("billing"), "sub:billing", outbox.KindSubscription, "billing"},
	{outbox.SubscriptionCursor("a:b"), "sub:a:b", outbox.KindSubscription, "a:b"},
	{outbox.TriggerCursor("sub:x"), "trigger:sub:x", outbox.KindTrigger, "sub:x"},
}

func TestCursorID_String(t *testing.T) {
	for _, k := range keys {
		t.Run(k.key, func(t *testing.T) {
			if got := k.id.String(); got != k.key {
				t.Errorf("String() = %q, want %q", got, k.key)
			}
			if k.id.Kind() != k.kind || k.id.Name() != k.name {
				t.Errorf("Kind, Name = %s, %q; want %s, %q", k.id.Kind(), k.id.Name(), k.kind, k.name)
			}
			got, err := outbox.ParseCursorID(k.key)
			if err != nil || got != k.id {
				t.Errorf("ParseCursorID(%q) = %v %v, want %v", k.key, got, err, k.id)
			}
		})
	}
}

func TestCursorID_Validate(t *testing.T) {
	for _, c := range []struct {
		name string
		id   outbox.CursorID
		want string // in the error
	}{
		{"Zero", outbox.CursorID{}, "no kind"},
		{"EmptySink", outbox.SinkCursor(""), "empty sink id"},
		{"EmptyTrigger", outbox.TriggerCursor(""), "empty trigger id"},
		{"SinkLooksLikeTrigger", outbox.SinkCursor("trigger:x"), `sink id "trigger:x" contains ':'`},
		{"SinkLooksLikeSubscription", outbox.SinkCursor("sub:x"), `sink id "sub:x" contains ':'`},
		{"SinkWithColon", outbox.SinkCursor("a:b"), `sink id "a:b" contains ':'`},
		{"SinkLooksLikeHold", outbox.SinkCursor("\x00hold:x"), "NUL"},
		{"SubscriptionWithNUL", outbox.SubscriptionCursor("a\x00"), "NUL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.id.Validate()
			if !errors.Is(err, outbox.ErrCursorID) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want ErrCursorID saying %q", err, c.want)
			}
		})
	}
}

func TestParseCursorID(t *testing.T) {
	for _, key := range []string{"", "trigger:", "sub:", "a:b", "\x00hold:x", "x\x00"} {
		if id, err := outbox.ParseCursorID(key); !errors.Is(err, outbox.ErrCursorID) {
			t.Errorf("ParseCursorID(%q) = %v, %v; want ErrCursorID", key, id, err)
		}
	}
}

// A sink id that would share its key with a trigger's or a subscription's
// cursor is refused wherever a cursor is written, before anything is.
func TestOutbox_RegisterSink_reservedIDs(t *testing.T) {
	ob, _ := newOutbox(t, outbox.Options{})
	mustAppend(t, ob, "s", events(1, 1, 100), "t1")
	for _, id := range []outbox.CursorID{outbox.SinkCursor("trigger:x"), outbox.SinkCursor("sub:x"), {}} {
		if _, err := ob.RegisterSink(id); !errors.Is(err, outbox.ErrCursorID) {
			t.Errorf("RegisterSink(%q) = %v, want ErrCursorID", id, err)
		}
		if err := ob.Ack(id, 1, 1); !errors.Is(err, outbox.ErrCursorID) {
			t.Errorf("Ack(%q) = %v, want ErrCursorID", id, err)
		}
		recs, err := ob.Read(0, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := ob.Park(id, recs[0], "boom", 1); !errors.Is(err, outbox.ErrCursorID) {
			t.Errorf("Park(%q) = %v, want ErrCursorID", id, err)
		}
	}
	if sinks, err := ob.Sinks(); err != nil || len(sinks) != 0 {
		t.Fatalf("Sinks() = %v %v, want none stored", sinks, err)
	}
}

// The typed ids read and write the keys an outbox written before them
// holds, byte for byte: an existing outbox opens unchanged.
func TestOutbox_Open_stringKeys(t *testing.T) {
	ob, path := newOutbox(t, outbox.Options{})
	mustAppend(t, ob, "s", events(1, 3, 100), "t1")
	recs, err := ob.Read(0, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Write cursors and dead letters under their string keys, as the
	// godwit before CursorID did.
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i, k := range keys {
			st, _ := json.Marshal(outbox.SinkState{Acked: uint64(i%3 + 1), Delivered: uint64(i + 10), UpdatedAt: at})
			if err := tx.Bucket([]byte("sinks")).Put([]byte(k.key), st); err != nil {
				return err
			}
			dead, err := tx.CreateBucket([]byte("dead/" + k.key))
			if err != nil {
				return err
			}
			dl, _ := json.Marshal(outbox.DeadLetter{Error: "boom " + k.key, Attempts: 3, At: at,
				RawValue: outbox.EncodeRecord(nil, recs[1].Source, recs[1].CapturedAt, recs[1].Raw)})
			if err := dead.Put(seqKey(2), dl); err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}

	ob = openOutbox(t, path, outbox.Options{})
	sinks, err := ob.Sinks()
	if err != nil {
		t.Fatal(err)
	}
	if len(sinks) != len(keys) {
		t.Errorf("Sinks() has %d cursors, want %d: %v", len(sinks), len(keys), sinks)
	}
	for i, k := range keys {
		st, ok, err := ob.Sink(k.id)
		if err != nil || !ok || st.Acked != uint64(i%3+1) || st.Delivered != uint64(i+10) || sinks[k.key] != st {
			t.Errorf("Sink(%v) = %+v %v %v; Sinks()[%q] = %+v", k.id, st, ok, err, k.key, sinks[k.key])
		}
		dead, err := ob.DeadLetters(k.id)
		if err != nil || len(dead) != 1 || dead[0].Error != "boom "+k.key || dead[0].Record.Seq != 2 {
			t.Errorf("DeadLetters(%v) = %+v %v", k.id, dead, err)
		}
	}

	// And what the typed ids write lands under the same keys.
	for _, k := range keys {
		if err := ob.RemoveSink(k.id); err != nil {
			t.Fatal(err)
		}
		if _, err := ob.RegisterSink(k.id); err != nil {
			t.Fatal(err)
		}
		if err := ob.Park(k.id, recs[2], "typed", 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for _, k := range keys {
			var st outbox.SinkState
			if err := json.Unmarshal(tx.Bucket([]byte("sinks")).Get([]byte(k.key)), &st); err != nil || st.Acked != 3 || st.Parked != 1 {
				t.Errorf("stored cursor %q = %+v %v, want acked 3 with one parked", k.key, st, err)
			}
			dead := tx.Bucket([]byte("dead/" + k.key))
			if dead == nil || dead.Get(seqKey(2)) != nil || dead.Get(seqKey(3)) == nil {
				t.Errorf("dead letters of %q are not where the typed id put them", k.key)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func seqKey(seq uint64) []byte {
	var b [8]byte
	for i := range b {
		b[7-i] = byte(seq >> (8 * i))
	}
	return b[:]
}
