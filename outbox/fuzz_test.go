package outbox_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/outbox"
)

// FuzzDecodeRecord feeds DecodeRecord stored record values, as a damaged or
// foreign file would hold them. It must never panic, and whatever it accepts
// must encode back to the same bytes and survive a trip through Append and
// Read unchanged.
func FuzzDecodeRecord(f *testing.F) {
	at := time.Date(2026, 11, 22, 9, 35, 16, 123456789, time.UTC)
	valid := [][]byte{
		outbox.EncodeRecord(nil, "shop", at, event(1, 24)),
		outbox.EncodeRecord(nil, "s", time.Unix(0, 0), event(2, 200)),
		outbox.EncodeRecord(nil, "", at, event(3, 30)),
		outbox.EncodeRecord(nil, strings.Repeat("x", 255), time.Unix(0, -1), event(4, 40)),
		outbox.EncodeRecord(nil, "shop", at, []byte{5, 0, 0, 0, 0}),
	}
	for _, v := range valid {
		f.Add(uint64(7), v)
		for _, n := range []int{0, 1, 2, 5, 11, len(v) - 5, len(v) - 1} {
			if n >= 0 && n < len(v) {
				f.Add(uint64(7), v[:n]) // truncated
			}
		}
	}
	wrongVersion := bytes.Clone(valid[0])
	wrongVersion[0] = 2
	f.Add(uint64(1), wrongVersion)
	longSource := bytes.Clone(valid[0])
	longSource[1] = 200 // source length beyond the value
	f.Add(uint64(1), longSource)
	badLength := bytes.Clone(valid[1])
	badLength[len(badLength)-200] = 0xff // BSON length prefix disagrees
	f.Add(uint64(1), badLength)
	f.Add(uint64(0), []byte{})

	dir := f.TempDir()
	ob := openOutbox(f, filepath.Join(dir, "outbox.db"), outbox.Options{MaxBytes: -1})

	f.Fuzz(func(t *testing.T, seq uint64, value []byte) {
		orig := bytes.Clone(value)
		r, err := outbox.DecodeRecord(seq, value)
		if err != nil {
			return
		}
		if r.Seq != seq {
			t.Fatalf("decoded seq %d from key %d", r.Seq, seq)
		}
		if got := outbox.EncodeRecord(nil, r.Source, r.CapturedAt, r.Raw); !bytes.Equal(got, orig) {
			t.Fatalf("re-encoded %x, stored %x", got, orig)
		}
		// The record must not alias the stored value: bbolt reuses it.
		for i := range value {
			value[i] ^= 0xff
		}
		if got := outbox.EncodeRecord(nil, r.Source, r.CapturedAt, r.Raw); !bytes.Equal(got, orig) {
			t.Fatal("decoded record aliases the value it was decoded from")
		}
		if r.Source == "" {
			return // Append refuses an empty source id
		}
		last, err := ob.Append(context.Background(), r.Source, [][]byte{r.Raw}, outbox.Checkpoint{Token: []byte("t")})
		if err != nil {
			t.Fatalf("append of a record DecodeRecord accepted: %v", err)
		}
		recs, err := ob.Read(last-1, 1, 0)
		if err != nil || len(recs) != 1 {
			t.Fatalf("read back event %d: %d records, %v", last, len(recs), err)
		}
		if recs[0].Seq != last || recs[0].Source != r.Source || !bytes.Equal(recs[0].Raw, r.Raw) {
			t.Fatalf("read back %d %q %x, appended %d %q %x", recs[0].Seq, recs[0].Source, recs[0].Raw, last, r.Source, r.Raw)
		}
	})
}

// FuzzParseCursorID feeds ParseCursorID cursor keys, as a damaged or
// foreign outbox file would hold them. Whatever it accepts must name a
// valid cursor whose key is the input, so no two ids share a key.
func FuzzParseCursorID(f *testing.F) {
	for _, k := range keys {
		f.Add(k.key)
	}
	for _, k := range []string{"", "trigger:", "sub:", "a:b", "\x00hold:x", "x\x00", "sub:\x00"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		id, err := outbox.ParseCursorID(key)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseCursorID(%q) = %v, which is not valid: %v", key, id, err)
		}
		if id.String() != key {
			t.Fatalf("ParseCursorID(%q).String() = %q", key, id.String())
		}
	})
}
