package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/rpc"
)

func init() {
	register(command{name: "trigger", summary: "create, update, enable, disable, delete, get and list triggers on a running godwit (gRPC)", run: runTrigger})
}

const triggerUsage = `<create|update|enable|disable|delete|get|list|dead-letters|retry|report-auth> [ID] [flags]

  create  --name N --function FID --type database|scheduled|authentication [config flags]
  update  ID [the flags to change]
  enable  ID [--skip-to-now]
  disable ID
  delete  ID
  get     ID
  list    [--user U] [--function FID] [--type T] [--source S] [--database D] [--collection C]
  dead-letters ID               the events the trigger gave up on, oldest first
  retry   ID [--seq N,N,...]    call the function once more on dead letters (all by default);
                                those that succeed are removed
  report-auth --auth-op login|create|delete --provider P --auth-user U [--details JSON] [--wait]
                                report an authentication event (what your identity proxy does)

Connection flags (every subcommand): --addr, --token (or GODWIT_TOKEN), --ca-cert, --cert/--key
  (mTLS), --tls, --server-name, --insecure. See docs/security.md.

Config flags: database: --source --database --collection --ops insert,update,replace,delete
  --full-document --pre-image --tolerate-resume-errors --unordered --match JSON --project JSON;
  scheduled: --schedule "*/5 * * * *" (UTC) --skip-missed; authentication: --auth-ops login,create,delete
  --providers P1,P2. Writes: --writes "ns-glob,..." [--write-source S]. Or --from FILE with the trigger as JSON.`

// client flags shared by the commands that talk to a running godwit.
type clientFlags struct {
	addr    *string
	asJSON  *bool
	timeout *time.Duration

	token, caCert, cert, key, serverName *string
	useTLS, insecure                     *bool
}

// tokenEnv holds the token when --token is not given: an environment
// variable stays out of shell history and `ps`.
const tokenEnv = "GODWIT_TOKEN"

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		addr:    fs.String("addr", rpc.DefaultAddr, "gRPC address of the godwit daemon (api.grpc_addr)"),
		asJSON:  fs.Bool("json", false, "print JSON (one object per line)"),
		timeout: fs.Duration("timeout", 60*time.Second, "give up after this long"),
		// The default is read at dial time, not shown here: -h must not
		// print the token.
		token:      fs.String("token", "", "bearer token (default: $"+tokenEnv+")"),
		caCert:     fs.String("ca-cert", "", "PEM file of the CA that signed the daemon's certificate (turns TLS on)"),
		cert:       fs.String("cert", "", "client certificate PEM file, for mTLS (turns TLS on; needs --key)"),
		key:        fs.String("key", "", "client key PEM file, for mTLS"),
		serverName: fs.String("server-name", "", "name to verify in the daemon's certificate (default: the host of --addr)"),
		useTLS:     fs.Bool("tls", false, "connect over TLS, verifying the daemon with the system's CAs"),
		insecure:   fs.Bool("insecure", false, "send the token without TLS to a non-loopback --addr (trusted networks only)"),
	}
}

func (c clientFlags) dial() (*grpc.ClientConn, error) {
	token := *c.token
	if token == "" {
		token = os.Getenv(tokenEnv)
	}
	return rpc.Dial(rpc.ClientConfig{Addr: *c.addr, Token: strings.TrimSpace(token), TLS: *c.useTLS, CACert: *c.caCert,
		Cert: *c.cert, Key: *c.key, ServerName: *c.serverName, AllowPlaintextToken: *c.insecure})
}

// connect dials the daemon and returns the connection, a context bounded by
// --timeout for the calls, and a function releasing both.
func (c clientFlags) connect(ctx context.Context) (*grpc.ClientConn, context.Context, func(), error) {
	conn, err := c.dial()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *c.timeout)
	return conn, ctx, func() { cancel(); conn.Close() }, nil
}

// parseInterspersed parses flags that may follow positional arguments
// ("get ID --json") and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// rpcErr turns a gRPC status into a plain message (code: message).
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	return err
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func printMsg(w io.Writer, asJSON bool, m proto.Message, human func()) {
	if asJSON {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		fmt.Fprintln(w, string(b))
		return
	}
	human()
}

var triggerTypes = map[string]pb.TriggerType{
	"database": pb.TriggerType_TRIGGER_TYPE_DATABASE, "scheduled": pb.TriggerType_TRIGGER_TYPE_SCHEDULED,
	"authentication": pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION,
}

func typeName(t pb.TriggerType) string {
	for k, v := range triggerTypes {
		if v == t {
			return k
		}
	}
	return t.String()
}

func runTrigger(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("trigger", triggerUsage)
	cf := addClientFlags(fs)
	user := fs.String("user", "", "user id (create without tokens: owner, with a token it is the token's user; list: filter, admins only)")
	name := fs.String("name", "", "trigger name (letters, digits, '_', '-'; at most 64)")
	typ := fs.String("type", "", "database, scheduled or authentication")
	fn := fs.String("function", "", "function id")
	disabled := fs.Bool("disabled", false, "create the trigger disabled")
	source := fs.String("source", "", "data source id (database triggers)")
	database := fs.String("database", "", "database name")
	collection := fs.String("collection", "", "collection name")
	ops := fs.String("ops", "", "operation types, comma-separated")
	fullDoc := fs.Bool("full-document", false, "pass fullDocument of updates")
	preImage := fs.Bool("pre-image", false, "pass fullDocumentBeforeChange")
	tolerate := fs.Bool("tolerate-resume-errors", false, "skip ahead instead of halting when behind retention")
	unordered := fs.Bool("unordered", false, "run events in parallel")
	match := fs.String("match", "", "match expression on the change event (Extended JSON)")
	project := fs.String("project", "", "projection of the change event (Extended JSON)")
	schedule := fs.String("schedule", "", "cron schedule, five fields, UTC")
	skipMissed := fs.Bool("skip-missed", false, "do not make up for runs missed while down")
	authOps := fs.String("auth-ops", "", "authentication operation types: login,create,delete")
	providers := fs.String("providers", "", "authentication providers, comma-separated")
	writes := fs.String("writes", "", "namespace globs the function may write, comma-separated")
	writeSource := fs.String("write-source", "", "data source receiving the function's writes")
	from := fs.String("from", "", "read the trigger from this JSON file (- for stdin)")
	skip := fs.Bool("skip-to-now", false, "enable: skip events that arrived while disabled")
	seqs := fs.String("seq", "", "retry: dead letter sequences, comma-separated (default: all)")
	authOp := fs.String("auth-op", "", "report-auth: login, create or delete")
	provider := fs.String("provider", "", "report-auth: the identity provider")
	authUser := fs.String("auth-user", "", "report-auth: the application's id of the user")
	details := fs.String("details", "", "report-auth: extra fields for functions (Extended JSON document)")
	wait := fs.Bool("wait", false, "report-auth: wait until every trigger handled the event")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	needID := func() (string, error) {
		if len(pos) != 2 {
			fmt.Fprintf(m.Stderr, "godwit trigger %s: needs exactly one trigger id\n", pos[0])
			return "", errUsage
		}
		return pos[1], nil
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	c := pb.NewTriggerServiceClient(conn)
	show := func(t *pb.Trigger) {
		printMsg(m.Stdout, *cf.asJSON, t, func() { printTrigger(m.Stdout, t) })
	}

	// apply sets the fields whose flags were given.
	apply := func(t *pb.Trigger) error {
		if *from != "" {
			var data []byte
			var err error
			if *from == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(*from)
			}
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			id := t.Id
			if err := protojson.Unmarshal(data, t); err != nil {
				return fmt.Errorf("--from %s: %w", *from, err)
			}
			if id != "" {
				t.Id = id
			}
		}
		if set["user"] {
			t.UserId = *user
		}
		if set["name"] {
			t.Name = *name
		}
		if set["function"] {
			t.FunctionId = *fn
		}
		if set["type"] {
			tt, ok := triggerTypes[*typ]
			if !ok {
				return fmt.Errorf("--type %q: use database, scheduled or authentication", *typ)
			}
			t.TriggerType = tt
		}
		switch t.TriggerType {
		case pb.TriggerType_TRIGGER_TYPE_DATABASE:
			d := t.GetDatabase()
			if d == nil {
				d = &pb.DatabaseConfig{}
				t.Config = &pb.Trigger_Database{Database: d}
			}
			for flagName, apply := range map[string]func(){
				"source": func() { d.DataSource = *source }, "database": func() { d.Database = *database },
				"collection": func() { d.Collection = *collection }, "ops": func() { d.OperationTypes = split(*ops) },
				"full-document": func() { d.FullDocument = *fullDoc }, "pre-image": func() { d.FullDocumentBeforeChange = *preImage },
				"tolerate-resume-errors": func() { d.TolerateResumeErrors = *tolerate }, "unordered": func() { d.Unordered = *unordered },
				"match": func() { d.Match = *match }, "project": func() { d.Project = *project },
			} {
				if set[flagName] {
					apply()
				}
			}
		case pb.TriggerType_TRIGGER_TYPE_SCHEDULED:
			s := t.GetScheduled()
			if s == nil {
				s = &pb.ScheduledConfig{}
				t.Config = &pb.Trigger_Scheduled{Scheduled: s}
			}
			if set["schedule"] {
				s.Schedule = *schedule
			}
			if set["skip-missed"] {
				s.SkipMissedRuns = *skipMissed
			}
		case pb.TriggerType_TRIGGER_TYPE_AUTHENTICATION:
			a := t.GetAuthentication()
			if a == nil {
				a = &pb.AuthenticationConfig{}
				t.Config = &pb.Trigger_Authentication{Authentication: a}
			}
			if set["auth-ops"] {
				a.OperationTypes = split(*authOps)
			}
			if set["providers"] {
				a.Providers = split(*providers)
			}
		}
		if t.Writes == nil {
			t.Writes = &pb.WriteConfig{}
		}
		if set["writes"] {
			t.Writes.Namespaces = split(*writes)
		}
		if set["write-source"] {
			t.Writes.DataSource = *writeSource
		}
		return nil
	}

	switch pos[0] {
	case "create":
		if len(pos) != 1 {
			return errUsage
		}
		t := &pb.Trigger{Enabled: !*disabled}
		if err := apply(t); err != nil {
			return err
		}
		if set["disabled"] || *from == "" {
			t.Enabled = !*disabled
		}
		got, err := c.CreateTrigger(ctx, &pb.CreateTriggerRequest{Trigger: t})
		if err != nil {
			return rpcErr(err)
		}
		show(got)
	case "update":
		id, err := needID()
		if err != nil {
			return err
		}
		t, err := c.GetTrigger(ctx, &pb.GetTriggerRequest{Id: id})
		if err != nil {
			return rpcErr(err)
		}
		t.Status = nil
		if err := apply(t); err != nil {
			return err
		}
		got, err := c.UpdateTrigger(ctx, &pb.UpdateTriggerRequest{Trigger: t})
		if err != nil {
			return rpcErr(err)
		}
		show(got)
	case "enable", "disable", "get", "delete":
		id, err := needID()
		if err != nil {
			return err
		}
		var got *pb.Trigger
		switch pos[0] {
		case "enable":
			got, err = c.EnableTrigger(ctx, &pb.EnableTriggerRequest{Id: id, SkipToNow: *skip})
		case "disable":
			got, err = c.DisableTrigger(ctx, &pb.DisableTriggerRequest{Id: id})
		case "get":
			got, err = c.GetTrigger(ctx, &pb.GetTriggerRequest{Id: id})
		case "delete":
			_, err = c.DeleteTrigger(ctx, &pb.DeleteTriggerRequest{Id: id})
			if err == nil {
				if *cf.asJSON {
					fmt.Fprintf(m.Stdout, "{\"deleted\":%q}\n", id)
				} else {
					fmt.Fprintf(m.Stdout, "deleted trigger %s\n", id)
				}
				return nil
			}
		}
		if err != nil {
			return rpcErr(err)
		}
		show(got)
	case "list":
		req := &pb.QueryTriggersRequest{UserId: *user, FunctionId: *fn, DataSource: *source, Database: *database, Collection: *collection}
		if *typ != "" {
			tt, ok := triggerTypes[*typ]
			if !ok {
				return fmt.Errorf("--type %q: use database, scheduled or authentication", *typ)
			}
			req.TriggerType = tt
		}
		stream, err := c.QueryTriggers(ctx, req)
		if err != nil {
			return rpcErr(err)
		}
		for {
			t, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return rpcErr(err)
			}
			printMsg(m.Stdout, *cf.asJSON, t, func() {
				fmt.Fprintf(m.Stdout, "%s  %-24s %-14s %-9s user=%s function=%s\n", t.Id, t.Name, typeName(t.TriggerType),
					t.GetStatus().GetState(), t.UserId, t.FunctionId)
			})
		}
	case "dead-letters":
		id, err := needID()
		if err != nil {
			return err
		}
		stream, err := c.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Id: id})
		if err != nil {
			return rpcErr(err)
		}
		n := 0
		for {
			dl, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return rpcErr(err)
			}
			n++
			printMsg(m.Stdout, *cf.asJSON, dl, func() {
				fmt.Fprintf(m.Stdout, "#%d  %s  parked %s after %d attempts: %s\n    %s\n", dl.Sequence, dl.Source,
					dl.GetParkedAt().AsTime().Format(time.RFC3339), dl.Attempts, dl.Error, dl.Event)
			})
		}
		if n == 0 && !*cf.asJSON {
			fmt.Fprintln(m.Stdout, "no dead letters")
		}
	case "retry":
		id, err := needID()
		if err != nil {
			return err
		}
		req := &pb.RetryDeadLettersRequest{Id: id}
		for _, v := range split(*seqs) {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return fmt.Errorf("--seq %q: want sequence numbers (see dead-letters), comma-separated", v)
			}
			req.Sequences = append(req.Sequences, n)
		}
		res, err := c.RetryDeadLetters(ctx, req)
		if err != nil {
			return rpcErr(err)
		}
		printMsg(m.Stdout, *cf.asJSON, res, func() {
			fmt.Fprintf(m.Stdout, "retried %d: %d succeeded (removed), %d failed again\n", len(res.Succeeded)+len(res.Failed),
				len(res.Succeeded), len(res.Failed))
			for _, seq := range slices.Sorted(maps.Keys(res.Failed)) {
				fmt.Fprintf(m.Stdout, "  #%d: %s\n", seq, res.Failed[seq])
			}
		})
		if len(res.Failed) > 0 {
			return &exitError{code: 1, msg: fmt.Sprintf("%d failed", len(res.Failed))}
		}
	case "report-auth":
		if len(pos) != 1 {
			return errUsage
		}
		res, err := c.ReportAuthEvent(ctx, &pb.ReportAuthEventRequest{OperationType: *authOp, Provider: *provider,
			UserId: *authUser, Details: *details, Wait: *wait})
		if err != nil {
			return rpcErr(err)
		}
		printMsg(m.Stdout, *cf.asJSON, res, func() {
			if len(res.Queued) == 0 {
				fmt.Fprintln(m.Stdout, "no running authentication trigger matches: nothing queued")
				return
			}
			fmt.Fprintf(m.Stdout, "queued as #%d for %s\n", res.Sequence, strings.Join(res.Queued, ", "))
			if *wait {
				fmt.Fprintf(m.Stdout, "  triggered: %v\n", res.Triggered)
				for _, id := range slices.Sorted(maps.Keys(res.Failed)) {
					fmt.Fprintf(m.Stdout, "  failed:    %s: %s\n", id, res.Failed[id])
				}
				if len(res.Pending) > 0 {
					fmt.Fprintf(m.Stdout, "  pending:   %v (still queued for them)\n", res.Pending)
				}
			}
		})
		if len(res.Failed) > 0 {
			return &exitError{code: 1, msg: fmt.Sprintf("%d failed", len(res.Failed))}
		}
	default:
		fmt.Fprintf(m.Stderr, "godwit trigger: unknown subcommand %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

func printTrigger(w io.Writer, t *pb.Trigger) {
	fmt.Fprintf(w, "trigger %s (%s)\n", t.Name, t.Id)
	fmt.Fprintf(w, "  type:      %s\n  user:      %s\n  function:  %s\n  enabled:   %v\n", typeName(t.TriggerType), t.UserId, t.FunctionId, t.Enabled)
	switch {
	case t.GetDatabase() != nil:
		d := t.GetDatabase()
		ns := d.Database
		if d.Collection != "" {
			ns += "." + d.Collection
		}
		if ns == "" {
			ns = "*"
		}
		fmt.Fprintf(w, "  source:    %s  namespace: %s  ops: %v\n", d.DataSource, ns, d.OperationTypes)
		if d.Match != "" {
			fmt.Fprintf(w, "  match:     %s\n", d.Match)
		}
		if d.Project != "" {
			fmt.Fprintf(w, "  project:   %s\n", d.Project)
		}
	case t.GetScheduled() != nil:
		fmt.Fprintf(w, "  schedule:  %s (UTC)\n", t.GetScheduled().Schedule)
	case t.GetAuthentication() != nil:
		fmt.Fprintf(w, "  auth ops:  %v  providers: %v\n", t.GetAuthentication().OperationTypes, t.GetAuthentication().Providers)
	}
	if ws := t.GetWrites(); ws != nil && len(ws.Namespaces) > 0 {
		src := ws.DataSource
		if src == "" {
			src = "the trigger's data source"
		}
		fmt.Fprintf(w, "  writes:    %v into %s\n", ws.Namespaces, src)
	}
	if st := t.GetStatus(); st != nil {
		fmt.Fprintf(w, "  state:     %s  invocations: %d  acked: %d  dead letters: %d\n", st.State, st.Invocations, st.Acked, st.DeadLetters)
		if st.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", st.LastError)
		}
	}
}
