package main

import (
	"bytes"
	"strings"
	"testing"

	pb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
)

// TestPrintStatus_OneLinePerRow gives status errors that span lines (a
// wasm stack trace) and tabs: the table keeps one row and at most one
// detail line per trigger.
func TestPrintStatus_OneLinePerRow(t *testing.T) {
	trace := "function trapped: wasm error: unreachable\nwasm stack trace:\n\t.$6(i32,i32) i32\r\n\t.$7()"
	var out bytes.Buffer
	printStatus(&out, &pb.StatusResponse{
		Triggers: []*pb.TriggerStatus{
			{Id: "t1", Name: "first", State: "running", LastError: trace},
			{Id: "t2", Name: "second\tcol", State: "running", LastError: "x\ty"},
		},
		Problems: []string{"trigger first: " + trace},
		Outbox:   &pb.OutboxStatus{},
	})
	var rows, details []string
	for _, line := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "  first") || strings.HasPrefix(line, "  second"):
			rows = append(rows, line)
		case strings.HasPrefix(line, "    └ "):
			details = append(details, line)
		case strings.Contains(line, "$6") && !strings.HasPrefix(line, "  - "):
			t.Fatalf("a stack frame on a line of its own: %q in\n%s", line, out.String())
		}
	}
	if len(rows) != 2 || len(details) != 2 {
		t.Fatalf("%d rows and %d detail lines, want 2 and 2:\n%s", len(rows), len(details), out.String())
	}
	if want := "function trapped: wasm error: unreachable | wasm stack trace: |  .$6(i32,i32) i32 |  .$7()"; !strings.Contains(details[0], want) {
		t.Fatalf("detail %q, want %q", details[0], want)
	}
}

// TestPrintStatus_LogDrops shows a trigger whose function logged past its
// budget, and nothing for one that did not.
func TestPrintStatus_LogDrops(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &pb.StatusResponse{
		Triggers: []*pb.TriggerStatus{
			{Id: "t1", Name: "chatty", State: "running", LogDroppedLines: 995, LogDroppedBytes: 61000},
			{Id: "t2", Name: "quiet", State: "running"},
		},
		Outbox: &pb.OutboxStatus{},
	})
	if got := strings.Count(out.String(), "log budget:"); got != 1 || !strings.Contains(out.String(), "995 lines (61000 bytes)") {
		t.Fatalf("want one log-budget line for chatty with its counts:\n%s", out.String())
	}
}
