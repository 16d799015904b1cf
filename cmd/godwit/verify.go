package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/replicate"
)

func init() {
	register(command{name: "verify", summary: "compare a replicate pipeline's source and target document by document", run: runVerify})
}

func runVerify(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlags("verify", "--config FILE [--pipeline ID]")
	path := fs.String("config", "", "configuration file (YAML; see docs/replicate.md)")
	pipeline := fs.String("pipeline", "", "id of the replicate sink to verify (default: every one)")
	maxDiffs := fs.Int("max-diffs", 10, "differing _ids to list per namespace")
	unordered := fs.Bool("ignore-field-order", false, "treat documents with the same fields in another order as equal")
	asJSON := fs.Bool("json", false, "print one JSON report per pipeline instead of text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" || *maxDiffs <= 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	all := replicate.Pipelines(cfg)
	var ps []replicate.Pipeline
	for _, p := range all {
		if *pipeline == "" || p.Config.ID == *pipeline {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		if *pipeline != "" {
			return fmt.Errorf("no replicate sink with id %q in %s", *pipeline, *path)
		}
		return fmt.Errorf("%s has no sink of type replicate", *path)
	}
	differ := 0
	for _, p := range ps {
		rep, err := verifyPipeline(ctx, m, p, *maxDiffs, *unordered, *asJSON)
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", p.Config.ID, err)
		}
		if !rep.Equal {
			differ++
		}
	}
	if differ > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d pipelines differ", differ, len(ps))}
	}
	return nil
}

func verifyPipeline(ctx context.Context, m *Main, p replicate.Pipeline, maxDiffs int, unordered, asJSON bool) (replicate.Report, error) {
	src, err := mongodb.Open(ctx, p.SourceURI, p.Dir)
	if err != nil {
		return replicate.Report{}, fmt.Errorf("source %s: %w", p.Config.Source, err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := mongodb.Open(ctx, p.Config.Target, p.Dir)
	if err != nil {
		return replicate.Report{}, fmt.Errorf("target: %w", err)
	}
	defer dst.Close(context.WithoutCancel(ctx))

	var out io.Writer = m.Stdout
	if asJSON {
		out = io.Discard
	} else {
		fmt.Fprintf(m.Stdout, "pipeline %s: %s → %s\n", p.Config.ID, src.Redacted, dst.Redacted)
	}
	opts := replicate.VerifyConfig(p.Config, p.MetadataDB, out)
	opts.MaxDiffs, opts.IgnoreFieldOrder = maxDiffs, unordered
	rep, err := replicate.Verify(ctx, src.Client, dst.Client, opts)
	if err != nil {
		return rep, err
	}
	if asJSON {
		b, _ := json.Marshal(struct {
			Pipeline string `json:"pipeline"`
			replicate.Report
		}{p.Config.ID, rep})
		fmt.Fprintln(m.Stdout, string(b))
	} else if rep.Equal {
		fmt.Fprintf(m.Stdout, "pipeline %s: equal\n", p.Config.ID)
	}
	return rep, nil
}
