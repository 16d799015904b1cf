package events

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

var (
	// ErrInvalidRequest is returned (as a *RequestError naming the field) by
	// Subscribe and Ack for a request that cannot be served as asked.
	ErrInvalidRequest = errors.New("invalid request")

	// ErrNotFound is returned by Ack and Delete for a durable subscription
	// that does not exist.
	ErrNotFound = errors.New("no such durable subscription")

	// ErrTakenOver is returned by Subscribe when a newer stream of the same
	// durable subscription replaced this one.
	ErrTakenOver = errors.New("a newer stream of this durable subscription took over")

	// ErrDeleted is returned by Subscribe when its durable subscription was
	// deleted while streaming.
	ErrDeleted = errors.New("durable subscription deleted")

	// ErrClosed is returned by Subscribe when the engine closes (the daemon
	// is stopping) and by every call after that.
	ErrClosed = errors.New("event subscriptions are shut down")
)

// RequestError says which field of a request is wrong and why.
type RequestError struct {
	Field   string
	Problem string
}

func (e *RequestError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes errors.Is(err, ErrInvalidRequest) true.
func (e *RequestError) Unwrap() error { return ErrInvalidRequest }

func invalid(field, format string, args ...any) error {
	return &RequestError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Start says where a subscription begins.
type Start int

// Starts.
const (
	// StartLive sends only events appended after the subscription started.
	StartLive Start = iota
	// StartSequence sends events from Request.FromSequence on.
	StartSequence
	// StartTime sends events captured at or after Request.FromTime.
	StartTime
)

// Request describes a subscription. The zero value is a live subscription
// to every event.
type Request struct {
	// Sources are source ids; empty: every source.
	Sources []string
	// Namespaces are globs (change.ParseGlob). Empty: every namespace.
	// Namespaces, Operations and Ignore are a change.Filter, whose doc says
	// how renames (either namespace passing is enough), events without a
	// namespace (never dropped by the globs) and godwit's metadata database
	// (never sent) are judged.
	Namespaces []string
	// Operations are operation types; empty: every operation.
	Operations []string
	// Ignore are globs of namespaces never sent, even when Namespaces
	// match: where the subscriber writes, so that it never sees its own
	// writes. A rename out of an ignored namespace into a watched one is
	// still sent: the watched namespace changed.
	Ignore []string

	Start        Start
	FromSequence uint64
	FromTime     time.Time

	// Durable names a durable subscription (letters, digits, '_', '-',
	// '.'; at most 64). Empty: not durable.
	Durable string
	// MaxLag > 0 skips a non-durable subscriber that is more than MaxLag
	// events behind the newest event to the newest (with a Lagged message).
	MaxLag uint64
	// Peer says who subscribed (for status), for example "127.0.0.1:5555".
	Peer string
	// Visible, when set, hides the events it returns false for as if the
	// filters had dropped them: what the subscriber may not see (its
	// allow-list). Events godwit cannot parse are hidden too.
	Visible func(source string, ns change.Namespace) bool
}

// durableRule admits a caller's own name (at most 64 characters) behind
// its user id and a dot, which the API adds for users with a token.
var durableRule = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,129}$`)

// ValidName reports whether name can name a durable subscription.
func ValidName(name string) bool { return durableRule.MatchString(name) }

// filter is a compiled Request.
type filter struct {
	sources []string
	f       change.Filter
	visible func(string, change.Namespace) bool
}

func (r Request) compile(metadataDB string) (*filter, error) {
	f := &filter{sources: r.Sources, visible: r.Visible,
		f: change.Filter{Operations: r.Operations, MetadataDB: metadataDB}}
	for i, s := range r.Sources {
		if s == "" {
			return nil, invalid(fmt.Sprintf("sources[%d]", i), "empty source id")
		}
	}
	for i, p := range r.Namespaces {
		g, err := change.ParseGlob(p)
		if err != nil {
			return nil, invalid(fmt.Sprintf("namespaces[%d]", i), "%v", err)
		}
		f.f.Include = append(f.f.Include, g)
	}
	for i, p := range r.Ignore {
		g, err := change.ParseGlob(p)
		if err != nil {
			return nil, invalid(fmt.Sprintf("ignore_namespaces[%d]", i), "%v", err)
		}
		f.f.Ignore = append(f.f.Ignore, g)
	}
	for i, op := range r.Operations {
		if !change.Known(op) {
			return nil, invalid(fmt.Sprintf("operation_types[%d]", i), "unknown operation type %q; use one of %s",
				op, strings.Join(change.KnownOperationTypes, ", "))
		}
	}
	if r.Durable != "" && !ValidName(r.Durable) {
		return nil, invalid("durable_name", "%q: use 1 to 64 letters, digits, '_', '-' or '.'", r.Durable)
	}
	if r.Start == StartTime && r.FromTime.IsZero() {
		return nil, invalid("from_time", "required when starting from a time")
	}
	return f, nil
}

// match decides whether rec is sent and parses it. An event godwit cannot
// parse is sent (with a nil Change) only to subscriptions that filter by
// nothing but the source: dropping it silently would hide it.
func (f *filter) match(rec outbox.Record) (*change.Event, bool) {
	if len(f.sources) > 0 && !slices.Contains(f.sources, rec.Source) {
		return nil, false
	}
	ev, err := change.Parse(rec.Raw)
	if err != nil {
		return nil, f.f.Unfiltered() && f.visible == nil
	}
	if f.visible != nil && !f.visible(rec.Source, ev.NS) {
		return nil, false
	}
	if !f.f.Match(ev) {
		return nil, false
	}
	return ev, true
}

// String spells the request as `godwit events tail` flags, for status.
func (r Request) String() string {
	var parts []string
	for _, s := range r.Sources {
		parts = append(parts, "--source "+s)
	}
	for _, s := range r.Namespaces {
		parts = append(parts, "--ns "+s)
	}
	if len(r.Operations) > 0 {
		parts = append(parts, "--op "+strings.Join(r.Operations, ","))
	}
	for _, s := range r.Ignore {
		parts = append(parts, "--ignore "+s)
	}
	if r.MaxLag > 0 {
		parts = append(parts, fmt.Sprintf("--max-lag %d", r.MaxLag))
	}
	return strings.Join(parts, " ")
}
