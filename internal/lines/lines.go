// Package lines finds the tail of append-only JSON-lines files (the jsonl
// sink, the audit log) without reading them whole: where the last complete
// line ends, and what it says. After a crash, bytes past that end are a torn
// line that was never acknowledged.
package lines

import (
	"bytes"
	"io"
)

// CompleteEnd returns the offset just past the last '\n' before limit (0 when
// there is none): everything after it is an incomplete line.
func CompleteEnd(r io.ReaderAt, limit int64) (int64, error) {
	nl, err := lastNewline(r, limit)
	return nl + 1, err
}

// Before returns the line that ends (with its '\n') at offset end, without
// the newline, and the offset where it starts. end must be a CompleteEnd.
func Before(r io.ReaderAt, end int64) (line []byte, start int64, err error) {
	if end <= 0 {
		return nil, 0, nil
	}
	nl, err := lastNewline(r, end-1)
	if err != nil {
		return nil, 0, err
	}
	start = nl + 1
	line = make([]byte, end-1-start)
	_, err = r.ReadAt(line, start)
	return line, start, err
}

// lastNewline returns the offset of the last '\n' before limit, or -1.
func lastNewline(r io.ReaderAt, limit int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for limit > 0 {
		n := min(int64(len(buf)), limit)
		if _, err := r.ReadAt(buf[:n], limit-n); err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return limit - n + int64(i), nil
		}
		limit -= n
	}
	return -1, nil
}
