package main

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/outbox"
)

func init() {
	register(command{name: "resync", summary: "restart a halted source's capture from now (after its history was lost)", run: runResync})
}

func runResync(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("resync", "--config FILE --source ID")
	path := fs.String("config", "", "configuration file")
	source := fs.String("source", "", "id of the source to resync")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" || *source == "" {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	found := false
	for _, s := range cfg.Sources {
		found = found || s.ID == *source
	}
	if !found {
		return fmt.Errorf("no source %q in %s", *source, *path)
	}
	ob, err := outbox.Open(cfg.Outbox.Path, outbox.Options{})
	if err != nil {
		return err
	}
	defer ob.Close(context.Background())
	st, ok, err := ob.Source(*source)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("source %q has never been captured; nothing to resync", *source)
	}
	// Audit first: a resync that happened is never missing from the log.
	msg := fmt.Sprintf("resync of source %s: resume token cleared (was %s: %s); capture restarts from now", *source, st.State, st.Reason)
	for _, sc := range cfg.Sinks {
		ac, ok := sc.Settings.(*audit.Config)
		if !ok {
			continue
		}
		a, err := audit.Open(*ac, zerolog.Nop())
		if err != nil {
			return fmt.Errorf("resync not done: it could not be audited in %s: %w", ac.Path, err)
		}
		err = a.RecordSystem(ctx, audit.SystemEvent{Class: audit.ClassResync, Source: *source, Message: msg})
		if cerr := a.Close(ctx); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("resync not done: it could not be audited in %s: %w", ac.Path, err)
		}
	}
	err = ob.UpdateSource(*source, func(s *outbox.SourceState) {
		s.Token, s.StartAt, s.State, s.Reason = nil, 0, outbox.StateRunning, ""
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "source %s: resume token cleared (was %s: %s); the next `godwit serve` captures from now\n", *source, st.State, st.Reason)
	return nil
}
