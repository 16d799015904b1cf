// Package brokers holds what the message-broker sinks (kafka, nats) share:
// secrets that never print, TLS files, and name templates that turn an
// event's namespace into a topic or subject.
package brokers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Secret is a password, token or key read from the config. It prints,
// marshals and logs as "xxxxx", so a config or status dump never shows it;
// Reveal returns the value for the one place that needs it.
type Secret string

const redacted = "xxxxx"

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText implements encoding.TextMarshaler (JSON and YAML use it).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// TLS names PEM files for a connection to a broker. With none set but the
// struct present, the system roots verify the broker.
type TLS struct {
	// CA is a PEM file of the certificate authorities that sign the
	// brokers' certificates. Default: the system roots.
	CA string `yaml:"ca"`
	// Cert and Key are the client certificate and its key (mutual TLS).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate checks off: tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Validate names the first bad field.
func (t *TLS) Validate() error {
	if t == nil {
		return nil
	}
	if (t.Cert == "") != (t.Key == "") {
		return errors.New("tls: cert and key go together (mutual TLS needs both)")
	}
	return nil
}

// Config loads the files into a tls.Config.
func (t *TLS) Config() (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca: %s holds no PEM certificate", t.CA)
		}
		c.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls.cert/tls.key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Vars are the values a Template fills in.
type Vars struct {
	Prefix, Source, DB, Coll, Op string
}

// Template is a parsed name template such as "{prefix}.{db}.{coll}".
type Template struct {
	parts []part
}

type part struct {
	lit string
	v   string // placeholder name, empty for a literal
}

// ParseTemplate parses s, accepting only the placeholders in allowed.
func ParseTemplate(s string, allowed ...string) (Template, error) {
	var t Template
	if s == "" {
		return t, errors.New("empty")
	}
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.parts = append(t.parts, part{lit: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("%q has an unclosed {", s)
		}
		name := s[i+1 : i+j]
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return t, fmt.Errorf("unknown placeholder {%s} (use %s)", name, placeholders(allowed))
		}
		t.parts = append(t.parts, part{v: name})
		s = s[i+j+1:]
	}
	return t, nil
}

func placeholders(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "{" + n + "}"
	}
	return strings.Join(out, ", ")
}

// Uses reports whether the template has the placeholder name.
func (t Template) Uses(name string) bool {
	for _, p := range t.parts {
		if p.v == name {
			return true
		}
	}
	return false
}

// Expand fills in the placeholders; clean makes each value safe for the
// broker's naming rules. Literals and the prefix are the user's own and are
// checked once, at validation.
func (t Template) Expand(v Vars, clean func(string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p.v {
		case "":
			b.WriteString(p.lit)
		case "prefix":
			b.WriteString(v.Prefix)
		case "source":
			b.WriteString(clean(v.Source))
		case "db":
			b.WriteString(clean(v.DB))
		case "coll":
			b.WriteString(clean(v.Coll))
		case "op":
			b.WriteString(clean(v.Op))
		}
	}
	return b.String()
}
