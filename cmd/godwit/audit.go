package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
)

func init() {
	register(command{name: "audit", summary: "start sealing, verify, export the head of, or query the audit log", run: runAudit})
}

const auditUsage = `Usage: godwit audit <init|verify|head|query> [flags]

  init --file PATH [--rotate]
        start sealing the log (godwit serve does it too on first start) and
        write its verification key to PATH.key; --rotate starts a new key
  verify --file PATH [--key KEYFILE]... [--head INDEX:HASH]
        check the hash chain, and with --key every seal; exit 1 naming the
        first bad record
  head --file PATH
        verify, then print the head (INDEX:HASH) to keep somewhere safe
  query --file PATH [--since T] [--until T] [--ns GLOB] [--class C]
        [--severity MIN] [--source ID] [--json] [--follow]
        print records as a table, or JSON lines with --json

Run 'godwit audit <subcommand> -h' for details.`

func runAudit(ctx context.Context, m *Main, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(m.Stderr, auditUsage)
		return errUsage
	}
	switch args[0] {
	case "init":
		return auditInit(ctx, m, args[1:])
	case "verify":
		return auditVerify(m, args[1:])
	case "head":
		return auditHead(m, args[1:])
	case "query":
		return auditQuery(ctx, m, args[1:])
	case "help", "-h", "--help":
		fmt.Fprintln(m.Stderr, auditUsage)
		return nil
	default:
		fmt.Fprintf(m.Stderr, "godwit audit: unknown subcommand %q\n\n%s\n", args[0], auditUsage)
		return errUsage
	}
}

func auditInit(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("audit init", "--file PATH [--rotate]")
	file := fs.String("file", "", "audit log (required; created if missing). godwit must not be running on it")
	rotate := fs.Bool("rotate", false, "start a new sealing key even if the log is sealed already (key rotation, or going on after the state file was lost)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fmt.Fprintln(m.Stderr, "godwit audit init: --file is required")
		return errUsage
	}
	var opts []audit.Option
	if *rotate {
		opts = append(opts, audit.WithNewKey())
	}
	s, err := audit.Open(audit.Config{Path: *file}, zerolog.Nop(), opts...) // what matters is printed below
	if err != nil {
		return err
	}
	herr := s.Halted()
	seg, sealed := s.Sealing()
	if err := s.Close(ctx); err != nil {
		return err
	}
	if herr != nil {
		return &exitError{code: 1, msg: herr.Error()}
	}
	if !sealed {
		return &exitError{code: 1, msg: fmt.Sprintf("%s is not sealed", *file)}
	}
	fmt.Fprintf(m.Stdout, "%s is sealed from record %d with key %s\n", *file, seg.Start, seg.KeyID)
	if _, err := os.Stat(seg.KeyFile); err == nil {
		fmt.Fprintf(m.Stdout, "verification key: %s\n", seg.KeyFile)
		fmt.Fprintf(m.Stdout, "move it off this machine now (godwit never needs it again; 'godwit audit verify --key' does)\n")
	} else {
		fmt.Fprintf(m.Stdout, "its verification key was written to %s and has been moved away, as it should\n", seg.KeyFile)
	}
	return nil
}

// keysFlag collects repeatable --key files.
type keysFlag []string

func (k *keysFlag) String() string { return strings.Join(*k, ",") }
func (k *keysFlag) Set(v string) error {
	*k = append(*k, v)
	return nil
}

func auditVerify(m *Main, args []string) error {
	fs := m.newFlags("audit verify", "--file PATH [--key KEYFILE]... [--head INDEX:HASH]")
	file := fs.String("file", "", "audit log to verify (required)")
	headFlag := fs.String("head", "", "a head exported earlier with 'godwit audit head' (INDEX:HASH): the log must still reach it unchanged")
	var keyFiles keysFlag
	fs.Var(&keyFiles, "key", "verification key file written when sealing started (PATH.key); repeat it for each key after rotations")
	if err := parse(fs, args); err != nil {
		return err
	}
	var keys []audit.VerifyKey
	for _, p := range keyFiles {
		k, err := audit.ReadKeyFile(p)
		if err != nil {
			fmt.Fprintf(m.Stderr, "godwit audit verify: --key: %v\n", err)
			return errUsage
		}
		keys = append(keys, k)
	}
	if *file == "" {
		fmt.Fprintln(m.Stderr, "godwit audit verify: --file is required")
		return errUsage
	}
	var head *audit.Head
	if *headFlag != "" {
		h, err := audit.ParseHead(*headFlag)
		if err != nil {
			fmt.Fprintf(m.Stderr, "godwit audit verify: --head: %v\n", err)
			return errUsage
		}
		head = &h
	}
	rep, err := checkFile(*file, head, keys)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "intact: %d records, head %s\n", rep.Records, rep.Head)
	if head != nil {
		fmt.Fprintf(m.Stdout, "reaches the given head %d unchanged\n", head.Index)
	}
	switch from := rep.SealedFrom(); {
	case from == 0:
		fmt.Fprintf(m.Stdout, "not sealed: only the hash chain protects it (godwit seals from its next record once it runs)\n")
	case rep.SealsChecked:
		if from > 1 {
			fmt.Fprintf(m.Stdout, "records 1..%d were written before sealing started: the chain and record %d's seal cover them\n", from-1, from)
		}
		for _, sg := range rep.Segments {
			fmt.Fprintf(m.Stdout, "sealed: records %d..%d with key %s, every seal valid\n", sg.FirstIndex, sg.FirstIndex+sg.Records-1, sg.KeyID)
		}
	default:
		fmt.Fprintf(m.Stdout, "sealed from record %d: seals not checked; give the verification key with --key to detect records forged with a recomputed chain\n", from)
	}
	if rep.Incomplete > 0 {
		fmt.Fprintf(m.Stderr, "note: ignored an incomplete last line (%d bytes): a record being written, or left by a crash\n", rep.Incomplete)
	}
	return nil
}

func auditHead(m *Main, args []string) error {
	fs := m.newFlags("audit head", "--file PATH")
	file := fs.String("file", "", "audit log (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fmt.Fprintln(m.Stderr, "godwit audit head: --file is required")
		return errUsage
	}
	rep, err := checkFile(*file, nil, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, rep.Head)
	return nil
}

// checkFile verifies the log at path (with keys: its seals too); a broken
// chain or a bad seal is exit code 1 with the first bad record named.
func checkFile(path string, head *audit.Head, keys []audit.VerifyKey) (audit.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return audit.Report{}, err
	}
	defer f.Close()
	var rep audit.Report
	if len(keys) > 0 {
		rep, err = audit.CheckSealed(f, head, keys)
	} else {
		rep, err = audit.Check(f, head)
	}
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		return rep, &exitError{code: 1, msg: fmt.Sprintf("%s is NOT intact after %d good records: %v", path, rep.Records, err)}
	}
	return rep, err
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func auditQuery(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("audit query", "--file PATH [filters] [--json] [--follow]")
	file := fs.String("file", "", "audit log (required)")
	since := fs.String("since", "", "only records at or after this time: RFC 3339, a date, or a duration ago (24h, 7d)")
	until := fs.String("until", "", "only records before this time (same forms as --since)")
	var nss, classes listFlag
	fs.Var(&nss, "ns", "namespace glob, for example 'shop.*' (repeatable, or comma-separated)")
	fs.Var(&classes, "class", "record class, for example drop,mass_delete (repeatable, or comma-separated)")
	severity := fs.String("severity", "", "minimum severity: low, medium, high or critical")
	source := fs.String("source", "", "only records of this source")
	asJSON := fs.Bool("json", false, "print the records' JSON lines as stored, instead of a table")
	follow := fs.Bool("follow", false, "keep printing records as they are written, until interrupted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fmt.Fprintln(m.Stderr, "godwit audit query: --file is required")
		return errUsage
	}
	var f audit.Filter
	now := time.Now()
	var err error
	if *since != "" {
		if f.Since, err = audit.ParseTimeBound(*since, now); err != nil {
			fmt.Fprintf(m.Stderr, "godwit audit query: --since: %v\n", err)
			return errUsage
		}
	}
	if *until != "" {
		if f.Until, err = audit.ParseTimeBound(*until, now); err != nil {
			fmt.Fprintf(m.Stderr, "godwit audit query: --until: %v\n", err)
			return errUsage
		}
	}
	for _, p := range nss {
		g, err := change.ParseGlob(p)
		if err != nil {
			fmt.Fprintf(m.Stderr, "godwit audit query: --ns: %v\n", err)
			return errUsage
		}
		f.Namespaces = append(f.Namespaces, g)
	}
	f.Classes = classes
	if *severity != "" && audit.SeverityRank(*severity) == 0 {
		fmt.Fprintf(m.Stderr, "godwit audit query: --severity: %q is not one of %s\n", *severity, strings.Join(audit.Severities, ", "))
		return errUsage
	}
	f.MinSeverity, f.Source = *severity, *source

	emit := audit.NewTableWriter(m.Stdout).Write
	if *asJSON {
		emit = func(r audit.Record) error {
			_, err := fmt.Fprintf(m.Stdout, "%s\n", r.Line())
			return err
		}
	}
	if *follow {
		for r, err := range audit.Follow(ctx, *file, f, 0) {
			if err != nil {
				return fmt.Errorf("%w; run 'godwit audit verify --file %s'", err, *file)
			}
			if err := emit(r); err != nil {
				return err
			}
		}
		return nil
	}
	fh, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer fh.Close()
	for r, err := range audit.Query(fh, f) {
		if err != nil {
			return fmt.Errorf("%w; run 'godwit audit verify --file %s'", err, *file)
		}
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}
