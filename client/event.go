package client

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// Operation types, as MongoDB names them. Event.Operation holds these and
// the other DDL operation types MongoDB reports (create, createIndexes, …).
const (
	OpInsert       = "insert"
	OpUpdate       = "update"
	OpReplace      = "replace"
	OpDelete       = "delete"
	OpDrop         = "drop"
	OpRename       = "rename"
	OpDropDatabase = "dropDatabase"
	OpInvalidate   = "invalidate"
)

// Namespace is a database and a collection.
type Namespace struct {
	DB string
	// Coll is empty for database-level events (dropDatabase).
	Coll string
}

func (n Namespace) String() string {
	if n.Coll == "" {
		return n.DB
	}
	return n.DB + "." + n.Coll
}

// TruncatedArray says an update cut the array at Field to NewSize elements.
type TruncatedArray struct {
	Field   string
	NewSize uint32
}

// Event is one change event godwit captured. Which fields are set depends
// on the operation:
//
//	insert, replace  DocumentKey, FullDocument
//	update           DocumentKey, UpdatedFields, RemovedFields, TruncatedArrays,
//	                 FullDocument when the source captures it (updateLookup)
//	delete           DocumentKey, FullDocumentBeforeChange when the source
//	                 captures pre-images
//	DDL              Namespace, To for renames
type Event struct {
	// Sequence is godwit's outbox sequence: unique and increasing across
	// all sources.
	Sequence uint64
	// Source is the source id (sources[].id of godwit's configuration).
	Source string
	// Operation is OpInsert, OpUpdate, … Empty only for an event godwit
	// could not parse; then Raw holds it.
	Operation string
	Namespace Namespace
	// To is the target of a rename.
	To          Namespace
	DocumentKey bson.Raw
	// ClusterTime is the server's timestamp of the operation.
	ClusterTime primitive.Timestamp
	// WallTime is the server's wall clock time of the operation (MongoDB
	// 6.0+; zero otherwise).
	WallTime time.Time
	// CapturedAt is when godwit appended the event to its outbox.
	CapturedAt   time.Time
	FullDocument bson.Raw
	// FullDocumentBeforeChange is the pre-image.
	FullDocumentBeforeChange bson.Raw
	// UpdatedFields maps the updated fields (dotted paths) to their new
	// values.
	UpdatedFields   bson.Raw
	RemovedFields   []string
	TruncatedArrays []TruncatedArray
	// Raw is the whole change event as the server sent it (IncludeRaw, or
	// an event godwit could not parse).
	Raw bson.Raw
}

// Decode decodes the event's full document (the new version of the
// document) into v, a pointer, as bson.Unmarshal does. It returns
// ErrNoDocument when the event has none.
func (e *Event) Decode(v any) error {
	return decode(e.FullDocument, v, e.Sequence, "full document")
}

// DecodeBefore decodes the event's pre-image (the document before the
// change) into v. It returns ErrNoDocument when the event has none.
func (e *Event) DecodeBefore(v any) error {
	return decode(e.FullDocumentBeforeChange, v, e.Sequence, "pre-image")
}

// DecodeKey decodes the document key ({_id: …} and the shard key) into v.
func (e *Event) DecodeKey(v any) error {
	return decode(e.DocumentKey, v, e.Sequence, "document key")
}

// DecodeUpdate decodes the updated fields into v: a struct whose bson tags
// are the dotted paths, or a bson.M.
func (e *Event) DecodeUpdate(v any) error {
	return decode(e.UpdatedFields, v, e.Sequence, "updated fields")
}

func decode(d bson.Raw, v any, seq uint64, what string) error {
	if len(d) == 0 {
		return fmt.Errorf("event %d: %s: %w", seq, what, ErrNoDocument)
	}
	if err := bson.Unmarshal(d, v); err != nil {
		return fmt.Errorf("event %d: decode the %s into %T: %w", seq, what, v, err)
	}
	return nil
}

// ID returns the document's _id (a zero RawValue when the event has no
// document key).
func (e *Event) ID() bson.RawValue {
	if len(e.DocumentKey) == 0 {
		return bson.RawValue{}
	}
	v, _ := e.DocumentKey.LookupErr("_id")
	return v
}

// ChangedFields returns the dotted paths an update set, then those it
// removed.
func (e *Event) ChangedFields() []string {
	var out []string
	if len(e.UpdatedFields) > 0 {
		els, _ := e.UpdatedFields.Elements()
		for _, el := range els {
			out = append(out, el.Key())
		}
	}
	return append(out, e.RemovedFields...)
}

func fromProto(m *pb.ChangeEvent) *Event {
	e := &Event{
		Sequence:                 m.Sequence,
		Source:                   m.Source,
		Operation:                m.OperationType,
		DocumentKey:              m.DocumentKey.GetBson(),
		FullDocument:             m.FullDocument.GetBson(),
		FullDocumentBeforeChange: m.FullDocumentBeforeChange.GetBson(),
		UpdatedFields:            m.UpdatedFields.GetBson(),
		RemovedFields:            m.RemovedFields,
		Raw:                      m.Raw.GetBson(),
	}
	if n := m.Ns; n != nil {
		e.Namespace = Namespace{DB: n.Db, Coll: n.Coll}
	}
	if n := m.To; n != nil {
		e.To = Namespace{DB: n.Db, Coll: n.Coll}
	}
	if ct := m.ClusterTime; ct != nil {
		e.ClusterTime = primitive.Timestamp{T: ct.Seconds, I: ct.Increment}
	}
	if m.WallTime != nil {
		e.WallTime = m.WallTime.AsTime()
	}
	if m.CapturedAt != nil {
		e.CapturedAt = m.CapturedAt.AsTime()
	}
	for _, t := range m.TruncatedArrays {
		e.TruncatedArrays = append(e.TruncatedArrays, TruncatedArray{Field: t.Field, NewSize: t.NewSize})
	}
	return e
}

// Change is an event with its documents decoded into T.
type Change[T any] struct {
	*Event
	// Doc is the full document decoded; nil when the event has none.
	Doc *T
	// Before is the pre-image decoded; nil when the event has none.
	Before *T
}

// TypedStream is a Stream whose Next decodes every event's documents into
// T. Ack, Started, Flush and Close are the Stream's.
type TypedStream[T any] struct {
	*Stream
	cur *Change[T]
	err error
}

// Typed returns a view of s that decodes the documents of each event into
// T (a struct with bson tags, or a map). Read events only through it.
func Typed[T any](s *Stream) *TypedStream[T] { return &TypedStream[T]{Stream: s} }

// Next waits for the next event and decodes it, like Stream.Next. An event
// whose documents do not decode into T makes Next return false with a
// *DecodeError; Next may be called again to go on.
func (t *TypedStream[T]) Next(ctx context.Context) bool {
	t.cur, t.err = nil, nil
	if !t.Stream.Next(ctx) {
		t.err = t.Stream.Err()
		return false
	}
	e := t.Stream.Event()
	c := &Change[T]{Event: e}
	if len(e.FullDocument) > 0 {
		c.Doc = new(T)
		if err := bson.Unmarshal(e.FullDocument, c.Doc); err != nil {
			t.err = &DecodeError{Sequence: e.Sequence, Err: fmt.Errorf("full document into %T: %w", c.Doc, err)}
			return false
		}
	}
	if len(e.FullDocumentBeforeChange) > 0 {
		c.Before = new(T)
		if err := bson.Unmarshal(e.FullDocumentBeforeChange, c.Before); err != nil {
			t.err = &DecodeError{Sequence: e.Sequence, Err: fmt.Errorf("pre-image into %T: %w", c.Before, err)}
			return false
		}
	}
	t.cur = c
	return true
}

// Event returns the event Next found; nil after Next returned false.
func (t *TypedStream[T]) Event() *Change[T] { return t.cur }

// Err returns why Next returned false (nil after true).
func (t *TypedStream[T]) Err() error { return t.err }
