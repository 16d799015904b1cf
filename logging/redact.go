package logging

import (
	"encoding/json"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
)

// Mask replaces every secret godwit redacts.
const Mask = "xxxxx"

// secretOptions are the connection-string options whose value is a
// credential: the URI options spec's tlsCertificateKeyFilePassword and
// proxyPassword, and the Go driver's alias of the first. Keys are
// compared case-insensitively, as drivers do.
var secretOptions = map[string]bool{
	"tlscertificatekeyfilepassword":   true,
	"sslclientcertificatekeypassword": true,
	"proxypassword":                   true,
}

// publicOptions are the options of the URI options spec (and the Go
// driver's aliases and extras) whose values are not credentials. A value
// of any other option is masked with its key: an unknown key may be a
// typo, a newer credential option, or the tail of a secret that held an
// unescaped '&'.
var publicOptions = map[string]bool{
	"appname": true, "authmechanism": true, "authsource": true, "compressors": true,
	"connect": true, "connecttimeoutms": true, "directconnection": true,
	"heartbeatfrequencyms": true, "heartbeatintervalms": true, "journal": true,
	"loadbalanced": true, "localthresholdms": true, "maxidletimems": true,
	"maxpoolsize": true, "maxconnecting": true, "maxstalenessseconds": true,
	"maxstaleness": true, "minpoolsize": true, "proxyhost": true, "proxyport": true,
	"proxyusername": true, "readconcernlevel": true, "readpreference": true,
	"readpreferencetags": true, "replicaset": true, "retryreads": true,
	"retrywrites": true, "servermonitoringmode": true, "serverselectiontimeoutms": true,
	"serverselectiontryonce": true, "sockettimeoutms": true, "srvmaxhosts": true,
	"srvservicename": true, "ssl": true, "tls": true, "tlsallowinvalidcertificates": true,
	"tlsallowinvalidhostnames": true, "tlscafile": true, "tlscertificatekeyfile": true,
	"tlscertificatefile": true, "tlsprivatekeyfile": true,
	"tlsdisablecertificaterevocationcheck": true, "tlsdisableocspendpointcheck": true,
	"tlsinsecure": true, "sslinsecure": true, "sslclientcertificatekeyfile": true,
	"sslcertificateauthorityfile": true, "timeoutms": true, "w": true,
	"waitqueuetimeoutms": true, "wtimeoutms": true, "wtimeout": true,
	"zlibcompressionlevel": true, "zstdcompressionlevel": true,
}

// RedactURI returns uri with every credential it carries replaced by
// Mask: the password of the user information, every value of
// authMechanismProperties (AWS_SESSION_TOKEN and the rest; the keys stay),
// tlsCertificateKeyFilePassword (and its alias
// sslClientCertificateKeyPassword), proxyPassword, and any option the URI
// options spec does not list (key and value: it may be a credential this
// code does not know). Hosts, the database and the other options stay, so
// the result still says where godwit connects.
//
// It is the one redaction of connection strings: logs, errors, gRPC
// status messages, status output, metric labels, verify output and audit
// records all get URIs through it (RedactText applies it to every URI in a
// message). It works on text that does not parse: a malformed URI is
// redacted as far as it can be read, erring toward hiding more. Strings
// without "://" (lungo:PATH) are returned unchanged.
func RedactURI(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	if !strings.HasPrefix(strings.ToLower(scheme), "mongodb") {
		return scheme + "://" + redactUserinfo(rest)
	}
	// The user information ends at the last '@': a password with an
	// unescaped '@' is hidden whole. When the query holds an '@' too (an
	// appname, say) the hosts are hidden with it: more, never less.
	at := strings.LastIndexByte(rest, '@')
	var b strings.Builder
	b.WriteString(scheme + "://")
	if at >= 0 {
		user, _, hasPw := strings.Cut(rest[:at], ":")
		b.WriteString(user)
		if hasPw {
			b.WriteString(":" + Mask)
		}
		b.WriteByte('@')
		rest = rest[at+1:]
	}
	hosts, query, hasQuery := strings.Cut(rest, "?")
	b.WriteString(hosts)
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(redactQuery(query))
	}
	return b.String()
}

// redactQuery masks the credentials among the options (key=value pairs
// separated by '&' or, in old URIs, ';').
func redactQuery(q string) string {
	var b strings.Builder
	start := 0
	for i := 0; i <= len(q); i++ {
		if i < len(q) && q[i] != '&' && q[i] != ';' {
			continue
		}
		b.WriteString(redactOption(q[start:i]))
		if i < len(q) {
			b.WriteByte(q[i])
		}
		start = i + 1
	}
	return b.String()
}

func redactOption(pair string) string {
	if pair == "" {
		return ""
	}
	rawKey, value, _ := strings.Cut(pair, "=")
	key, err := url.QueryUnescape(rawKey)
	if err != nil {
		return Mask
	}
	switch k := strings.ToLower(key); {
	case k == "authmechanismproperties":
		props := strings.Split(value, ",")
		for i, p := range props {
			name, _, _ := strings.Cut(p, ":")
			if !propName.MatchString(name) {
				// An escaped name may hide a ':' and the value after it.
				name = Mask
			}
			props[i] = name + ":" + Mask
		}
		return rawKey + "=" + strings.Join(props, ",")
	case secretOptions[k]:
		return rawKey + "=" + Mask
	case publicOptions[k]:
		return pair
	default:
		return Mask
	}
}

// propName is what an authMechanismProperties name looks like
// (AWS_SESSION_TOKEN, SERVICE_NAME, ENVIRONMENT, TOKEN_RESOURCE).
var propName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// userinfo matches "user:password@" right after a scheme's "://".
var userinfo = regexp.MustCompile(`^([^:/@\s]*):[^\s]*@`)

// redactUserinfo masks the password of a URI of another scheme
// (everything after "://").
func redactUserinfo(rest string) string {
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return rest
	}
	if m := userinfo.FindStringSubmatchIndex(rest[:at+1]); m != nil {
		return rest[m[2]:m[3]] + ":" + Mask + "@" + rest[at+1:]
	}
	return rest
}

// uriStart finds where URIs start in free text.
var uriStart = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://`)

// optionText finds a credential option outside a URI: a driver error
// quoting a value it could not parse, for example.
var optionText = regexp.MustCompile(`(?i)(AWS_SESSION_TOKEN|tlsCertificateKeyFilePassword|sslClientCertificateKeyPassword|proxyPassword)(%3A|[:=])[^\s,&;:"'` + "`" + `]+`)

// RedactText redacts every URI in s with RedactURI (a URI ends at white
// space or a quote; trailing punctuation is left out of it), every credential option quoted outside a URI, and
// every secret value of a URI godwit has been given (RememberSecrets): driver
// messages can quote a value without the URI around it. For error
// messages, status fields and log lines.
func RedactText(s string) string {
	if locs := uriStart.FindAllStringIndex(s, -1); locs != nil {
		var b strings.Builder
		last := 0
		for _, loc := range locs {
			if loc[0] < last {
				continue
			}
			end := loc[1] + strings.IndexFunc(s[loc[1]:], endOfURI)
			if end < loc[1] {
				end = len(s)
			}
			// Punctuation ending a sentence is not part of the URI.
			for end > loc[1] && strings.IndexByte(".,;:)]", s[end-1]) >= 0 {
				end--
			}
			b.WriteString(s[last:loc[0]])
			b.WriteString(RedactURI(s[loc[0]:end]))
			last = end
		}
		b.WriteString(s[last:])
		s = b.String()
	}
	s = optionText.ReplaceAllString(s, "${1}${2}"+Mask)
	if r := secrets.Load(); r != nil {
		s = r.Replace(s)
	}
	return s
}

func endOfURI(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', '<', '>':
		return true
	}
	return false
}

// MinSecretLen is the shortest secret RememberSecrets remembers: shorter
// values would mask ordinary words in every message (and are guessable
// anyway). URIs themselves are redacted whatever the length.
const MinSecretLen = 6

var (
	secretsMu sync.Mutex
	known     []string
	secrets   atomic.Pointer[strings.Replacer]
)

// RememberSecrets remembers the credentials uri carries (as written, and
// decoded; see remembered for which) so that RedactText and every log line masks them even where a
// message quotes one without its URI. mongodb.ParseURI calls it for every
// URI godwit reads, before the driver sees it.
func RememberSecrets(uri string) {
	vals := remembered(uri)
	if len(vals) == 0 {
		return
	}
	secretsMu.Lock()
	defer secretsMu.Unlock()
	added := false
	for _, v := range vals {
		forms := []string{v}
		if d, err := url.PathUnescape(v); err == nil {
			forms = append(forms, d)
		}
		if d, err := url.QueryUnescape(v); err == nil {
			forms = append(forms, d)
		}
		for _, f := range forms {
			if j, err := json.Marshal(f); err == nil {
				forms = append(forms, string(j[1:len(j)-1]))
			}
			if len(forms) > 12 {
				break
			}
		}
		for _, f := range forms {
			if len(f) >= MinSecretLen && !slices.Contains(known, f) {
				known = append(known, f)
				added = true
			}
		}
	}
	if !added {
		return
	}
	// Longest first, so that a secret containing another is masked whole.
	slices.SortFunc(known, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(known))
	for _, k := range known {
		pairs = append(pairs, k, Mask)
	}
	secrets.Store(strings.NewReplacer(pairs...))
}

// remembered returns the values of uri that RememberSecrets masks
// everywhere: the password, the values of credential options and of
// authMechanismProperties whose name says credential (AWS_SESSION_TOKEN,
// …TOKEN…, …SECRET…, …PASSWORD…, …KEY…), and unknown options (the pair,
// and a value that looks like a secret rather than a word). Other property
// values (SERVICE_NAME:mongodb) are masked in URIs only: masking "mongodb"
// in every message would garble them.
func remembered(uri string) []string {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil
	}
	var out []string
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
			out = append(out, pw)
		}
		rest = rest[at+1:]
	}
	_, q, _ := strings.Cut(rest, "?")
	for _, pair := range strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' }) {
		rawKey, value, _ := strings.Cut(pair, "=")
		key, _ := url.QueryUnescape(rawKey)
		switch k := strings.ToLower(key); {
		case k == "authmechanismproperties":
			for _, p := range strings.Split(value, ",") {
				if name, v, ok := strings.Cut(p, ":"); ok && v != "" && credentialName.MatchString(name) {
					out = append(out, v)
				}
			}
		case secretOptions[k]:
			if value != "" {
				out = append(out, value)
			}
		case !publicOptions[k]:
			out = append(out, pair)
			if len(value) >= 8 && strings.ContainsFunc(value, func(r rune) bool { return !unicode.IsLetter(r) }) {
				out = append(out, value)
			}
		}
	}
	return out
}

// credentialName is an authMechanismProperties name whose value is a
// credential.
var credentialName = regexp.MustCompile(`(?i)token|secret|password|key`)

// redactWriter masks remembered secrets in every write: the last line of
// defence for log lines built from messages nobody passed to RedactText.
type redactWriter struct{ w io.Writer }

func (r redactWriter) Write(p []byte) (int, error) {
	rep := secrets.Load()
	if rep == nil {
		return r.w.Write(p)
	}
	s := rep.Replace(string(p))
	if _, err := io.WriteString(r.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RedactingWriter returns w masking every remembered secret
// (RememberSecrets) in what is written through it.
func RedactingWriter(w io.Writer) io.Writer { return redactWriter{w: w} }
