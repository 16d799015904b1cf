package outbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/godwit-dev/godwit/outbox"
)

// openOutbox opens the outbox at path. At cleanup it closes it, opens the
// file again and checks what every later open relies on: bbolt's consistency
// check, every record decodes and the stored size matches them (Check), and
// sequences are dense from the oldest retained event to the last one.
func openOutbox(t testing.TB, path string, opts outbox.Options) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(path, opts)
	if err != nil {
		t.Fatalf("open outbox: %v", err)
	}
	t.Cleanup(func() {
		if err := ob.Close(context.Background()); err != nil {
			t.Errorf("close outbox: %v", err)
		}
		checkFile(t, path)
	})
	return ob
}

// newOutbox opens a fresh outbox in a temporary directory.
func newOutbox(t testing.TB, opts outbox.Options) (*outbox.Outbox, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outbox.db")
	return openOutbox(t, path, opts), path
}

func checkFile(t testing.TB, path string) {
	t.Helper()
	ob, err := outbox.Open(path, outbox.Options{})
	if err != nil {
		t.Errorf("reopen outbox for the check: %v", err)
		return
	}
	defer ob.Close(context.Background())
	if err := ob.Check(); err != nil {
		t.Errorf("outbox check: %v", err)
	}
	st := ob.Stats()
	if st.Oldest == 0 {
		if st.Bytes != 0 {
			t.Errorf("outbox holds no events but counts %d bytes", st.Bytes)
		}
		if recs, err := ob.Read(st.Last, 1, 0); err != nil || len(recs) != 0 {
			t.Errorf("empty outbox: Read after last = %d records, %v", len(recs), err)
		}
		return
	}
	next := st.Oldest
	for next <= st.Last {
		recs, err := ob.Read(next-1, 1000, 0)
		if err != nil {
			t.Errorf("read after %d: %v", next-1, err)
			return
		}
		if len(recs) == 0 {
			t.Errorf("read after %d: no records, last is %d", next-1, st.Last)
			return
		}
		for _, r := range recs {
			if r.Seq != next {
				t.Errorf("sequence %d follows %d", r.Seq, next-1)
				return
			}
			next++
		}
	}
	if next != st.Last+1 {
		t.Errorf("records end at %d, last sequence is %d", next-1, st.Last)
	}
}

// event returns a BSON document {i: int64(i), p: "xxx…"} of exactly size
// bytes (at least 24).
func event(i, size int) []byte {
	const overhead = 24
	if size < overhead {
		panic("event size below 24 bytes")
	}
	pad := size - overhead
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = append(b, 0x12, 'i', 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(i))
	b = append(b, 0x02, 'p', 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(pad+1))
	for range pad {
		b = append(b, 'x')
	}
	return append(b, 0, 0)
}

// events returns n events of size bytes numbered from first.
func events(first, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = event(first+i, size)
	}
	return out
}

// recordBytes is what one record of source with a raw event of size bytes
// counts against MaxBytes: a version byte, a length byte, the source, the
// capture time and the 8-byte key.
func recordBytes(source string, size int) int64 { return int64(2 + len(source) + 8 + 8 + size) }

func mustAppend(t testing.TB, ob *outbox.Outbox, source string, evs [][]byte, token string) uint64 {
	t.Helper()
	last, err := ob.Append(context.Background(), source, evs, outbox.Checkpoint{Token: []byte(token), Fingerprint: "fp-" + source})
	if err != nil {
		t.Fatalf("append %d events of %s: %v", len(evs), source, err)
	}
	return last
}

func mustRegister(t testing.TB, ob *outbox.Outbox, id string) outbox.SinkState {
	t.Helper()
	st, err := ob.RegisterSink(outbox.SinkCursor(id))
	if err != nil {
		t.Fatalf("register sink %s: %v", id, err)
	}
	return st
}

func mustAck(t testing.TB, ob *outbox.Outbox, sink string, seq uint64) {
	t.Helper()
	if err := ob.Ack(outbox.SinkCursor(sink), seq, 1); err != nil {
		t.Fatalf("ack %s at %d: %v", sink, seq, err)
	}
}

func mustRead(t testing.TB, ob *outbox.Outbox, after uint64, max, maxBytes int) []outbox.Record {
	t.Helper()
	recs, err := ob.Read(after, max, maxBytes)
	if err != nil {
		t.Fatalf("read after %d: %v", after, err)
	}
	return recs
}

func seqs(recs []outbox.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// appendResult is the outcome of an Append run in a goroutine.
type appendResult struct {
	last uint64
	err  error
}

func appendAsync(ctx context.Context, ob *outbox.Outbox, source string, evs [][]byte, token string) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		last, err := ob.Append(ctx, source, evs, outbox.Checkpoint{Token: []byte(token)})
		ch <- appendResult{last, err}
	}()
	return ch
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// equalJSON compares two values by their JSON form, which covers the
// exported fields that are stored.
func equalJSON(t testing.TB, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
