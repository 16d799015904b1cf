package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/godwit-dev/godwit/auth"
)

func init() {
	register(command{name: "token", summary: "make an API token (new) or hash one from stdin (hash) for api.tokens", run: runToken})
}

const tokenUsage = `<new|hash> [--user U] [--role user|admin]

  new   prints a fresh random token and the api.tokens line holding its SHA-256
  hash  reads one token from stdin and prints its SHA-256 (with --user: the
        api.tokens line); the same as printf %s TOKEN | sha256sum

The config keeps only the SHA-256; godwit reads tokens at start, so restart it
after changing api.tokens. See docs/security.md.`

func runToken(_ context.Context, m *Main, args []string) error {
	fs := m.newFlags("token", tokenUsage)
	user := fs.String("user", "", "the user the token acts as (api.tokens[].user)")
	role := fs.String("role", "user", "user (own triggers and functions only) or admin (everything)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	if *role != string(auth.RoleUser) && *role != string(auth.RoleAdmin) {
		return fmt.Errorf("--role %q: use user or admin", *role)
	}
	line := func(sum string) string {
		u := *user
		if u == "" {
			u = "USER"
		}
		return fmt.Sprintf("  - {user: %s, role: %s, sha256: %s}", u, *role, sum)
	}
	switch pos[0] {
	case "new":
		token, err := auth.NewToken()
		if err != nil {
			return err
		}
		sum := auth.Hash(token)
		fmt.Fprintf(m.Stdout, "token:  %s\nsha256: %s\n\n", token, sum)
		fmt.Fprintf(m.Stdout, "Add under api.tokens in the config (the token itself never goes there), then restart godwit:\n%s\n", line(sum))
		fmt.Fprintf(m.Stdout, "Give the token to its user over a private channel (they pass it as --token or %s); it is not shown again.\n", tokenEnv)
	case "hash":
		token, err := readToken(os.Stdin)
		if err != nil {
			return err
		}
		sum := auth.Hash(token)
		if *user != "" {
			fmt.Fprintln(m.Stdout, line(sum))
		} else {
			fmt.Fprintln(m.Stdout, sum)
		}
	default:
		fmt.Fprintf(m.Stderr, "godwit token: unknown subcommand %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

// readToken reads one token: surrounding whitespace (the newline echo or
// a here-string adds) is not part of it.
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4097))
	if err != nil {
		return "", fmt.Errorf("read the token from stdin: %w", err)
	}
	if len(b) > 4096 {
		return "", errors.New("stdin holds more than 4096 bytes: pass one token")
	}
	token := strings.TrimSpace(string(b))
	switch {
	case token == "":
		return "", errors.New("no token on stdin (echo \"$TOKEN\" | godwit token hash)")
	case strings.ContainsAny(token, " \t\r\n"):
		return "", errors.New("stdin holds more than one word: pass one token")
	}
	return token, nil
}
