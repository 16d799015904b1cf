package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/audit"
	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

func init() {
	register(command{name: "events", summary: "print a running godwit's change events as they are captured, or replay them (gRPC)", run: runEvents})
}

const eventsUsage = `Usage: godwit events <tail|delete> [flags]

  tail [--ns GLOB] [--op OP] [--source ID] [--ignore GLOB] [--from SEQ|live|TIME]
       [--durable NAME] [--max-lag N] [--count N] [--json]
        print events as they are captured (or from a sequence or a time),
        one line each, or one JSON object per line with --json
  delete NAME
        delete a durable subscription: retention no longer waits for it

Connection flags (both): --addr (default 127.0.0.1:7701), --token (or
GODWIT_TOKEN), --ca-cert, --cert/--key, --tls. See docs/events.md.`

func runEvents(ctx context.Context, m *Main, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(m.Stderr, eventsUsage)
		return errUsage
	}
	switch args[0] {
	case "tail":
		return eventsTail(ctx, m, args[1:])
	case "delete":
		return eventsDelete(ctx, m, args[1:])
	case "help", "-h", "--help":
		fmt.Fprintln(m.Stderr, eventsUsage)
		return nil
	default:
		fmt.Fprintf(m.Stderr, "godwit events: unknown subcommand %q\n\n%s\n", args[0], eventsUsage)
		return errUsage
	}
}

func eventsTail(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("events tail", "[--ns GLOB] [--op OP] [--from SEQ|live|TIME] [--json] [flags]")
	cf := addClientFlags(fs)
	var nss, ops, sources, ignore listFlag
	fs.Var(&nss, "ns", "namespace glob, for example 'shop.*' (repeatable, or comma-separated)")
	fs.Var(&ops, "op", "operation type: insert, update, replace, delete, drop, rename, dropDatabase, … (repeatable, or comma-separated)")
	fs.Var(&sources, "source", "source id (repeatable, or comma-separated)")
	fs.Var(&ignore, "ignore", "namespace glob never shown, for example where you write (repeatable, or comma-separated)")
	from := fs.String("from", "live", "where to start: live (new events only), an outbox sequence, or a time (RFC 3339, a date, or a duration ago: 10m, 24h)")
	durable := fs.String("durable", "", "a durable subscription name: resume after what it acknowledged, and acknowledge what is printed")
	maxLag := fs.Uint64("max-lag", 0, "skip to the newest event when more than this many events behind (0: never)")
	count := fs.Int("count", 0, "exit after printing this many events (0: run until interrupted)")
	canonical := fs.Bool("canonical", false, "print documents as canonical Extended JSON (every BSON type kept)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	req := &pb.SubscribeRequest{Namespaces: nss, OperationTypes: ops, Sources: sources, IgnoreNamespaces: ignore,
		DurableName: *durable, MaxLag: *maxLag}
	if *canonical {
		req.Encoding = pb.Encoding_ENCODING_CANONICAL_JSON
	}
	if err := setFrom(req, *from, time.Now()); err != nil {
		fmt.Fprintf(m.Stderr, "godwit events tail: --from: %v\n", err)
		return errUsage
	}

	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewEventServiceClient(conn)
	stream, err := client.Subscribe(ctx, req)
	if err != nil {
		return rpcErr(err)
	}
	ack := acker{client: client, name: *durable, timeout: *cf.timeout}
	defer ack.flush(context.WithoutCancel(ctx))
	printed := 0
	for {
		msg, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil // interrupted: a normal end
			}
			if status.Code(err) == codes.Unavailable {
				return fmt.Errorf("%w (is godwit running at %s?)", rpcErr(err), *cf.addr)
			}
			return rpcErr(err)
		}
		if cp := msg.GetCheckpoint(); cp != nil {
			ack.seen(ctx, cp.Sequence, true)
			continue
		}
		if *cf.asJSON {
			// One message per line, tagged by kind: {"event": …},
			// {"lagged": …} or {"started": …}.
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
			if err != nil {
				return err
			}
			fmt.Fprintln(m.Stdout, string(b))
		}
		switch {
		case msg.GetStarted() != nil:
			st := msg.GetStarted()
			how := "from"
			if st.Resumed {
				how = "resuming " + *durable + " at"
			}
			fmt.Fprintf(m.Stderr, "godwit events: %s sequence %d (the outbox holds %d to %d); Ctrl-C to stop\n",
				how, st.StartSequence, st.OldestSequence, st.LastSequence)
		case msg.GetLagged() != nil:
			l := msg.GetLagged()
			fmt.Fprintf(m.Stderr, "godwit events: LAGGED (%s): events %d to %d were skipped; going on at %d\n",
				lagReason(l.Reason), l.FirstMissed, l.LastMissed, l.ResumeSequence)
		case msg.GetEvent() != nil:
			if !*cf.asJSON {
				printEvent(m.Stdout, msg.GetEvent())
			}
			printed++
			ack.seen(ctx, msg.GetEvent().Sequence, false)
		}
		if *count > 0 && printed >= *count {
			return nil
		}
	}
}

// setFrom reads --from into req: live, a sequence, or a time.
func setFrom(req *pb.SubscribeRequest, s string, now time.Time) error {
	if s == "" || s == "live" {
		req.Start = &pb.SubscribeRequest_Live{Live: true}
		return nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		req.Start = &pb.SubscribeRequest_FromSequence{FromSequence: n}
		return nil
	}
	t, err := audit.ParseTimeBound(s, now)
	if err != nil {
		return fmt.Errorf("%q is not live, a sequence or a time: use live, 1234, 2026-05-01T10:00:00Z, 2026-05-01 or 10m", s)
	}
	req.Start = &pb.SubscribeRequest_FromTime{FromTime: timestamppb.New(t)}
	return nil
}

func lagReason(r pb.Lagged_Reason) string {
	switch r {
	case pb.Lagged_REASON_RETENTION:
		return "deleted by retention before they were read"
	case pb.Lagged_REASON_MAX_LAG:
		return "more than --max-lag behind; read them with --from"
	}
	return r.String()
}

// printEvent prints an event as one line: sequence, cluster time,
// operation, namespace, key and what changed.
func printEvent(w io.Writer, e *pb.ChangeEvent) {
	at := e.GetCapturedAt()
	if ct := e.GetClusterTime(); ct != nil {
		at = timestamppb.New(time.Unix(int64(ct.Seconds), 0))
	}
	ns := "-"
	if n := e.GetNs(); n != nil {
		ns = n.Db
		if n.Coll != "" {
			ns += "." + n.Coll
		}
	}
	parts := []string{strconv.FormatUint(e.Sequence, 10), when(at), e.OperationType, ns}
	if k := e.GetDocumentKey(); k != nil {
		parts = append(parts, k.Json)
	}
	switch {
	case e.GetUpdatedFields() != nil || len(e.GetRemovedFields()) > 0:
		if u := e.GetUpdatedFields(); u != nil {
			parts = append(parts, "set "+u.Json)
		}
		if r := e.GetRemovedFields(); len(r) > 0 {
			parts = append(parts, "unset "+strings.Join(r, ","))
		}
	case e.GetFullDocument() != nil:
		parts = append(parts, e.GetFullDocument().Json)
	case e.GetTo() != nil:
		parts = append(parts, "to "+e.GetTo().Db+"."+e.GetTo().Coll)
	}
	if b := e.GetFullDocumentBeforeChange(); b != nil {
		parts = append(parts, "before "+b.Json)
	}
	if e.OperationType == "" && e.GetRaw() != nil {
		parts = append(parts, "unparsed "+e.GetRaw().Json)
	}
	fmt.Fprintln(w, strings.Join(parts, "  "))
}

// acker acknowledges what a durable tail printed: every 100 events, at
// every checkpoint, and when the tail ends, so that a restarted tail
// resumes after the last printed event.
type acker struct {
	client  pb.EventServiceClient
	name    string
	timeout time.Duration
	last    uint64 // highest sequence printed or checkpointed
	acked   uint64
	pending int
}

func (a *acker) seen(ctx context.Context, seq uint64, checkpoint bool) {
	if a.name == "" {
		return
	}
	a.last = max(a.last, seq)
	a.pending++
	if checkpoint || a.pending >= 100 {
		a.flush(ctx)
	}
}

func (a *acker) flush(ctx context.Context) {
	if a.name == "" || a.last <= a.acked {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if _, err := a.client.Ack(ctx, &pb.AckRequest{DurableName: a.name, Sequence: a.last}); err == nil {
		a.acked, a.pending = a.last, 0
	}
}

func eventsDelete(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("events delete", "NAME [connection flags]")
	cf := addClientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(m.Stderr, "godwit events delete: needs exactly one durable subscription name")
		return errUsage
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := pb.NewEventServiceClient(conn).DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{DurableName: pos[0]}); err != nil {
		return rpcErr(err)
	}
	fmt.Fprintf(m.Stdout, "deleted durable subscription %s\n", pos[0])
	return nil
}
