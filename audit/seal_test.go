package audit_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
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

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
)

// These tests play the attacker. The helpers below forge records exactly
// as docs/audit.md describes the format, as someone who read the docs (but
// does not hold the sealing key) would.

// splitLine returns a line's body (without seal and hash members) and its
// seal ("" when unsealed).
func splitLine(l []byte) (body []byte, seal string) {
	l = bytes.TrimSuffix(l, []byte("\n"))
	l = append([]byte(nil), l[:len(l)-len(`,"hash":"`)-64-len(`"}`)]...)
	if i := bytes.LastIndex(l, []byte(`,"seal":"`)); i >= 0 && len(l)-i == len(`,"seal":"`)+64+1 {
		seal = string(l[i+len(`,"seal":"`) : i+len(`,"seal":"`)+64])
		l = l[:i]
	}
	return append(l, '}'), seal
}

// joinLine builds a line from a body and a seal, with the hash recomputed.
func joinLine(body []byte, seal string) ([]byte, string) {
	b := append([]byte(nil), body[:len(body)-1]...)
	if seal != "" {
		b = append(b, `,"seal":"`+seal+`"`...)
	}
	sum := sha256.Sum256(append(append([]byte(nil), b...), '}'))
	h := hex.EncodeToString(sum[:])
	return append(b, `,"hash":"`+h+`"}`+"\n"...), h
}

// setPos rewrites a body's index and prev.
func setPos(body []byte, index int, prev string) []byte {
	i := bytes.Index(body, []byte(`,"prev":"`)) + len(`,"prev":"`) + 64 + 1
	return append([]byte(fmt.Sprintf(`{"index":%d,"prev":"%s"`, index, prev)), body[i:]...)
}

func hmacHex(key, msg []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))
}

// evolveKey is the documented one-way step k_{j+1} = HMAC(k_j, label).
func evolveKey(k []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("godwit audit key evolve"))
	return m.Sum(nil)
}

// rechain renumbers and re-chains the lines from position from on (0-based)
// after a manipulation, as a forger who knows the algorithm does. Seals are
// kept: the forger has no key.
func rechain(ls [][]byte, from int) [][]byte {
	out := make([][]byte, len(ls))
	copy(out, ls)
	prev := audit.Genesis
	for i := range out {
		body, seal := splitLine(out[i])
		if i >= from {
			out[i], prev = joinLine(setPos(body, i+1, prev), seal)
			continue
		}
		r, _ := audit.DecodeLine(out[i])
		prev = r.Hash
	}
	return out
}

func rewrite(l []byte, old, new string) []byte {
	body, seal := splitLine(l)
	l, _ = joinLine(bytes.Replace(body, []byte(old), []byte(new), 1), seal)
	return l
}

// forgedAppend is the forgery of issue 16: a record appended with the right
// index, prev and hash, carrying the seal of the record before it (or none,
// or one made with the forger's own key).
func forgedAppend(ls [][]byte, seal func(body []byte, copied string) string) [][]byte {
	last, _ := audit.DecodeLine(ls[len(ls)-1])
	body, copied := splitLine(ls[len(ls)-1])
	body = bytes.Replace(body, []byte(`"message":"`), []byte(`"message":"all clear; `), 1)
	body = setPos(body, int(last.Index)+1, last.Hash)
	l, _ := joinLine(body, seal(body, copied))
	return append(append([][]byte(nil), ls...), l)
}

func stateKey(t testing.TB, path string) (key []byte, next uint64) {
	t.Helper()
	b, err := os.ReadFile(path + ".state")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Seal struct {
			Next uint64 `json:"next"`
			Key  string `json:"key"`
		} `json:"seal"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	k, err := hex.DecodeString(st.Seal.Key)
	if err != nil || len(k) != 32 {
		t.Fatalf("state file seal.key %q", st.Seal.Key)
	}
	return k, st.Seal.Next
}

func wantVerifyError(t *testing.T, err error, want error, line int) {
	t.Helper()
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, want) || ve.Line != line {
		t.Fatalf("verify = %v, want %v at line %d", err, want, line)
	}
}

func TestCheckSealed(t *testing.T) {
	path, head := systemLog(t, 10)
	keys := keyFiles(t, path)
	if len(keys) != 1 || keys[0] != path+".key" {
		t.Fatalf("key files %v, want %s.key", keys, path)
	}
	ls := lines(t, path)
	check := func(t *testing.T, forged [][]byte) (audit.Report, error) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "forged.jsonl")
		writeLines(t, p, forged)
		return verifySealed(t, p, keys...)
	}

	t.Run("Intact", func(t *testing.T) {
		rep := checkSealed(t, path, keys...)
		if rep.Records != 10 || rep.Head != head || rep.SealedFrom() != 1 || len(rep.Segments) != 1 || rep.Segments[0].Records != 10 {
			t.Fatalf("report %+v", rep)
		}
	})
	t.Run("ForgedAppendRecomputedChain", func(t *testing.T) {
		// Issue 16, hole 1: the chain alone accepts it, even against the
		// head exported before the forgery.
		for name, seal := range map[string]func([]byte, string) string{
			"CopiedSeal": func(_ []byte, copied string) string { return copied },
			"NoSeal":     func([]byte, string) string { return "" },
			"OwnKey": func(body []byte, _ string) string {
				k := make([]byte, 32)
				rand.Read(k)
				return hmacHex(k, body)
			},
		} {
			t.Run(name, func(t *testing.T) {
				forged := forgedAppend(ls, seal)
				p := filepath.Join(t.TempDir(), "forged.jsonl")
				writeLines(t, p, forged)
				f, _ := os.Open(p)
				defer f.Close()
				if rep, err := audit.Check(f, &head); err != nil && name != "NoSeal" || rep.Records != 11 && name != "NoSeal" {
					t.Fatalf("key-less check = %v, %+v: the plain chain was expected to accept this forgery", err, rep)
				}
				_, err := check(t, forged)
				want := audit.ErrBadSeal
				if name == "NoSeal" {
					want = audit.ErrUnsealed
				}
				wantVerifyError(t, err, want, 11)
			})
		}
	})
	for name, tc := range map[string]struct {
		forge func() [][]byte
		line  int
	}{
		"Edit": {func() [][]byte {
			f := append([][]byte(nil), ls...)
			f[4] = rewrite(f[4], "start 5", "start 9")
			return rechain(f, 4)
		}, 5},
		"Delete": {func() [][]byte {
			f := append(append([][]byte(nil), ls[:4]...), ls[5:]...)
			return rechain(f, 4)
		}, 5},
		"Reorder": {func() [][]byte {
			f := append([][]byte(nil), ls...)
			f[4], f[5] = f[5], f[4]
			return rechain(f, 4)
		}, 5},
		"Insert": {func() [][]byte {
			f := append(append(append([][]byte(nil), ls[:4]...), ls[2]), ls[4:]...)
			return rechain(f, 4)
		}, 5},
		"StripSeals": {func() [][]byte {
			f := append([][]byte(nil), ls...)
			for i := range f {
				body, _ := splitLine(f[i])
				f[i], _ = joinLine(body, "")
			}
			return rechain(f, 0)
		}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			forged := tc.forge()
			p := filepath.Join(t.TempDir(), "forged.jsonl")
			writeLines(t, p, forged)
			if _, err := verifyPath(p); err != nil {
				t.Fatalf("the re-chained forgery should pass the key-less check: %v", err)
			}
			_, err := check(t, forged)
			want := audit.ErrBadSeal
			if name == "StripSeals" {
				want = audit.ErrUnsealed
			}
			wantVerifyError(t, err, want, tc.line)
		})
	}
	t.Run("Truncate", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "cut.jsonl")
		writeLines(t, p, ls[:7])
		f, _ := os.Open(p)
		defer f.Close()
		k, err := audit.ReadKeyFile(keys[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = audit.CheckSealed(f, &head, []audit.VerifyKey{k})
		wantVerifyError(t, err, audit.ErrTailCut, 8)
	})
	t.Run("WrongKey", func(t *testing.T) {
		other, _ := systemLog(t, 1)
		_, err := verifySealed(t, path, keyFiles(t, other)...)
		wantVerifyError(t, err, audit.ErrBadSeal, 1)
		// A key for a later segment only: the first sealed record has none.
		p := filepath.Join(t.TempDir(), "k")
		b, _ := os.ReadFile(keys[0])
		os.WriteFile(p, bytes.Replace(b, []byte(`"first_index": 1,`), []byte(`"first_index": 5,`), 1), 0o600)
		_, err = verifySealed(t, path, p)
		wantVerifyError(t, err, audit.ErrUnknownKey, 1)
	})
	t.Run("EditedKeyFile", func(t *testing.T) {
		b, _ := os.ReadFile(keys[0])
		var kf map[string]any
		if err := json.Unmarshal(b, &kf); err != nil {
			t.Fatal(err)
		}
		k := []byte(kf["key"].(string))
		k[0] ^= 1 // '0'<->'1', 'a'<->'`'... keep it hex:
		if k[0] < '0' || k[0] > 'f' || (k[0] > '9' && k[0] < 'a') {
			k[0] = '0'
		}
		kf["key"] = string(k)
		b, _ = json.Marshal(kf)
		p := filepath.Join(t.TempDir(), "k")
		os.WriteFile(p, b, 0o600)
		if _, err := audit.ReadKeyFile(p); !errors.Is(err, audit.ErrBadKey) || !strings.Contains(err.Error(), "edited") {
			t.Fatalf("ReadKeyFile(edited) = %v, want ErrBadKey saying it was edited", err)
		}
	})
}

// TestSink_stolenKey: whoever steals godwit's current sealing key (from the
// state file or memory) can seal what comes next, but cannot change or
// re-seal anything sealed before the theft.
func TestSink_stolenKey(t *testing.T) {
	path, _ := systemLog(t, 10)
	stolen, next := stateKey(t, path)
	if next != 11 {
		t.Fatalf("state key seals index %d, want 11", next)
	}
	ls := lines(t, path)
	keys := keyFiles(t, path)

	t.Run("OnlyTheCurrentKeyIsKept", func(t *testing.T) {
		// The key file holds k_0; the state holds k_10 and nothing earlier.
		var kf struct{ Key string }
		b, _ := os.ReadFile(keys[0])
		json.Unmarshal(b, &kf)
		k, _ := hex.DecodeString(kf.Key)
		state, _ := os.ReadFile(path + ".state")
		for j := range 10 {
			if bytes.Contains(state, []byte(hex.EncodeToString(k))) {
				t.Fatalf("the state file still holds k_%d", j)
			}
			k = evolveKey(k)
		}
		if !bytes.Equal(k, stolen) {
			t.Fatal("the state key is not k_0 evolved 10 times")
		}
		for _, p := range []string{path + ".state", keys[0]} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v, %v; want 0600 (it holds a key)", p, fi.Mode(), err)
			}
		}
	})
	t.Run("CannotResealEarlierRecords", func(t *testing.T) {
		// Try the stolen key and every key derived from it.
		for try, k := 0, stolen; try < 20; try, k = try+1, evolveKey(k) {
			f := append([][]byte(nil), ls...)
			body, _ := splitLine(f[2])
			body = bytes.Replace(body, []byte("start 3"), []byte("nothing"), 1)
			f[2], _ = joinLine(body, hmacHex(k, body))
			f = rechain(f, 2)
			p := filepath.Join(t.TempDir(), "forged.jsonl")
			writeLines(t, p, f)
			_, err := verifySealed(t, p, keys...)
			wantVerifyError(t, err, audit.ErrBadSeal, 3)
		}
	})
	t.Run("CanSealOnlyWhatComesNext", func(t *testing.T) {
		// The limit of forward security: the thief holds k_11 and can
		// append record 11. Everything up to 10 stays as it was.
		f := forgedAppend(ls, func(body []byte, _ string) string { return hmacHex(stolen, body) })
		p := filepath.Join(t.TempDir(), "appended.jsonl")
		writeLines(t, p, f)
		if rep := checkSealed(t, p, keys...); rep.Records != 11 {
			t.Fatalf("report %+v", rep)
		}
	})
}

// TestSink_refusesForgedTail is issue 16's restart: after a clean stop a
// record is appended with a correct chain; the restarted sink must not
// adopt it. It halts naming the record, the runner halts, nothing captured
// is acknowledged, and once the operator takes the forgery out every event
// is recorded.
func TestSink_refusesForgedTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close(context.Background())
	drops := func(from, n int) [][]byte {
		var out [][]byte
		for i := range n {
			out = append(out, evt{op: "drop", db: "shop", coll: fmt.Sprint("c", from+i), at: time.Duration(from+i) * time.Second}.raw())
		}
		return out
	}
	run := func(s *audit.Sink, wantAcked uint64) (*sink.Runner, error) {
		r := sink.NewRunner(outbox.SinkCursor("audit"), ob, s, sink.RunnerConfig{MaxAttempts: 1}, zerolog.Nop())
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		err := r.WaitAcked(ctx, wantAcked)
		cancel()
		if e := <-done; err == nil {
			err = e
		}
		return r, err
	}
	if _, err := ob.Append(ctx, "src", drops(0, 10), outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	s := open(t, audit.Config{Path: path})
	if _, err := run(s, 10); err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)
	clean := lines(t, path)

	forged := forgedAppend(clean, func(_ []byte, copied string) string { return copied })
	writeLines(t, path, forged)
	// Captured while the daemon was down, and after the restart.
	if _, err := ob.Append(ctx, "src", drops(10, 5), outbox.Checkpoint{Token: []byte{5, 0, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}

	s, err = audit.Open(audit.Config{Path: path}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open = %v: the daemon must keep serving", err)
	}
	herr := s.Halted()
	if !errors.Is(herr, audit.ErrBadSeal) || !strings.Contains(herr.Error(), "record index 11") {
		t.Fatalf("Halted() = %v, want ErrBadSeal naming record index 11", herr)
	}
	r, err := run(s, 15)
	if !errors.Is(err, sink.ErrHalted) {
		t.Fatalf("runner = %v, want halted", err)
	}
	if st := r.Status(); !st.Halted || st.Acked != 10 || !strings.Contains(st.LastError, "record index 11") {
		t.Fatalf("runner status %+v, want halted at 10 naming record 11", st)
	}
	closeSink(t, s)
	if got := lines(t, path); len(got) != 11 {
		t.Fatalf("the halted sink wrote: %d lines", len(got))
	}

	// The operator keeps the forgery as evidence and restores the log.
	writeLines(t, path, clean)
	s = open(t, audit.Config{Path: path})
	if _, err := run(s, 15); err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)
	recs := readLog(t, path)
	if len(ofClass(recs, audit.ClassDrop)) != 15 {
		t.Fatalf("%d drop records, want 15: an event was lost", len(ofClass(recs, audit.ClassDrop)))
	}
	checkSealed(t, path, keyFiles(t, path)...)
}

// TestSink_tailMustMatchOutbox: a record after the saved state with a valid
// seal (made with a stolen key) still has to belong to the outbox event it
// claims.
func TestSink_tailMustMatchOutbox(t *testing.T) {
	setup := func(t *testing.T) (string, *feed) {
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		f := &feed{}
		deliver(t, s, f.records(fixture(t, "drop"), fixture(t, "rename")))
		closeSink(t, s)
		return path, f
	}
	forgeDrop := func(t *testing.T, path string, seq int) {
		stolen, _ := stateKey(t, path)
		ls := lines(t, path)
		f := forgedAppend(ls[:1:1], func([]byte, string) string { return "" }) // a drop record's shape
		body, _ := splitLine(f[1])
		last, _ := audit.DecodeLine(ls[len(ls)-1])
		body = setPos(body, int(last.Index)+1, last.Hash)
		body = bytes.Replace(body, []byte(`"seq":1,`), []byte(fmt.Sprintf(`"seq":%d,`, seq)), 1)
		l, _ := joinLine(body, hmacHex(stolen, body))
		writeLines(t, path, append(ls, l))
	}
	t.Run("AlreadyProcessed", func(t *testing.T) {
		path, _ := setup(t)
		forgeDrop(t, path, 1)
		s := openHalted(t, audit.Config{Path: path}, audit.ErrTailMismatch)
		if !strings.Contains(s.Halted().Error(), "record 3") {
			t.Fatalf("Halted() = %v, want it to name record 3", s.Halted())
		}
	})
	t.Run("NotProducedByItsEvent", func(t *testing.T) {
		path, f := setup(t)
		forgeDrop(t, path, 3)
		s := open(t, audit.Config{Path: path}) // the seal is valid: accepted for now
		defer s.Close(context.Background())
		err := s.Deliver(context.Background(), f.evts(evt{op: "insert", db: "shop", coll: "orders", id: 1}))
		if !errors.Is(err, sink.ErrHalted) || !errors.Is(err, audit.ErrTailMismatch) || !strings.Contains(err.Error(), "record 3") {
			t.Fatalf("Deliver = %v, want a halt naming record 3", err)
		}
	})
	t.Run("CrashTailIsAccepted", func(t *testing.T) {
		// The genuine case: records written, state not saved.
		path, f := setup(t)
		s := open(t, audit.Config{Path: path})
		batch := f.records(fixture(t, "dropDatabase"))
		audit.FailAt(s, "before-state")
		if err := s.Deliver(context.Background(), batch); !errors.Is(err, audit.ErrCrash) {
			t.Fatal(err)
		}
		audit.Crash(s)
		s = open(t, audit.Config{Path: path})
		if err := s.Halted(); err != nil {
			t.Fatal(err)
		}
		deliver(t, s, batch)
		closeSink(t, s)
		if recs := readLog(t, path); len(recs) != 3 {
			t.Fatalf("%d records, want 3", len(recs))
		}
		checkSealed(t, path, keyFiles(t, path)...)
	})
}

// TestSink_crashKeepsSeals: a failure at any step of the write path loses
// neither a seal nor the ability to seal.
func TestSink_crashKeepsSeals(t *testing.T) {
	for _, point := range []string{"before-log-sync", "after-log-sync", "before-state"} {
		t.Run(point, func(t *testing.T) {
			path := logPath(t)
			s := open(t, audit.Config{Path: path})
			f := &feed{}
			deliver(t, s, f.records(fixture(t, "drop")))
			batch := f.records(fixture(t, "rename"), fixture(t, "dropDatabase"))
			audit.FailAt(s, point)
			if err := s.Deliver(context.Background(), batch); !errors.Is(err, audit.ErrCrash) {
				t.Fatal(err)
			}
			if point == "before-log-sync" {
				// Undone in place: the same sink goes on.
				deliver(t, s, batch)
				closeSink(t, s)
			} else {
				audit.Crash(s)
				s = open(t, audit.Config{Path: path})
				deliver(t, s, batch)
				deliver(t, s, f.records(fixture(t, "drop")))
				closeSink(t, s)
			}
			rep := checkSealed(t, path, keyFiles(t, path)...)
			if rep.Records < 3 || rep.SealedFrom() != 1 {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

// TestSink_upgrade: a log written before sealing existed keeps working;
// sealing starts at its next record, and that record's seal covers the
// unsealed records before it through its prev.
func TestSink_upgrade(t *testing.T) {
	path := legacyLog(t, 3)
	legacyState(t, path, 0)
	s := open(t, audit.Config{Path: path})
	deliver(t, s, (&feed{}).records(fixture(t, "drop")))
	closeSink(t, s)
	recs := readLog(t, path)
	if len(recs) != 4 || recs[2].Seal != "" || recs[3].Seal == "" {
		t.Fatalf("records %+v", recs)
	}
	keys := keyFiles(t, path)
	rep := checkSealed(t, path, keys...)
	if rep.SealedFrom() != 4 {
		t.Fatalf("sealed from %d, want 4", rep.SealedFrom())
	}
	// Rewriting an old record now breaks the first seal.
	ls := lines(t, path)
	ls[1] = rewrite(ls[1], "start 2", "start 7")
	writeLines(t, path, rechain(ls, 1))
	_, err := verifySealed(t, path, keys...)
	wantVerifyError(t, err, audit.ErrBadSeal, 4)
}

// TestSink_rotate: a new key starts a new segment; verify needs both keys.
func TestSink_rotate(t *testing.T) {
	path, _ := systemLog(t, 3)
	first := keyFiles(t, path)
	s, err := audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithNewKey())
	if err != nil {
		t.Fatal(err)
	}
	seg, ok := s.Sealing()
	if !ok || seg.Start != 4 || seg.KeyFile == first[0] {
		t.Fatalf("Sealing() = %+v, %v", seg, ok)
	}
	if err := s.RecordSystem(context.Background(), audit.SystemEvent{Class: audit.ClassDaemonStart}); err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)
	rep := checkSealed(t, path, first[0], seg.KeyFile)
	if len(rep.Segments) != 2 || rep.Segments[1].FirstIndex != 4 || rep.Segments[1].KeyID != seg.KeyID {
		t.Fatalf("segments %+v", rep.Segments)
	}
	_, err = verifySealed(t, path, first...)
	wantVerifyError(t, err, audit.ErrBadSeal, 4)
}

// TestDecodeLine_strict is issue 16, hole 2: records that readers could
// read differently are refused everywhere a record is read.
func TestDecodeLine_strict(t *testing.T) {
	path, _ := systemLog(t, 2)
	ls := lines(t, path)
	r2, _ := audit.DecodeLine(ls[1])
	for name, tc := range map[string]struct {
		insert string
		reason string
	}{
		"InvalidUTF8":      {`"x":"` + "\xff\xfe\xc0\xaf" + `",`, "UTF-8"},
		"DuplicateNested":  {`"details":{"a":1,"a":2},`, `"a" given twice`},
		"DuplicateTopSeal": {`"seal":"` + audit.Genesis + `",`, `"seal" given twice`},
		// Go matches member names regardless of case: "Class" would
		// override class for Go and be ignored by other readers.
		"CaseFolded":       {`"Class":"drop",`, "snake_case"},
		"UnicodeFolded":    {`"ſeverity":"critical",`, "snake_case"},
		"NestedCaseFolded": {`"ns":{"db":"a","DB":"b"},`, "snake_case"},
	} {
		t.Run(name, func(t *testing.T) {
			body, seal := splitLine(ls[1])
			body = bytes.Replace(body, []byte(`"message":`), []byte(tc.insert+`"message":`), 1)
			l, _ := joinLine(setPos(body, 3, r2.Hash), seal)
			if _, err := audit.DecodeLine(l); !errors.Is(err, audit.ErrMalformedRecord) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("DecodeLine = %v, want ErrMalformedRecord saying %s", err, tc.reason)
			}
			p := filepath.Join(t.TempDir(), "bad.jsonl")
			writeLines(t, p, append(append([][]byte(nil), ls...), l))
			_, err := verifyPath(p)
			wantVerifyError(t, err, audit.ErrMalformedRecord, 3)
			f, _ := os.Open(p)
			defer f.Close()
			var errs []error
			for _, err := range audit.Query(f, audit.Filter{}) {
				if err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 3") {
				t.Fatalf("Query errors %v, want one naming line 3", errs)
			}
		})
	}
}
