package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/godwit-dev/godwit/audit"
)

func TestDecodeLine(t *testing.T) {
	t.Run("TrickyStrings", func(t *testing.T) {
		// Strings and nested members that look like top-level members must
		// not confuse the duplicate check.
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		msg := `a,"class":"evil",{["index":` + "\\\"\n\u2028"
		err := s.RecordSystem(t.Context(), audit.SystemEvent{Class: "x", Message: msg,
			Details: map[string]any{"index": 7, "nested": map[string]any{"class": "y", "hash": "z"}}})
		if err != nil {
			t.Fatal(err)
		}
		closeSink(t, s)
		recs := readLog(t, path)
		if len(recs) != 1 || recs[0].Message != msg || recs[0].Index != 1 || recs[0].Class != "x" {
			t.Fatalf("records %+v", recs)
		}
	})
	path, _ := systemLog(t, 2)
	ls := lines(t, path)
	t.Run("Valid", func(t *testing.T) {
		r, err := audit.DecodeLine(ls[1])
		if err != nil {
			t.Fatal(err)
		}
		if r.Index != 2 || r.Class != audit.ClassDaemonStart || r.Message != "start 2" || len(r.Hash) != 64 || !r.Time.Equal(t0.Add(time.Second)) {
			t.Fatalf("record %+v", r)
		}
		// The hash is the documented one: SHA-256 of the line without its
		// hash member.
		line := bytes.TrimSuffix(ls[1], []byte("\n"))
		body := append(line[:len(line)-len(`,"hash":"`)-64-len(`"}`):len(line)-len(`,"hash":"`)-64-len(`"}`)], '}')
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != r.Hash {
			t.Fatal("stored hash is not SHA-256 of the line without its hash member")
		}
		// Field names and order are part of the format.
		if !bytes.HasPrefix(ls[0], []byte(`{"index":1,"prev":"`+audit.Genesis+`","class":"daemon_start","severity":"low","time":"`)) {
			t.Fatalf("line does not start as documented: %s", ls[0])
		}
	})
	for name, line := range map[string]string{
		"Empty":         "",
		"NotJSON":       "hello",
		"NoHash":        `{"index":1,"prev":"` + audit.Genesis + `","class":"x"}`,
		"HashNotLast":   `{"index":1,"hash":"` + audit.Genesis + `","prev":"` + audit.Genesis + `","class":"x"}`,
		"ShortHash":     `{"index":1,"prev":"` + audit.Genesis + `","class":"x","hash":"abc"}`,
		"UpperHash":     `{"index":1,"prev":"` + audit.Genesis + `","class":"x","hash":"` + strings.ToUpper(strings.Repeat("ab", 32)) + `"}`,
		"IndexZero":     `{"index":0,"prev":"` + audit.Genesis + `","class":"x","hash":"` + audit.Genesis + `"}`,
		"IndexString":   `{"index":"1","prev":"` + audit.Genesis + `","class":"x","hash":"` + audit.Genesis + `"}`,
		"BadPrev":       `{"index":1,"prev":"zz","class":"x","hash":"` + audit.Genesis + `"}`,
		"NoClass":       `{"index":1,"prev":"` + audit.Genesis + `","hash":"` + audit.Genesis + `"}`,
		"TwoHashes":     `{"index":1,"prev":"` + audit.Genesis + `","class":"x","hash":"` + strings.Repeat("1", 64) + `","hash":"` + audit.Genesis + `"}`,
		"EscapedTwice":  `{"index":1,"prev":"` + audit.Genesis + `","class":"x","cl\u0061ss":"y","hash":"` + audit.Genesis + `"}`,
		"TrailingSpace": `{"index":1,"prev":"` + audit.Genesis + `","class":"x","hash":"` + audit.Genesis + `"} `,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := audit.DecodeLine([]byte(line)); !errors.Is(err, audit.ErrMalformedRecord) {
				t.Fatalf("DecodeLine = %v, want ErrMalformedRecord", err)
			}
		})
	}
}

// FuzzDecodeLine feeds arbitrary bytes to the decoder of audit log lines
// (outside bytes: anyone can edit the file). It must never panic, and what
// it accepts must be a well-formed record whose Line is the input.
func FuzzDecodeLine(f *testing.F) {
	path, _ := systemLog(f, 3)
	for _, l := range lines(f, path) {
		f.Add(l)
	}
	mass := logPath(f)
	s := open(f, mdConfig(mass))
	fd := &feed{}
	deliver(f, s, fd.evts(cat(deletes("orders", 1, 7, 0, time.Second), []evt{later(time.Minute), {op: "rename", db: "a", coll: "b", to: "a.c"}})...))
	closeSink(f, s)
	for _, l := range lines(f, mass) {
		f.Add(l)
	}
	f.Add([]byte(`{"index":1,"prev":"` + audit.Genesis + `","class":"x","hash":"` + audit.Genesis + `"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := audit.DecodeLine(line)
		if err != nil {
			if !errors.Is(err, audit.ErrMalformedRecord) {
				t.Fatalf("error %v is not ErrMalformedRecord", err)
			}
			return
		}
		if r.Index == 0 || r.Class == "" || len(r.Hash) != 64 || len(r.Prev) != 64 {
			t.Fatalf("accepted a record without index, class, hash or prev: %+v", r)
		}
		if !utf8.Valid(line) {
			t.Fatalf("accepted invalid UTF-8: %q", line)
		}
		if r.Seal != "" && !bytes.HasSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte(`,"seal":"`+r.Seal+`","hash":"`+r.Hash+`"}`)) {
			t.Fatalf("accepted a seal that is not just before the hash: %q", line)
		}
		if !bytes.Equal(r.Line(), bytes.TrimSuffix(line, []byte("\n"))) {
			t.Fatal("Line() is not the decoded line")
		}
		// Verify must agree with itself on any single line: it either
		// accepts it as record 1 or names line 1.
		_, err = audit.Verify(bytes.NewReader(append(r.Line(), '\n')), nil)
		var ve *audit.VerifyError
		if err != nil && (!errors.As(err, &ve) || ve.Line != 1) {
			t.Fatalf("Verify of one line: %v", err)
		}
	})
}
