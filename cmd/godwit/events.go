package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/client"
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
	start, err := parseFrom(*from, time.Now())
	if err != nil {
		fmt.Fprintf(m.Stderr, "godwit events tail: --from: %v\n", err)
		return errUsage
	}
	opts := []client.SubscribeOption{start,
		client.OnReconnect(func(err error, attempt int, wait time.Duration) {
			fmt.Fprintf(m.Stderr, "godwit events: connection lost (%v); reconnecting in %v (attempt %d)\n", err, wait.Round(time.Millisecond), attempt)
		})}
	if *durable != "" {
		// What is printed counts as handled: acknowledged when the next
		// event is asked for, every 100 events or second, and at exit.
		opts = append(opts, client.Durable(*durable), client.AutoAck(), client.AckEvery(100, time.Second))
	}
	if *maxLag > 0 {
		opts = append(opts, client.MaxLag(*maxLag))
	}

	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.Subscribe(ctx, client.Filter{Sources: sources, Namespaces: nss, Operations: ops, IgnoreNamespaces: ignore}, opts...)
	if err != nil {
		return err
	}
	defer s.Close()
	p := eventPrinter{w: m.Stdout, json: *cf.asJSON, canonical: *canonical}
	st := s.Started()
	how := "from"
	if st.Resumed {
		how = "resuming " + *durable + " at"
	}
	fmt.Fprintf(m.Stderr, "godwit events: %s sequence %d (the outbox holds %d to %d); Ctrl-C to stop\n",
		how, st.Start, st.Oldest, st.Last)
	p.started(st)
	for printed := 0; *count == 0 || printed < *count; {
		if !s.Next(ctx) {
			var lag *client.LaggedError
			switch err := s.Err(); {
			case errors.As(err, &lag):
				fmt.Fprintf(m.Stderr, "godwit events: LAGGED (%s): events %d to %d were skipped; going on at %d\n",
					lagReason(lag.Reason), lag.FirstMissed, lag.LastMissed, lag.LastMissed+1)
				p.lagged(lag)
				continue
			case ctx.Err() != nil:
				return s.Close() // interrupted: a normal end; the last acks go out
			default:
				return err
			}
		}
		if err := p.event(s.Event()); err != nil {
			return err
		}
		printed++
	}
	return s.Close()
}

// cf.client dials the daemon with the connection flags.
func (c clientFlags) client(ctx context.Context) (*client.Client, error) {
	opts := []client.DialOption{client.WithCallTimeout(*c.timeout), client.WithDialTimeout(*c.timeout)}
	token := *c.token
	if token == "" {
		token = os.Getenv(tokenEnv)
	}
	if token = strings.TrimSpace(token); token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if *c.useTLS || *c.caCert != "" || *c.cert != "" || *c.key != "" {
		opts = append(opts, client.WithTLSFiles(*c.caCert, *c.cert, *c.key))
	}
	if *c.serverName != "" {
		opts = append(opts, client.WithServerName(*c.serverName))
	}
	if *c.insecure {
		opts = append(opts, client.WithPlaintextToken())
	}
	return client.Dial(ctx, *c.addr, opts...)
}

// parseFrom reads --from: live, a sequence, or a time.
func parseFrom(s string, now time.Time) (client.SubscribeOption, error) {
	if s == "" || s == "live" {
		return client.Live(), nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return client.FromSequence(n), nil
	}
	t, err := audit.ParseTimeBound(s, now)
	if err != nil {
		return nil, fmt.Errorf("%q is not live, a sequence or a time: use live, 1234, 2026-05-01T10:00:00Z, 2026-05-01 or 10m", s)
	}
	return client.FromTime(t), nil
}

func lagReason(r client.LagReason) string {
	if r == client.LagMaxLag {
		return "more than --max-lag behind; read them with --from"
	}
	return r.String()
}

// eventPrinter prints a stream: one line per event, or with --json one
// protobuf-JSON object per message ({"started": …}, {"event": …},
// {"lagged": …}), as EventService sends them with JSON encodings.
type eventPrinter struct {
	w         io.Writer
	json      bool
	canonical bool
}

func (p eventPrinter) started(st client.Started) {
	if p.json {
		p.print(&pb.SubscribeResponse{Message: &pb.SubscribeResponse_Started{Started: &pb.Started{
			StartSequence: st.Start, OldestSequence: st.Oldest, LastSequence: st.Last, Resumed: st.Resumed}}})
	}
}

func (p eventPrinter) lagged(l *client.LaggedError) {
	if p.json {
		reason := pb.Lagged_REASON_RETENTION
		if l.Reason == client.LagMaxLag {
			reason = pb.Lagged_REASON_MAX_LAG
		}
		p.print(&pb.SubscribeResponse{Message: &pb.SubscribeResponse_Lagged{Lagged: &pb.Lagged{Reason: reason,
			FirstMissed: l.FirstMissed, LastMissed: l.LastMissed, ResumeSequence: l.LastMissed + 1}}})
	}
}

func (p eventPrinter) print(msg *pb.SubscribeResponse) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil { // only for invalid UTF-8, which the JSON documents never hold
		b = []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	fmt.Fprintln(p.w, string(b))
}

// doc spells a document as Extended JSON.
func (p eventPrinter) doc(d bson.Raw) *pb.Document {
	if len(d) == 0 {
		return nil
	}
	j, err := bson.MarshalExtJSON(d, p.canonical, false)
	if err != nil {
		return &pb.Document{Bson: d}
	}
	return &pb.Document{Json: string(j)}
}

func (p eventPrinter) event(e *client.Event) error {
	if p.json {
		out := &pb.ChangeEvent{Sequence: e.Sequence, Source: e.Source, OperationType: e.Operation,
			DocumentKey: p.doc(e.DocumentKey), FullDocument: p.doc(e.FullDocument), UpdatedFields: p.doc(e.UpdatedFields),
			RemovedFields: e.RemovedFields, FullDocumentBeforeChange: p.doc(e.FullDocumentBeforeChange), Raw: p.doc(e.Raw)}
		if e.Namespace.DB != "" {
			out.Ns = &pb.Namespace{Db: e.Namespace.DB, Coll: e.Namespace.Coll}
		}
		if e.To.DB != "" {
			out.To = &pb.Namespace{Db: e.To.DB, Coll: e.To.Coll}
		}
		for _, t := range e.TruncatedArrays {
			out.TruncatedArrays = append(out.TruncatedArrays, &pb.TruncatedArray{Field: t.Field, NewSize: t.NewSize})
		}
		if e.ClusterTime.T != 0 || e.ClusterTime.I != 0 {
			out.ClusterTime = &pb.ClusterTime{Seconds: e.ClusterTime.T, Increment: e.ClusterTime.I}
		}
		if !e.WallTime.IsZero() {
			out.WallTime = timestamppb.New(e.WallTime)
		}
		if !e.CapturedAt.IsZero() {
			out.CapturedAt = timestamppb.New(e.CapturedAt)
		}
		p.print(&pb.SubscribeResponse{Message: &pb.SubscribeResponse_Event{Event: out}})
		return nil
	}
	at := e.CapturedAt
	if e.ClusterTime.T != 0 {
		at = time.Unix(int64(e.ClusterTime.T), 0)
	}
	ns := "-"
	if e.Namespace.DB != "" {
		ns = e.Namespace.String()
	}
	parts := []string{strconv.FormatUint(e.Sequence, 10), when(timestamppb.New(at)), e.Operation, ns}
	if k := p.doc(e.DocumentKey); k != nil {
		parts = append(parts, k.Json)
	}
	switch {
	case len(e.UpdatedFields) > 0 || len(e.RemovedFields) > 0:
		if u := p.doc(e.UpdatedFields); u != nil {
			parts = append(parts, "set "+u.Json)
		}
		if len(e.RemovedFields) > 0 {
			parts = append(parts, "unset "+strings.Join(e.RemovedFields, ","))
		}
	case len(e.FullDocument) > 0:
		parts = append(parts, p.doc(e.FullDocument).Json)
	case e.To.DB != "":
		parts = append(parts, "to "+e.To.String())
	}
	if b := p.doc(e.FullDocumentBeforeChange); b != nil {
		parts = append(parts, "before "+b.Json)
	}
	if e.Operation == "" && len(e.Raw) > 0 {
		parts = append(parts, "unparsed "+p.doc(e.Raw).Json)
	}
	_, err := fmt.Fprintln(p.w, strings.Join(parts, "  "))
	return err
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
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.DeleteSubscription(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "deleted durable subscription %s\n", pos[0])
	return nil
}
