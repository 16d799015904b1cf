// Command godwit captures MongoDB change streams into a durable outbox and
// drains it into sinks. Run "godwit help" for the subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	_ "github.com/godwit-dev/godwit/sink/all" // every sink type, for every subcommand that reads a config
)

// command is one subcommand. Each lives in its own file and registers itself
// in init.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, m *Main, args []string) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// Main holds what subcommands share: the standard streams.
type Main struct {
	Stdout io.Writer
	Stderr io.Writer
}

// errUsage makes main exit 2 without printing the error again.
var errUsage = errors.New("usage")

// exitError carries a specific exit code (for example verify's "differences
// found") with a message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signalContext()
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// signalContext is cancelled by the first SIGINT or SIGTERM, so that the
// running command flushes and exits cleanly; a second signal exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-ch
		fmt.Fprintf(os.Stderr, "godwit: %s received, shutting down (send it again to exit at once)\n", sig)
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "godwit: second signal, exiting without flushing")
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// Run runs the subcommand named by args[0] and returns the exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		m.usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(m.Stderr, "godwit: unknown command %q\n\n", args[0])
		m.usage()
		return 2
	}
	err := c.run(ctx, m, args[1:])
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(m.Stderr, "godwit %s: %s\n", c.name, ee.msg)
		}
		return ee.code
	default:
		fmt.Fprintf(m.Stderr, "godwit %s: %v\n", c.name, err)
		return 1
	}
}

func (m *Main) usage() {
	fmt.Fprintln(m.Stderr, "godwit — MongoDB change streams into a durable outbox, drained into sinks.")
	fmt.Fprintln(m.Stderr, "\nUsage: godwit <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(m.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(m.Stderr, "\nRun 'godwit <command> -h' for a command's flags.")
}

// newFlags returns a flag set that reports errors to stderr and returns them
// (instead of exiting), so Run decides the exit code.
func (m *Main) newFlags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("godwit "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "Usage: godwit %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, mapping errors to errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
