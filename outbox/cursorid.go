package outbox

import (
	"fmt"
	"strings"
)

// CursorKind says whose cursor an outbox cursor is.
type CursorKind uint8

// Cursor kinds. The zero CursorKind is no kind: the zero CursorID is
// refused wherever a cursor is named.
const (
	// KindSink is a configured sink's cursor: its key is the sink id.
	KindSink CursorKind = iota + 1
	// KindTrigger is a database trigger's cursor: "trigger:<id>".
	KindTrigger
	// KindSubscription is a durable event subscription's cursor:
	// "sub:<name>".
	KindSubscription
	// kindHold is a reader's hold (see Hold): never stored, and its NUL
	// byte keeps it apart from every stored key.
	kindHold
)

// The key prefixes of the kinds that have one. A configured sink's id has
// no prefix, so it may not contain ':' (nor NUL, which starts a hold's).
const (
	triggerPrefix      = "trigger:"
	subscriptionPrefix = "sub:"
	holdPrefix         = "\x00hold:"
)

// String returns the kind's name, as status shows it.
func (k CursorKind) String() string {
	switch k {
	case KindSink:
		return "sink"
	case KindTrigger:
		return "trigger"
	case KindSubscription:
		return "subscription"
	case kindHold:
		return "hold"
	}
	return fmt.Sprintf("CursorKind(%d)", uint8(k))
}

// CursorID names an outbox cursor: its kind and the name within the kind
// (a sink id, a trigger id, a subscription name). Its key in the outbox
// file (String) is the name behind a prefix per kind, so different kinds
// never share a key. CursorID is comparable and can key a map.
type CursorID struct {
	kind CursorKind
	name string
}

// SinkCursor returns the cursor of configured sink id. The id must not
// contain ':' (see CursorID.Validate), which the config's id rule already
// forbids.
func SinkCursor(id string) CursorID { return CursorID{KindSink, id} }

// TriggerCursor returns the cursor of database trigger id.
func TriggerCursor(id string) CursorID { return CursorID{KindTrigger, id} }

// SubscriptionCursor returns the cursor of durable event subscription name.
func SubscriptionCursor(name string) CursorID { return CursorID{KindSubscription, name} }

// holdCursor names reader id's hold among the cursors retention respects.
func holdCursor(id string) CursorID { return CursorID{kindHold, id} }

// Kind returns the cursor's kind (0 for the zero CursorID).
func (c CursorID) Kind() CursorKind { return c.kind }

// Name returns the name within the kind: the sink id, trigger id or
// subscription name.
func (c CursorID) Name() string { return c.name }

// String returns the cursor's key in the outbox file: the sink id,
// "trigger:<id>" or "sub:<name>".
func (c CursorID) String() string {
	switch c.kind {
	case KindTrigger:
		return triggerPrefix + c.name
	case KindSubscription:
		return subscriptionPrefix + c.name
	case kindHold:
		return holdPrefix + c.name
	}
	return c.name
}

func (c CursorID) key() []byte { return []byte(c.String()) }

// Validate reports whether c can name a stored cursor. A sink id must not
// contain ':' or a NUL byte: "trigger:x" would be trigger x's cursor.
func (c CursorID) Validate() error {
	switch {
	case c.kind < KindSink || c.kind > KindSubscription:
		return fmt.Errorf("%w: no kind (make it with SinkCursor, TriggerCursor or SubscriptionCursor)", ErrCursorID)
	case c.name == "":
		return fmt.Errorf("%w: empty %s id", ErrCursorID, c.kind)
	case strings.IndexByte(c.name, 0) >= 0:
		return fmt.Errorf("%w: %s id %q contains a NUL byte", ErrCursorID, c.kind, c.name)
	case c.kind == KindSink && strings.IndexByte(c.name, ':') >= 0:
		return fmt.Errorf("%w: sink id %q contains ':', which godwit reserves for its own cursors (%q, %q); use letters, digits, '_' and '-'",
			ErrCursorID, c.name, triggerPrefix, subscriptionPrefix)
	}
	return nil
}

// ParseCursorID returns the cursor whose key is key (CursorID.String), as
// the outbox file stores it.
func ParseCursorID(key string) (CursorID, error) {
	var c CursorID
	if name, ok := strings.CutPrefix(key, triggerPrefix); ok {
		c = TriggerCursor(name)
	} else if name, ok := strings.CutPrefix(key, subscriptionPrefix); ok {
		c = SubscriptionCursor(name)
	} else {
		c = SinkCursor(key)
	}
	if err := c.Validate(); err != nil {
		return CursorID{}, fmt.Errorf("cursor key %q: %w", key, err)
	}
	return c, nil
}
