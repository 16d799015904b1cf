// Package auth owns who may use godwit's API: bearer tokens stored hashed,
// the identity (user, role, allow-list) a token stands for, and carrying
// that identity in a context.
//
// # Basics
//
// New builds an Authenticator from the configured tokens (api.tokens).
// Verify maps a presented token to its Identity. The rpc package calls it
// for every gRPC call and puts the Identity in the call's context with
// WithIdentity; services read it with FromContext. Hash and NewToken are
// what `godwit token` prints.
//
// Roles: RoleUser sees and changes only what it owns; RoleAdmin sees and
// changes everything. An Allow limits which data sources and namespaces a
// user's triggers may watch and write; the empty Allow allows everything.
// A user without a token (never had one, or revoked) has no rights at all:
// AllowOf gives it NoAccess, so its stored triggers stop.
//
// # Caveats
//
//   - Tokens are compared by their SHA-256, in constant time. A plain hash
//     (not a slow password hash) is enough because tokens are 256-bit
//     random values made by NewToken, not passwords people pick; a short
//     hand-made token is as weak as its entropy.
//   - There is no reload: a token removed from the config (revoked) stops
//     working when godwit restarts.
//   - An Authenticator without tokens is disabled: Enabled is false and
//     callers decide what that means (the rpc package then lets every call
//     through, which is why the API stays on loopback by default).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Role is what a user may see and change.
type Role string

// Roles.
const (
	// RoleUser sees and changes only its own triggers and functions.
	RoleUser Role = "user"
	// RoleAdmin sees and changes every user's triggers and functions.
	RoleAdmin Role = "admin"
)

var (
	// ErrNoToken is returned by Verify when tokens are configured and the
	// request carries none.
	ErrNoToken = errors.New("no bearer token")

	// ErrBadToken is returned by Verify for a token that matches no
	// configured token: mistyped, made up, or revoked (removed from the
	// config, effective after a restart).
	ErrBadToken = errors.New("invalid token")

	// ErrNotAllowed is returned (wrapped) when a trigger would watch or
	// write a data source or namespace outside its owner's allow-list.
	ErrNotAllowed = errors.New("not in the allow-list")
)

// TokenPrefix starts every token NewToken makes, so that secret scanners
// and people can tell a godwit token from other strings.
const TokenPrefix = "gdw_"

// NewToken returns a fresh random token: TokenPrefix and 32 random bytes
// in unpadded base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Hash returns the hex SHA-256 of token: the value of api.tokens[].sha256
// (the same as `printf %s TOKEN | sha256sum`).
func Hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Token is one configured credential.
type Token struct {
	// User is the user id the token acts as.
	User string
	// Role is RoleUser (default when empty) or RoleAdmin.
	Role Role
	// SHA256 is the hex SHA-256 of the token.
	SHA256 string
	// Sources and Namespaces are the user's allow-list (see Allow).
	Sources    []string
	Namespaces []string
}

// Identity is an authenticated caller.
type Identity struct {
	User  string
	Role  Role
	Allow Allow
}

// IsAdmin reports whether the identity sees and changes everything.
func (i Identity) IsAdmin() bool { return i.Role == RoleAdmin }

type entry struct {
	hash [sha256.Size]byte
	id   Identity
}

// Authenticator verifies bearer tokens. It is immutable and safe for
// concurrent use.
type Authenticator struct {
	entries []entry
	allow   map[string]Allow // by user
}

var userRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// New checks the tokens and returns their Authenticator. Errors name the
// token by its index (tokens[2].role: …). Tokens of one user must agree on
// the role and the allow-list: the allow-list binds the user's triggers,
// not a token. No tokens gives a disabled Authenticator.
func New(tokens []Token) (*Authenticator, error) {
	a := &Authenticator{allow: map[string]Allow{}}
	var errs []error
	seenHash := map[string]int{}
	firstOf := map[string]int{}
	for i, t := range tokens {
		f := fmt.Sprintf("tokens[%d]", i)
		if t.Role == "" {
			t.Role = RoleUser
		}
		if !userRule.MatchString(t.User) {
			errs = append(errs, fmt.Errorf("%s.user: %q: use 1 to 64 letters, digits, '_' or '-'", f, t.User))
			continue
		}
		if t.Role != RoleUser && t.Role != RoleAdmin {
			errs = append(errs, fmt.Errorf("%s.role: %q: use user or admin", f, t.Role))
			continue
		}
		raw, err := hex.DecodeString(t.SHA256)
		if err != nil || len(raw) != sha256.Size {
			errs = append(errs, fmt.Errorf("%s.sha256: want the 64 hex digits of the token's SHA-256 (godwit token hash)", f))
			continue
		}
		key := strings.ToLower(t.SHA256)
		if j, dup := seenHash[key]; dup {
			errs = append(errs, fmt.Errorf("%s.sha256: the same token as tokens[%d]", f, j))
			continue
		}
		seenHash[key] = i
		allow, err := NewAllow(t.Sources, t.Namespaces)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.allow.%w", f, err))
			continue
		}
		if j, ok := firstOf[t.User]; ok {
			prev := a.entries[j].id
			if prev.Role != t.Role || !prev.Allow.equal(allow) {
				errs = append(errs, fmt.Errorf("%s: user %q has another role or allow-list in the token before it; give every token of a user the same role and allow", f, t.User))
				continue
			}
		} else {
			firstOf[t.User] = len(a.entries)
		}
		e := entry{id: Identity{User: t.User, Role: t.Role, Allow: allow}}
		copy(e.hash[:], raw)
		a.entries = append(a.entries, e)
		a.allow[t.User] = allow
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// Enabled reports whether any token is configured.
func (a *Authenticator) Enabled() bool { return a != nil && len(a.entries) > 0 }

// Len returns the number of configured tokens.
func (a *Authenticator) Len() int {
	if a == nil {
		return 0
	}
	return len(a.entries)
}

// Verify returns the identity of token. It compares the token's hash with
// every configured hash in constant time, so how long it takes says nothing
// about which hash, or how much of one, matched.
func (a *Authenticator) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.entries {
		if subtle.ConstantTimeCompare(h[:], a.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, ErrBadToken
	}
	return a.entries[found].id, nil
}

// AllowOf returns the allow-list binding user's triggers. A user without
// a configured token (never had one, or revoked: its line removed from
// api.tokens) gets NoAccess: a missing line means no rights, never
// unrestricted ones, so a revoked user's triggers stop until an admin
// gives the user a token again or moves the triggers to another owner.
// A disabled Authenticator (no tokens at all) has no users and restricts
// nothing: every user gets the empty (unrestricted) Allow.
func (a *Authenticator) AllowOf(user string) Allow {
	if !a.Enabled() {
		return Allow{}
	}
	allow, ok := a.allow[user]
	if !ok {
		return NoAccess()
	}
	return allow
}

// BearerToken extracts the token from an Authorization header value
// ("Bearer TOKEN", scheme case-insensitive). It returns ErrNoToken when the
// value is empty or not a bearer credential.
func BearerToken(authorization string) (string, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", ErrNoToken
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", ErrNoToken
	}
	return token, nil
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the authenticated identity, if there is one. Without
// tokens configured there is none, and callers fall back to what the
// request says.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && id.User != ""
}

// Users returns the distinct users with tokens, sorted, for logs.
func (a *Authenticator) Users() []string {
	var out []string
	for _, e := range a.entries {
		if !slices.Contains(out, e.id.User) {
			out = append(out, e.id.User)
		}
	}
	slices.Sort(out)
	return out
}
