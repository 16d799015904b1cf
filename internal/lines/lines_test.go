package lines_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/internal/lines"
)

func TestCompleteEndAndBefore(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than one read chunk
	cases := []struct {
		name, data, last string
		end              int64
	}{
		{"empty", "", "", 0},
		{"only a torn line", "{\"seq\":1", "", 0},
		{"one line", "a\n", "a", 2},
		{"torn tail", "a\nbb\ncc", "bb", 5},
		{"long lines", long + "\n" + long + "\n" + "torn", long, int64(2*len(long) + 2)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader([]byte(c.data))
			end, err := lines.CompleteEnd(r, int64(len(c.data)))
			if err != nil || end != c.end {
				t.Fatalf("CompleteEnd = %d, %v; want %d", end, err, c.end)
			}
			line, start, err := lines.Before(r, end)
			if err != nil || string(line) != c.last {
				t.Fatalf("Before = %.20q, %v; want %.20q", line, err, c.last)
			}
			if end > 0 && start+int64(len(line))+1 != end {
				t.Fatalf("start %d does not lead to end %d", start, end)
			}
		})
	}
}
