package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
)

func init() {
	register(command{name: "audit", summary: "verify, export the head of, or query the audit log", run: runAudit})
}

const auditUsage = `Usage: godwit audit <verify|head|query> [flags]

  verify --file PATH [--head INDEX:HASH]
        check the hash chain; exit 1 naming the first bad record
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

func auditVerify(m *Main, args []string) error {
	fs := m.newFlags("audit verify", "--file PATH [--head INDEX:HASH]")
	file := fs.String("file", "", "audit log to verify (required)")
	headFlag := fs.String("head", "", "a head exported earlier with 'godwit audit head' (INDEX:HASH): the log must still reach it unchanged")
	if err := parse(fs, args); err != nil {
		return err
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
	rep, err := checkFile(*file, head)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "intact: %d records, head %s\n", rep.Records, rep.Head)
	if head != nil {
		fmt.Fprintf(m.Stdout, "reaches the given head %d unchanged\n", head.Index)
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
	rep, err := checkFile(*file, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, rep.Head)
	return nil
}

// checkFile verifies the log at path; a broken chain is exit code 1 with
// the first bad record named.
func checkFile(path string, head *audit.Head) (audit.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return audit.Report{}, err
	}
	defer f.Close()
	rep, err := audit.Check(f, head)
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
