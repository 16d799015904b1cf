package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
)

// A daemon opens the sink, records its own events next to those of the
// change stream (through the runner, not shown), and closes it. The head
// it ends with is what an operator exports and later verifies against.
func Example() {
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.jsonl")

	clock := func() time.Time { return time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC) }
	s, err := audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithClock(clock))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	s.RecordSystem(ctx, audit.SystemEvent{Class: audit.ClassDaemonStart, Message: "godwit started"})
	s.RecordSystem(ctx, audit.SystemEvent{Class: audit.ClassCaptureHalted, Source: "shop",
		Message: "change stream history lost; run 'godwit resync shop'"})
	head := s.Head()
	s.Close(ctx)

	f, _ := os.Open(path)
	defer f.Close()
	n, err := audit.Verify(f, &head)
	fmt.Println(n, err, head.Index)

	f.Seek(0, 0)
	for r := range audit.Query(f, audit.Filter{MinSeverity: audit.SeverityHigh}) {
		fmt.Println(r.Index, r.Class, r.Severity, r.Message)
	}
	// Output:
	// 2 <nil> 2
	// 2 capture_halted high change stream history lost; run 'godwit resync shop'
}
