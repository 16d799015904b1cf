package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// t0 is the event time tests start from.
var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// evt builds a change event in the server's format.
type evt struct {
	op       string
	db, coll string
	to       string // rename target "db.coll"
	at       time.Duration
	id       any // documentKey._id
	noWall   bool
	extra    bson.D
}

func (e evt) raw() []byte {
	at := t0.Add(e.at)
	d := bson.D{
		{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%X", at.UnixNano())}}},
		{Key: "operationType", Value: e.op},
		{Key: "clusterTime", Value: primitive.Timestamp{T: uint32(at.Unix()), I: 1}},
	}
	if !e.noWall {
		d = append(d, bson.E{Key: "wallTime", Value: primitive.NewDateTimeFromTime(at)})
	}
	ns := bson.D{{Key: "db", Value: e.db}}
	if e.coll != "" {
		ns = append(ns, bson.E{Key: "coll", Value: e.coll})
	}
	d = append(d, bson.E{Key: "ns", Value: ns})
	if e.to != "" {
		db, coll, _ := strings.Cut(e.to, ".")
		d = append(d, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: coll}}})
	}
	if e.id != nil {
		d = append(d, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: e.id}}})
	}
	d = append(d, e.extra...)
	b, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

func del(coll string, id int, at time.Duration) evt {
	return evt{op: "delete", db: "shop", coll: coll, id: int64(id), at: at}
}

// fixture loads a recorded real-format event from testdata/events.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "events", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var d bson.D
	if err := bson.UnmarshalExtJSON(compact.Bytes(), false, &d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	raw, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// feed numbers events as the outbox would.
type feed struct {
	source string
	seq    uint64
}

func (f *feed) records(events ...[]byte) []outbox.Record {
	out := make([]outbox.Record, len(events))
	for i, e := range events {
		f.seq++
		src := f.source
		if src == "" {
			src = "src"
		}
		out[i] = outbox.Record{Seq: f.seq, Source: src, CapturedAt: t0, Raw: e}
	}
	return out
}

func (f *feed) evts(events ...evt) []outbox.Record {
	raws := make([][]byte, len(events))
	for i, e := range events {
		raws[i] = e.raw()
	}
	return f.records(raws...)
}

func open(t testing.TB, cfg audit.Config) *audit.Sink {
	t.Helper()
	s, err := audit.Open(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func closeSink(t testing.TB, s *audit.Sink) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func deliver(t testing.TB, s *audit.Sink, batch []outbox.Record) {
	t.Helper()
	if err := s.Deliver(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

func logPath(t testing.TB) string { return filepath.Join(t.TempDir(), "audit.jsonl") }

// readLog verifies the log at path and returns its records.
func readLog(t testing.TB, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := audit.Verify(f, nil)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	for r, err := range audit.Query(f, audit.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if uint64(len(out)) != n {
		t.Fatalf("verify counted %d records, query read %d", n, len(out))
	}
	return out
}

func ofClass(recs []audit.Record, class string) []audit.Record {
	var out []audit.Record
	for _, r := range recs {
		if r.Class == class {
			out = append(out, r)
		}
	}
	return out
}

// lines returns the lines of the file at path, each with its newline.
func lines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte{'\n'})[:bytes.Count(b, []byte{'\n'})]
}

func writeLines(t testing.TB, path string, ls [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o640); err != nil {
		t.Fatal(err)
	}
}

// rehash rewrites line (with newline) to chain after prev, recomputing its
// hash exactly as docs/audit.md says a verifier does: SHA-256 over the line
// with its final `,"hash":"…"` member removed. It returns the new line and
// its hash.
func rehash(t testing.TB, line []byte, prev string) ([]byte, string) {
	t.Helper()
	line = bytes.TrimSuffix(line, []byte{'\n'})
	i := bytes.LastIndex(line, []byte(`,"hash":"`))
	body := append(append([]byte(nil), line[:i]...), '}')
	j := bytes.Index(body, []byte(`"prev":"`)) + len(`"prev":"`)
	copy(body[j:j+64], prev)
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	out := append(body[:len(body)-1:len(body)-1], []byte(`,"hash":"`+h+`"}`+"\n")...)
	return out, h
}

// systemLog writes a log of n system records and returns its path and head.
func systemLog(t testing.TB, n int) (string, audit.Head) {
	t.Helper()
	path := logPath(t)
	s := open(t, audit.Config{Path: path})
	for i := range n {
		err := s.RecordSystem(context.Background(), audit.SystemEvent{Class: audit.ClassDaemonStart,
			Message: fmt.Sprintf("start %d", i+1), Time: t0.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
	}
	h := s.Head()
	closeSink(t, s)
	return path, h
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
}

func verifyPath(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return audit.Verify(f, nil)
}

// openHalted opens the log at cfg.Path and checks that the sink refuses it:
// Open succeeds (the daemon keeps serving), Halted names the reason, and
// Deliver halts the runner without recording anything.
func openHalted(t testing.TB, cfg audit.Config, want error, opts ...audit.Option) *audit.Sink {
	t.Helper()
	s, err := audit.Open(cfg, zerolog.Nop(), opts...)
	if err != nil {
		t.Fatalf("Open = %v, want a halted sink", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	herr := s.Halted()
	if !errors.Is(herr, want) {
		t.Fatalf("Halted() = %v, want %v", herr, want)
	}
	before, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Deliver(context.Background(), (&feed{}).records(fixture(t, "drop")))
	if !errors.Is(err, sink.ErrHalted) || !errors.Is(err, want) {
		t.Fatalf("Deliver on a halted sink = %v, want sink.ErrHalted and %v", err, want)
	}
	if err := s.RecordSystem(context.Background(), audit.SystemEvent{Class: audit.ClassDaemonStart}); !errors.Is(err, sink.ErrHalted) {
		t.Fatalf("RecordSystem on a halted sink = %v, want sink.ErrHalted", err)
	}
	if after, _ := os.ReadFile(cfg.Path); !bytes.Equal(before, after) {
		t.Fatal("a halted sink changed the log")
	}
	return s
}

// keyFiles returns the verification key files written next to the log.
func keyFiles(t testing.TB, path string) []string {
	t.Helper()
	names, err := filepath.Glob(path + ".key*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// verifySealed checks the log at path with the key files.
func verifySealed(t testing.TB, path string, keyPaths ...string) (audit.Report, error) {
	t.Helper()
	var keys []audit.VerifyKey
	for _, p := range keyPaths {
		k, err := audit.ReadKeyFile(p)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return audit.CheckSealed(f, nil, keys)
}

func checkSealed(t testing.TB, path string, keyPaths ...string) audit.Report {
	t.Helper()
	rep, err := verifySealed(t, path, keyPaths...)
	if err != nil {
		t.Fatalf("verify --key %s: %v", path, err)
	}
	return rep
}

// legacyLine is a record as godwit wrote it before sealing existed.
func legacyLine(index int, prev string) ([]byte, string) {
	body := fmt.Sprintf(`{"index":%d,"prev":"%s","class":"daemon_start","severity":"low","time":"2026-05-01T10:00:00Z","recorded_at":"2026-05-01T10:00:00Z","message":"start %d"}`, index, prev, index)
	sum := sha256.Sum256([]byte(body))
	h := hex.EncodeToString(sum[:])
	return []byte(body[:len(body)-1] + `,"hash":"` + h + `"}` + "\n"), h
}

// legacyLog writes a log of n records as an older godwit did (no seals, no
// state file) and returns its path.
func legacyLog(t testing.TB, n int) string {
	t.Helper()
	path := logPath(t)
	prev := audit.Genesis
	var ls [][]byte
	for i := 1; i <= n; i++ {
		var l []byte
		l, prev = legacyLine(i, prev)
		ls = append(ls, l)
	}
	writeLines(t, path, ls)
	return path
}

// legacyState writes the state file an older godwit kept next to the log
// at path (processed through outbox sequence seq).
func legacyState(t testing.TB, path string, seq uint64) {
	t.Helper()
	ls := lines(t, path)
	last, err := audit.DecodeLine(ls[len(ls)-1])
	if err != nil {
		t.Fatal(err)
	}
	st := fmt.Sprintf(`{"version":1,"index":%d,"hash":"%s","end":%d,"processed_seq":%d,"detector":{}}`, last.Index, last.Hash, len(bytes.Join(ls, nil)), seq)
	if err := os.WriteFile(path+".state", []byte(st), 0o640); err != nil {
		t.Fatal(err)
	}
}
