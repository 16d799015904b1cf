package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit-dev/godwit/proto/godwit/admin/v1"
)

func init() {
	register(command{name: "status", summary: "show a running godwit's sources, sinks, triggers, subscriptions and outbox (gRPC)", run: runStatus})
}

func runStatus(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("status", "[--json] [--addr HOST:PORT] [connection flags]")
	cf := addClientFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	res, err := pb.NewAdminServiceClient(conn).Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return fmt.Errorf("%w (is godwit running at %s?)", rpcErr(err), *cf.addr)
	}
	if *cf.asJSON {
		// Every field, zeros included: scripts should not have to guess.
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintln(m.Stdout, string(b))
		return nil
	}
	printStatus(m.Stdout, res)
	return nil
}

func printStatus(out io.Writer, s *pb.StatusResponse) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	section := func(title string, header ...string) {
		fmt.Fprintf(w, "\n%s\n  %s\n", title, strings.Join(header, "\t"))
	}
	fmt.Fprintf(w, "godwit status at %s\n", when(s.Time))

	section("SOURCES", "ID", "STATE", "CAPTURED", "LAG", "LAST CLUSTER TIME", "URI")
	for _, src := range s.Sources {
		fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%s\t%s\n", src.Id, src.State, src.Captured,
			(time.Duration(src.LagSeconds * float64(time.Second))).Round(100*time.Millisecond), when(src.LastClusterTime), src.Uri)
		detail(w, src.Reason)
		if src.Reason == "" {
			detail(w, src.LastError)
		}
	}

	section("SINKS", "ID", "TYPE", "ACKED", "BACKLOG", "DELIVERED", "DEAD", "STATE")
	for _, sk := range s.Sinks {
		state := "running"
		if sk.Halted {
			state = "halted"
		}
		fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%d\t%d\t%s\n", sk.Id, sk.Type, sk.Acked, sk.Backlog, sk.Delivered, sk.DeadLetters, state)
		detail(w, sk.LastError)
		if sk.Connection != "" {
			detail(w, "connection: "+sk.Connection)
		}
	}

	if len(s.Pipelines) > 0 {
		section("PIPELINES", "ID", "SOURCE", "PHASE", "COPIED", "APPLIED", "LAG", "TARGET")
		for _, p := range s.Pipelines {
			copied := fmt.Sprintf("%d/%d", p.Copied, p.Total)
			lag := fmt.Sprintf("%d events, %s", p.LagEvents, (time.Duration(p.LagSeconds * float64(time.Second))).Round(100*time.Millisecond))
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Id, p.Source, p.Phase, copied, p.Applied, lag, p.Target)
			detail(w, p.LastError)
		}
	}

	if len(s.Triggers) > 0 {
		section("TRIGGERS", "NAME", "ID", "USER", "TYPE", "STATE", "ACKED", "BACKLOG", "CALLS", "DEAD")
		for _, t := range s.Triggers {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", t.Name, t.Id, t.UserId, t.Type, t.State,
				t.Acked, t.Backlog, t.Invocations, t.DeadLetters)
			detail(w, t.LastError)
			if t.LogDroppedLines > 0 {
				detail(w, fmt.Sprintf("log budget: %d lines (%d bytes) of the function's log dropped", t.LogDroppedLines, t.LogDroppedBytes))
			}
		}
	}

	if len(s.Subscriptions) > 0 {
		section("SUBSCRIPTIONS", "NAME", "KIND", "CONNECTED", "CURSOR", "BACKLOG", "SENT", "LAGGED", "FILTER")
		for _, sub := range s.Subscriptions {
			kind, conn := "live", "no"
			if sub.Durable {
				kind = "durable"
			}
			if sub.Connected {
				conn = "yes " + sub.Peer
			}
			filter := sub.Filter
			if filter == "" {
				filter = "-"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", sub.Name, kind, conn, sub.Cursor, sub.Backlog, sub.Sent, sub.Lagged, filter)
			detail(w, sub.LastError)
		}
	}

	o := s.Outbox
	fmt.Fprintf(w, "\nOUTBOX %s\n", o.Path)
	bound := "unbounded"
	if o.MaxBytes > 0 {
		bound = fmt.Sprintf("%s (%.0f%%)", bytesOf(o.MaxBytes), 100*float64(o.Bytes)/float64(o.MaxBytes))
	}
	fmt.Fprintf(w, "  events:\t%s of %s; file %s\n", bytesOf(o.Bytes), bound, bytesOf(o.FileBytes))
	if o.OldestSequence == 0 {
		fmt.Fprintf(w, "  sequences:\tnone retained; last %d\n", o.LastSequence)
	} else {
		fmt.Fprintf(w, "  sequences:\t%d to %d\n", o.OldestSequence, o.LastSequence)
	}
	if o.Paused {
		fmt.Fprintf(w, "  capture is PAUSED: the outbox is at its bound; a sink or a durable subscription is behind (see BACKLOG)\n")
	}

	if len(s.Problems) > 0 {
		fmt.Fprintf(w, "\nNOT READY\n")
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  - %s\n", strings.TrimSpace(oneLineReplacer.Replace(p)))
		}
	}
}

// detail prints msg under a table row, on one line: a multi-line error (a
// wasm stack trace) must not break the table.
func detail(w io.Writer, msg string) {
	msg = strings.TrimSpace(oneLineReplacer.Replace(msg))
	if msg != "" {
		fmt.Fprintf(w, "    └ %s\n", msg)
	}
}

var oneLineReplacer = strings.NewReplacer("\r\n", " | ", "\n", " | ", "\r", " | ", "\t", " ")

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02T15:04:05Z")
}

func bytesOf(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
