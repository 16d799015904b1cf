package audit_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/audit"
)

func verifyFile(t *testing.T, path string, head *audit.Head) (uint64, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return audit.Verify(f, head)
}

// wantBad asserts that err is a *VerifyError of kind want naming line and
// index.
func wantBad(t *testing.T, err error, want error, line int, index uint64) {
	t.Helper()
	var ve *audit.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a *VerifyError", err)
	}
	if !errors.Is(err, want) {
		t.Errorf("err = %v, want kind %v", err, want)
	}
	if ve.Line != line || (index != 0 && ve.Index != index) {
		t.Errorf("named line %d index %d, want line %d index %d (%v)", ve.Line, ve.Index, line, index, err)
	}
}

func TestVerify(t *testing.T) {
	t.Run("Intact", func(t *testing.T) {
		path, head := systemLog(t, 10)
		n, err := verifyFile(t, path, &head)
		if err != nil || n != 10 {
			t.Fatalf("Verify = %d, %v; want 10, nil", n, err)
		}
		if head.Index != 10 {
			t.Fatalf("head index %d", head.Index)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		n, err := audit.Verify(strings.NewReader(""), &audit.Head{Hash: audit.Genesis})
		if err != nil || n != 0 {
			t.Fatalf("Verify = %d, %v", n, err)
		}
	})
	t.Run("FlipOneByte", func(t *testing.T) {
		path, head := systemLog(t, 10)
		orig := lines(t, path)
		// Flip a byte at many places of line 5: in the index, the prev, the
		// class, the message, the hash itself and the closing brace.
		for off := 0; off < len(orig[4])-1; off += 7 {
			ls := lines(t, path)
			ls[4] = bytes.Clone(ls[4])
			ls[4][off] ^= 0x01
			writeLines(t, path, ls)
			_, err := verifyFile(t, path, &head)
			var ve *audit.VerifyError
			if !errors.As(err, &ve) || ve.Line != 5 {
				t.Fatalf("flip at byte %d of line 5 (%q): err = %v, want line 5 named", off, orig[4][off], err)
			}
			if !errors.Is(err, audit.ErrHashMismatch) && !errors.Is(err, audit.ErrMalformedRecord) {
				t.Fatalf("flip at byte %d: kind %v", off, err)
			}
			writeLines(t, path, orig)
		}
	})
	t.Run("DeleteLine", func(t *testing.T) {
		path, head := systemLog(t, 10)
		ls := lines(t, path)
		writeLines(t, path, append(ls[:3:3], ls[4:]...)) // record 4 removed
		_, err := verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrBrokenChain, 4, 5)
	})
	t.Run("DeleteFirstLine", func(t *testing.T) {
		path, _ := systemLog(t, 3)
		writeLines(t, path, lines(t, path)[1:])
		_, err := verifyFile(t, path, nil)
		wantBad(t, err, audit.ErrBrokenChain, 1, 2)
	})
	t.Run("SwapTwoLines", func(t *testing.T) {
		path, head := systemLog(t, 10)
		ls := lines(t, path)
		ls[5], ls[6] = ls[6], ls[5]
		writeLines(t, path, ls)
		_, err := verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrBrokenChain, 6, 7)
	})
	t.Run("InsertForgedLine", func(t *testing.T) {
		path, head := systemLog(t, 10)
		ls := lines(t, path)
		forged := bytes.Replace(ls[3], []byte("start 4"), []byte("nothing to see"), 1)
		writeLines(t, path, append(ls[:4:4], append([][]byte{forged}, ls[4:]...)...))
		_, err := verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrHashMismatch, 5, 4)
	})
	t.Run("InsertForgedLineWithValidHash", func(t *testing.T) {
		// The forger chains the line correctly after record 4 and gives it
		// index 5: the record after it (the real 5) no longer fits, but it
		// fits after 4, which names the forged one.
		path, head := systemLog(t, 10)
		ls := lines(t, path)
		rec4, err := audit.DecodeLine(ls[3])
		if err != nil {
			t.Fatal(err)
		}
		forged := bytes.Replace(ls[4], []byte("start 5"), []byte("forged!"), 1)
		forged, _ = rehash(t, forged, rec4.Hash)
		writeLines(t, path, append(ls[:4:4], append([][]byte{forged}, ls[4:]...)...))
		_, err = verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrBrokenChain, 5, 5)
		if !strings.Contains(err.Error(), "inserted") {
			t.Errorf("error does not say inserted: %v", err)
		}
	})
	t.Run("TruncateTail", func(t *testing.T) {
		path, head := systemLog(t, 10)
		writeLines(t, path, lines(t, path)[:7])
		// Without a head a shorter log is all Verify can see...
		if n, err := verifyFile(t, path, nil); err != nil || n != 7 {
			t.Fatalf("without head: %d, %v", n, err)
		}
		// ...with the exported head the cut is found, naming record 8.
		_, err := verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrTailCut, 8, 0)
		var ve *audit.VerifyError
		errors.As(err, &ve)
		if ve.Want != 8 {
			t.Errorf("Want = %d, want 8", ve.Want)
		}
	})
	t.Run("TruncateMidLine", func(t *testing.T) {
		path, head := systemLog(t, 10)
		b, _ := os.ReadFile(path)
		os.WriteFile(path, b[:len(b)-20], 0o640)
		f, _ := os.Open(path)
		defer f.Close()
		rep, err := audit.Check(f, nil)
		if err != nil || rep.Records != 9 || rep.Incomplete == 0 {
			t.Fatalf("Check = %+v, %v; want 9 records and an incomplete line", rep, err)
		}
		_, err = verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrTailCut, 10, 0)
	})
	t.Run("RewrittenChainAgainstHead", func(t *testing.T) {
		// Edit record 3 and recompute every hash from there: the log is
		// consistent in itself, but not with the head exported before.
		path, head := systemLog(t, 10)
		ls := lines(t, path)
		rec2, _ := audit.DecodeLine(ls[1])
		prev := rec2.Hash
		ls[2] = bytes.Replace(ls[2], []byte("start 3"), []byte("start X"), 1)
		for i := 2; i < len(ls); i++ {
			ls[i], prev = rehash(t, ls[i], prev)
		}
		writeLines(t, path, ls)
		if _, err := verifyFile(t, path, nil); err != nil {
			t.Fatalf("the rewritten chain should verify on its own: %v", err)
		}
		_, err := verifyFile(t, path, &head)
		wantBad(t, err, audit.ErrHeadMismatch, 10, 10)
		// An older head catches it too, as long as it is past the edit.
		old := audit.Head{Index: 5}
		orig, _ := audit.DecodeLine(lines(t, path)[4])
		old.Hash = "0" + orig.Hash[1:] // any hash but the rewritten one
		if old.Hash == orig.Hash {
			old.Hash = "1" + orig.Hash[1:]
		}
		_, err = verifyFile(t, path, &old)
		wantBad(t, err, audit.ErrHeadMismatch, 5, 5)
	})
	t.Run("NotJSON", func(t *testing.T) {
		path, _ := systemLog(t, 3)
		ls := lines(t, path)
		ls[1] = []byte("garbage\n")
		writeLines(t, path, ls)
		_, err := verifyFile(t, path, nil)
		wantBad(t, err, audit.ErrMalformedRecord, 2, 0)
	})
}

func TestParseHead(t *testing.T) {
	h := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	for _, tc := range []struct {
		in   string
		ok   bool
		want audit.Head
	}{
		{"12:" + h, true, audit.Head{Index: 12, Hash: h}},
		{" 12:" + strings.ToUpper(h) + "\n", true, audit.Head{Index: 12, Hash: h}},
		{"0:" + audit.Genesis, true, audit.Head{Hash: audit.Genesis}},
		{"0:" + h, false, audit.Head{}},
		{"12" + h, false, audit.Head{}},
		{"x:" + h, false, audit.Head{}},
		{"12:abc", false, audit.Head{}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := audit.ParseHead(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("ParseHead = %v, %v", got, err)
			}
			if err != nil && !errors.Is(err, audit.ErrBadHead) {
				t.Fatalf("err %v is not ErrBadHead", err)
			}
			if err == nil {
				back, _ := audit.ParseHead(got.String())
				if back != got {
					t.Fatalf("String does not round-trip: %s", got)
				}
			}
		})
	}
}
