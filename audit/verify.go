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

// Check is Verify returning the log's head as well.
func Check(r io.Reader, head *Head) (Report, error) {
	return scan(r, Head{Hash: Genesis}, head, nil)
}

// scan checks the records of r, which continue a chain whose head is start
// (line numbers count from there), and calls fn for each intact record.
func scan(r io.Reader, start Head, head *Head, fn func(*Record)) (Report, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	rep := Report{Head: start}
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
