package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
)

func init() {
	register(command{name: "function", summary: "create, update, delete, get, list and try (exec) wasm functions on a running godwit (gRPC)", run: runFunction})
}

const functionUsage = `<create|update|enable|disable|delete|get|list|exec> [ID] [flags]

  create  --user U --name N --wasm FILE
  update  ID [--name N] [--wasm FILE]
  enable  ID | disable ID | delete ID
  get     ID [--wasm-out FILE]
  list    [--user U] [--name N]
  exec    (ID | --wasm FILE) --event JSON|@FILE [--call-timeout D]
          runs the function once on the event (Extended JSON) and prints its
          result, the writes it asked for (not applied) and its logs

Connection flags (every subcommand): --addr, --token (or GODWIT_TOKEN), --ca-cert, --cert/--key
  (mTLS), --tls, --server-name, --insecure. See docs/security.md.`

func readArg(v string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(v, "@"); ok {
		if rest == "-" {
			return io.ReadAll(os.Stdin)
		}
		return os.ReadFile(rest)
	}
	return []byte(v), nil
}

func runFunction(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("function", functionUsage)
	cf := addClientFlags(fs)
	user := fs.String("user", "", "user id (create without tokens: owner, with a token it is the token's user; list: filter, admins only)")
	name := fs.String("name", "", "function name (letters, digits, '_', '-'; at most 64)")
	wasmFile := fs.String("wasm", "", "the module file (a GOOS=wasip1 -buildmode=c-shared build, see docs/abi.md)")
	wasmOut := fs.String("wasm-out", "", "get: write the module to this file")
	event := fs.String("event", "", "exec: the event as Extended JSON, or @FILE")
	callTimeout := fs.Duration("call-timeout", 0, "exec: deadline of the call (default: the daemon's)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	var module []byte
	if *wasmFile != "" {
		if module, err = os.ReadFile(*wasmFile); err != nil {
			return fmt.Errorf("--wasm: %w", err)
		}
	}
	needID := func() (string, error) {
		if len(pos) != 2 {
			fmt.Fprintf(m.Stderr, "godwit function %s: needs exactly one function id\n", pos[0])
			return "", errUsage
		}
		return pos[1], nil
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	c := pb.NewFunctionServiceClient(conn)
	show := func(f *pb.Function) {
		printMsg(m.Stdout, *cf.asJSON, f, func() {
			state := "enabled"
			if !f.Enabled {
				state = "disabled"
			}
			fmt.Fprintf(m.Stdout, "%s  %-24s %-8s user=%s wasm=%d bytes sha256=%.12s\n", f.Id, f.Name, state, f.UserId, f.WasmSize, f.WasmSha256)
		})
	}
	switch pos[0] {
	case "create":
		got, err := c.CreateFunction(ctx, &pb.CreateFunctionRequest{Function: &pb.Function{UserId: *user, Name: *name,
			FunctionType: pb.FunctionType_FUNCTION_TYPE_WASM, Wasm: module}})
		if err != nil {
			return rpcErr(err)
		}
		show(got)
	case "update":
		id, err := needID()
		if err != nil {
			return err
		}
		got, err := c.UpdateFunction(ctx, &pb.UpdateFunctionRequest{Function: &pb.Function{Id: id, Name: *name, Wasm: module}})
		if err != nil {
			return rpcErr(err)
		}
		show(got)
	case "enable", "disable", "get":
		id, err := needID()
		if err != nil {
			return err
		}
		var got *pb.Function
		switch pos[0] {
		case "enable":
			got, err = c.EnableFunction(ctx, &pb.EnableFunctionRequest{Id: id})
		case "disable":
			got, err = c.DisableFunction(ctx, &pb.DisableFunctionRequest{Id: id})
		default:
			got, err = c.GetFunction(ctx, &pb.GetFunctionRequest{Id: id, IncludeWasm: *wasmOut != ""})
		}
		if err != nil {
			return rpcErr(err)
		}
		if *wasmOut != "" {
			if err := os.WriteFile(*wasmOut, got.Wasm, 0o644); err != nil {
				return err
			}
			got.Wasm = nil
		}
		show(got)
	case "delete":
		id, err := needID()
		if err != nil {
			return err
		}
		if _, err := c.DeleteFunction(ctx, &pb.DeleteFunctionRequest{Id: id}); err != nil {
			return rpcErr(err)
		}
		if *cf.asJSON {
			fmt.Fprintf(m.Stdout, "{\"deleted\":%q}\n", id)
		} else {
			fmt.Fprintf(m.Stdout, "deleted function %s\n", id)
		}
	case "list":
		stream, err := c.QueryFunctions(ctx, &pb.QueryFunctionsRequest{UserId: *user, Name: *name})
		if err != nil {
			return rpcErr(err)
		}
		for {
			f, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return rpcErr(err)
			}
			show(f)
		}
	case "exec":
		req := &pb.ExecuteFunctionRequest{Wasm: module}
		if len(pos) == 2 {
			req.FunctionId = pos[1]
		}
		if *event == "" {
			fmt.Fprintln(m.Stderr, "godwit function exec: --event is required")
			return errUsage
		}
		ev, err := readArg(*event)
		if err != nil {
			return fmt.Errorf("--event: %w", err)
		}
		req.Event = string(ev)
		if *callTimeout > 0 {
			req.Timeout = durationpb.New(*callTimeout)
		}
		res, err := c.ExecuteFunction(ctx, req)
		if err != nil {
			return rpcErr(err)
		}
		printMsg(m.Stdout, *cf.asJSON, res, func() {
			for _, l := range res.Logs {
				fmt.Fprintf(m.Stdout, "log %-5s %s\n", l.Level, l.Message)
			}
			for _, a := range res.Actions {
				fmt.Fprintf(m.Stdout, "%s %s %s", a.Kind, a.Namespace, a.Document)
				if a.Update != "" {
					fmt.Fprintf(m.Stdout, " %s", a.Update)
				}
				fmt.Fprintln(m.Stdout)
			}
			if res.Result != "" {
				fmt.Fprintf(m.Stdout, "result %s\n", res.Result)
			}
			fmt.Fprintf(m.Stdout, "took %s\n", res.Duration.AsDuration())
		})
		if res.Error != "" {
			return &exitError{code: 1, msg: "function failed: " + res.Error}
		}
	default:
		fmt.Fprintf(m.Stderr, "godwit function: unknown subcommand %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}
