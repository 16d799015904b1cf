package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Report is the outcome of Check.
type Report struct {
	// Records is the number of intact records.
	Records uint64
	// Head is the last intact record's index and hash ({0, Genesis} for an
	// empty log).
	Head Head
	// Incomplete is the length of a last line without a newline, which was
	// ignored: a crash while writing leaves one (the sink cuts it when it
	// opens the log again), and so does reading a log while it is written.
	Incomplete int
	// Segments are the sealing segments, in log order. Records before the
	// first one are not sealed (written before sealing started); they are
	// covered by the chain only, and by the first sealed record's prev.
	// Without keys (Check) one segment stands for every sealed record: key
	// rotations cannot be told apart.
	Segments []Segment
	// SealsChecked is true when the seals were checked with keys (CheckSealed);
	// otherwise only their presence was.
	SealsChecked bool
}

// Segment is a run of records sealed with one key.
type Segment struct {
	// FirstIndex is the index of its first record.
	FirstIndex uint64 `json:"first_index"`
	// KeyID names its verification key (empty without keys).
	KeyID string `json:"key_id,omitempty"`
	// Records is the number of records in it.
	Records uint64 `json:"records"`
}

// SealedFrom returns the index of the first sealed record, 0 if none is.
func (r Report) SealedFrom() uint64 {
	if len(r.Segments) == 0 {
		return 0
	}
	return r.Segments[0].FirstIndex
}

// Verify reads a whole audit log and checks its hash chain: every record's
// content hashes to its stored hash, indexes run 1, 2, 3, ... and every
// prev is the hash of the record before. With head, the log must also reach
// head.Index and the record there must have head.Hash; without it a cut tail
// cannot be told from a shorter log.
//
// It returns the number of records. A broken chain is reported as a
// *VerifyError naming the first bad record; other errors are I/O errors.
func Verify(r io.Reader, head *Head) (uint64, error) {
	rep, err := Check(r, head)
	return rep.Records, err
}

// Check is Verify returning the log's head as well. It checks that every
// record after the first sealed one is sealed too, but not the seals: that
// needs the keys (CheckSealed).
func Check(r io.Reader, head *Head) (Report, error) {
	return scan(r, Head{Hash: Genesis}, head, &sealCheck{}, nil)
}

// CheckSealed is Check that also checks every seal with the verification
// keys (one per sealing segment; see ReadKeyFile). A record that is not
// sealed with the key of its position — appended, inserted or rewritten by
// someone without godwit's sealing key at that moment, even with a correct
// hash chain — is reported as a *VerifyError (ErrBadSeal, ErrUnsealed or
// ErrUnknownKey). keys must not be empty.
func CheckSealed(r io.Reader, head *Head, keys []VerifyKey) (Report, error) {
	if len(keys) == 0 {
		return Report{}, fmt.Errorf("%w: no verification key given", ErrBadKey)
	}
	sc := &sealCheck{keys: map[uint64][]VerifyKey{}}
	for _, k := range keys {
		sc.keys[k.FirstIndex] = append(sc.keys[k.FirstIndex], k)
	}
	rep, err := scan(r, Head{Hash: Genesis}, head, sc, nil)
	rep.SealsChecked = true
	if err != nil {
		return rep, err
	}
	for _, k := range keys {
		if k.FirstIndex > rep.Head.Index {
			return rep, &VerifyError{Line: int(rep.Head.Index) + 1, Want: rep.Head.Index + 1, Err: ErrTailCut,
				Reason: fmt.Sprintf("key %s (%s) started sealing at index %d, but the log ends at index %d: records %d.. were cut off", k.ID, k.Path, k.FirstIndex, rep.Head.Index, rep.Head.Index+1)}
		}
	}
	return rep, nil
}

// sealCheck is the seal state of a scan.
type sealCheck struct {
	// keys are the verification keys by the index they start at; nil checks
	// only that seals are present where they must be.
	keys map[uint64][]VerifyKey
	// cur is the key the next record is sealed with, when known.
	cur   *sealKey
	curID string
	// sealed: a sealed record was passed, so every later one must be sealed.
	sealed bool
	// noSeals (the sink's tail of a log it never sealed): a sealed record
	// there was not written by godwit.
	noSeals  bool
	segments []Segment
}

// check checks rec's seal; it returns a reason and sentinel on failure.
func (sc *sealCheck) check(rec *Record) (string, error) {
	starts := sc.keys[rec.Index]
	if rec.Seal == "" {
		switch {
		case sc.sealed || sc.cur != nil:
			return "the record has no seal though sealing is in force here: it was appended or rewritten by someone without godwit's sealing key", ErrUnsealed
		case len(starts) > 0:
			return fmt.Sprintf("key %s (%s) started sealing at this record, but it has no seal: the seals were stripped and the chain recomputed", starts[0].ID, starts[0].Path), ErrUnsealed
		}
		return "", nil
	}
	if sc.noSeals {
		return "a sealed record after the saved state of a log godwit has not sealed yet: godwit did not write it", ErrUnknownKey
	}
	for _, k := range starts {
		// A segment starts here (sealing started, or the key was rotated).
		nk := &sealKey{key: append([]byte(nil), k.key...)}
		if checkSeal(nk, rec) {
			if sc.cur != nil {
				sc.cur.forget()
			}
			sc.cur, sc.curID = nk, k.ID
			sc.segments = append(sc.segments, Segment{FirstIndex: rec.Index, KeyID: k.ID})
			break
		}
	}
	switch {
	case sc.cur == nil && len(starts) > 0:
		return fmt.Sprintf("the seal does not verify with key %s (%s), which starts sealing here: the record was changed (or a record before it, through prev), or the key belongs to another log", starts[0].ID, starts[0].Path), ErrBadSeal
	case sc.cur == nil && sc.keys != nil:
		return fmt.Sprintf("the record is sealed, but no key given starts at index %d: give the key file whose first_index is %d, or the record was written by someone else", rec.Index, rec.Index), ErrUnknownKey
	case sc.cur == nil:
		// Without keys: only presence is checked.
		if !sc.sealed {
			sc.segments = append(sc.segments, Segment{FirstIndex: rec.Index})
		}
	case len(sc.segments) > 0 && sc.segments[len(sc.segments)-1].FirstIndex == rec.Index:
		// Just checked with the key that starts here.
	case !checkSeal(sc.cur, rec):
		reason := "the seal does not verify with the sealing key of its position: the record was appended, inserted or rewritten by someone without godwit's sealing key at that moment (a correct hash chain does not make it genuine)"
		if len(starts) > 0 {
			reason = fmt.Sprintf("the seal verifies neither with the running key nor with key %s, which starts here: the record was forged", starts[0].ID)
		}
		return reason, ErrBadSeal
	}
	if sc.cur != nil {
		sc.cur.evolve()
	}
	sc.sealed = true
	if n := len(sc.segments); n > 0 {
		sc.segments[n-1].Records++
	}
	return "", nil
}

// scan checks the records of r, which continue a chain whose head is start
// (line numbers count from there), and calls fn for each intact record.
func scan(r io.Reader, start Head, head *Head, sc *sealCheck, fn func(*Record)) (rep Report, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	rep = Report{Head: start}
	defer func() { rep.Segments = sc.segments }()
	var before Head // the record before rep.Head, for telling an insert
	haveBefore := false
	line := int(start.Index)
	for {
		b, err := readLine(br)
		if err == io.EOF {
			if len(b) > 0 {
				rep.Incomplete = len(b)
			}
			break
		}
		if err != nil {
			return rep, fmt.Errorf("read audit log after line %d: %w", line, err)
		}
		line++
		want := rep.Head.Index + 1
		rec, derr := DecodeLine(b)
		if derr != nil {
			return rep, &VerifyError{Line: line, Want: want, Err: ErrMalformedRecord,
				Reason: "not an audit record (" + derr.Error() + "): the line was edited or inserted"}
		}
		if got := contentHash(rec.line); got != rec.Hash {
			return rep, &VerifyError{Line: line, Index: rec.Index, Want: want, Err: ErrHashMismatch,
				Reason: "the record's content was changed after it was written"}
		}
		if rec.Index != want || rec.Prev != rep.Head.Hash {
			// A record that fits after the one two lines up means the one in
			// between does not belong: name that one.
			if haveBefore && rec.Index == before.Index+1 && rec.Prev == before.Hash {
				return rep, &VerifyError{Line: line - 1, Index: rep.Head.Index, Want: rep.Head.Index, Err: ErrBrokenChain,
					Reason: fmt.Sprintf("this record was inserted: the record on line %d follows the one on line %d", line, line-2)}
			}
			var reason string
			switch {
			case rec.Index == want+1:
				reason = fmt.Sprintf("index %d follows index %d: record %d was removed here, or records were reordered", rec.Index, want-1, want)
			case rec.Index > want:
				reason = fmt.Sprintf("index %d follows index %d: records %d..%d were removed here, or records were reordered", rec.Index, want-1, want, rec.Index-1)
			case rec.Index < want:
				reason = fmt.Sprintf("index %d follows index %d: records were reordered or a record was duplicated", rec.Index, want-1)
			default:
				reason = fmt.Sprintf("prev does not match the hash of record %d: the record was replaced, or records before it were rewritten", want-1)
			}
			return rep, &VerifyError{Line: line, Index: rec.Index, Want: want, Err: ErrBrokenChain, Reason: reason}
		}
		if head != nil && rec.Index == head.Index && rec.Hash != head.Hash {
			return rep, &VerifyError{Line: line, Index: rec.Index, Want: want, Err: ErrHeadMismatch,
				Reason: fmt.Sprintf("hash %s differs from the exported head %s: the log was rewritten up to here", rec.Hash, head)}
		}
		if reason, serr := sc.check(&rec); serr != nil {
			return rep, &VerifyError{Line: line, Index: rec.Index, Want: want, Err: serr, Reason: reason}
		}
		before, haveBefore = rep.Head, true
		rep.Head = Head{Index: rec.Index, Hash: rec.Hash}
		rep.Records++
		if fn != nil {
			fn(&rec)
		}
	}
	if head != nil {
		if head.Index > rep.Head.Index {
			return rep, &VerifyError{Line: line + 1, Want: rep.Head.Index + 1, Err: ErrTailCut,
				Reason: fmt.Sprintf("the log ends at index %d but the head names index %d: records %d..%d were cut off", rep.Head.Index, head.Index, rep.Head.Index+1, head.Index)}
		}
		if head.Index == 0 && head.Hash != Genesis {
			return rep, &VerifyError{Line: 1, Want: 1, Err: ErrHeadMismatch, Reason: "a head of index 0 must have the genesis hash"}
		}
	}
	return rep, nil
}

// readLine returns the next line without its newline. At the end it returns
// io.EOF together with an incomplete last line, if any.
func readLine(br *bufio.Reader) ([]byte, error) {
	b, err := br.ReadSlice('\n')
	if err == nil {
		return b[:len(b)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return append([]byte(nil), b...), err
	}
	// A line longer than the buffer: collect it.
	long := append([]byte(nil), b...)
	for {
		b, err = br.ReadSlice('\n')
		long = append(long, b...)
		if err == nil {
			return long[:len(long)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return long, err
		}
	}
}

// lineReader reads complete lines; an incomplete last line reads as io.EOF.
type lineReader struct{ br *bufio.Reader }

func newLineReader(r io.Reader) *lineReader { return &lineReader{bufio.NewReaderSize(r, 64<<10)} }

// next returns the next complete line without its newline; it is valid
// until the next call.
func (l *lineReader) next() ([]byte, error) {
	b, err := readLine(l.br)
	if err != nil {
		return nil, err
	}
	return b, nil
}
