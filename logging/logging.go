// Package logging sets up godwit's zerolog logger and removes secrets from
// what it logs.
package logging

import (
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// New returns a logger writing to w: human-readable console lines when w is
// a terminal, JSON lines otherwise. level is a zerolog level name ("" means
// info).
func New(w io.Writer, level string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		var err error
		if lvl, err = zerolog.ParseLevel(level); err != nil {
			return zerolog.Nop(), err
		}
	}
	out := w
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// RedactURI returns uri with any password replaced by "xxxxx". Strings that
// do not parse as URLs are redacted by pattern, so a malformed URI never
// leaks either.
func RedactURI(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.User != nil {
		return u.Redacted()
	} else if err == nil {
		return uri
	}
	return userinfo.ReplaceAllString(uri, "${1}${2}:xxxxx@")
}

// userinfo matches "scheme://user:password@" in text that failed to parse.
var userinfo = regexp.MustCompile(`(\w[\w+.-]*://)([^:/@\s]*):[^@\s]*@`)

// RedactText replaces every "scheme://user:password@" in s, for error
// messages that may quote a URI (driver errors do).
func RedactText(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllString(s, "${1}${2}:xxxxx@")
}
