package change

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// Operation types of the change-event specification. Events with other
// values are kept as they are; see Known.
const (
	OpInsert          = "insert"
	OpUpdate          = "update"
	OpReplace         = "replace"
	OpDelete          = "delete"
	OpDrop            = "drop"
	OpRename          = "rename"
	OpDropDatabase    = "dropDatabase"
	OpInvalidate      = "invalidate"
	OpCreate          = "create"
	OpCreateIndexes   = "createIndexes"
	OpDropIndexes     = "dropIndexes"
	OpModify          = "modify"
	OpShardCollection = "shardCollection"
	OpReshard         = "reshardCollection"
	OpRefineKey       = "refineCollectionShardKey"
)

// KnownOperationTypes lists the operation types godwit understands.
var KnownOperationTypes = []string{
	OpInsert, OpUpdate, OpReplace, OpDelete, OpDrop, OpRename, OpDropDatabase,
	OpInvalidate, OpCreate, OpCreateIndexes, OpDropIndexes, OpModify,
	OpShardCollection, OpReshard, OpRefineKey,
}

// Known reports whether op is one of KnownOperationTypes.
func Known(op string) bool {
	for _, k := range KnownOperationTypes {
		if k == op {
			return true
		}
	}
	return false
}

// IsDML reports whether op changes documents (as opposed to DDL).
func IsDML(op string) bool {
	return op == OpInsert || op == OpUpdate || op == OpReplace || op == OpDelete
}

// UpdateDescription is the updateDescription of an update event.
type UpdateDescription struct {
	UpdatedFields   bson.Raw
	RemovedFields   []string
	TruncatedArrays []TruncatedArray
	// DisambiguatedPaths is sent by servers 6.1+ for dotted or numeric keys.
	DisambiguatedPaths bson.Raw
}

// TruncatedArray says that the array at Field was cut to NewSize.
type TruncatedArray struct {
	Field   string
	NewSize int32
}

// Split is the splitEvent field of a fragment produced by
// $changeStreamSplitLargeEvent.
type Split struct {
	Fragment int32
	Of       int32
}

// Event is a parsed change event. Raw keeps the whole original document;
// fields absent from the event are zero.
type Event struct {
	Token                    bson.Raw
	OperationType            string
	NS                       Namespace
	To                       Namespace // rename target
	DocumentKey              bson.Raw
	ClusterTime              primitive.Timestamp
	WallTime                 time.Time
	FullDocument             bson.Raw
	FullDocumentBeforeChange bson.Raw
	UpdateDescription        *UpdateDescription
	LSID                     bson.Raw
	TxnNumber                int64
	HasTxn                   bool
	Split                    *Split
	Raw                      bson.Raw
}

// ErrMalformed is returned by Parse for bytes that are not a change event
// godwit can read: not a BSON document, or a known field of the wrong type.
var ErrMalformed = errors.New("malformed change event")

// Parse parses a raw change event.
func Parse(raw []byte) (*Event, error) {
	doc := bson.Raw(raw)
	if err := validate(doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := &Event{Raw: doc}
	elems, err := doc.Elements()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, el := range elems {
		v := el.Value()
		var ok = true
		switch el.Key() {
		case "_id":
			e.Token, ok = v.DocumentOK()
		case "operationType":
			e.OperationType, ok = v.StringValueOK()
		case "ns":
			var d bson.Raw
			if d, ok = v.DocumentOK(); ok {
				e.NS, ok = parseNS(d)
			}
		case "to":
			var d bson.Raw
			if d, ok = v.DocumentOK(); ok {
				e.To, ok = parseNS(d)
			}
		case "documentKey":
			e.DocumentKey, ok = v.DocumentOK()
		case "clusterTime":
			var t, i uint32
			t, i, ok = v.TimestampOK()
			e.ClusterTime = primitive.Timestamp{T: t, I: i}
		case "wallTime":
			var ms int64
			ms, ok = v.DateTimeOK()
			e.WallTime = primitive.DateTime(ms).Time().UTC()
		case "fullDocument":
			if v.Type != bsontype.Null {
				e.FullDocument, ok = v.DocumentOK()
			}
		case "fullDocumentBeforeChange":
			if v.Type != bsontype.Null {
				e.FullDocumentBeforeChange, ok = v.DocumentOK()
			}
		case "updateDescription":
			var d bson.Raw
			if d, ok = v.DocumentOK(); ok {
				e.UpdateDescription, err = parseUpdateDescription(d)
				ok = err == nil
			}
		case "lsid":
			e.LSID, ok = v.DocumentOK()
		case "txnNumber":
			e.TxnNumber, ok = v.AsInt64OK()
			e.HasTxn = ok
		case "splitEvent":
			var d bson.Raw
			if d, ok = v.DocumentOK(); ok {
				s := &Split{}
				f, okF := d.Lookup("fragment").AsInt64OK()
				of, okO := d.Lookup("of").AsInt64OK()
				s.Fragment, s.Of = int32(f), int32(of)
				ok = okF && okO && f >= 1 && of >= f
				e.Split = s
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: field %q has BSON type %s", ErrMalformed, el.Key(), v.Type)
		}
	}
	return e, nil
}

func parseNS(d bson.Raw) (Namespace, bool) {
	var ns Namespace
	if v, err := d.LookupErr("db"); err == nil {
		s, ok := v.StringValueOK()
		if !ok {
			return ns, false
		}
		ns.DB = s
	}
	if v, err := d.LookupErr("coll"); err == nil {
		s, ok := v.StringValueOK()
		if !ok {
			return ns, false
		}
		ns.Coll = s
	}
	return ns, true
}

func parseUpdateDescription(d bson.Raw) (*UpdateDescription, error) {
	u := &UpdateDescription{}
	if v, err := d.LookupErr("updatedFields"); err == nil {
		doc, ok := v.DocumentOK()
		if !ok {
			return nil, errors.New("updatedFields is not a document")
		}
		u.UpdatedFields = doc
	}
	if v, err := d.LookupErr("removedFields"); err == nil {
		arr, ok := v.ArrayOK()
		if !ok {
			return nil, errors.New("removedFields is not an array")
		}
		vals, _ := arr.Values()
		for _, x := range vals {
			s, ok := x.StringValueOK()
			if !ok {
				return nil, errors.New("removedFields holds a non-string")
			}
			u.RemovedFields = append(u.RemovedFields, s)
		}
	}
	if v, err := d.LookupErr("truncatedArrays"); err == nil {
		arr, ok := v.ArrayOK()
		if !ok {
			return nil, errors.New("truncatedArrays is not an array")
		}
		vals, _ := arr.Values()
		for _, x := range vals {
			td, ok := x.DocumentOK()
			if !ok {
				return nil, errors.New("truncatedArrays holds a non-document")
			}
			f, okF := td.Lookup("field").StringValueOK()
			n, okN := td.Lookup("newSize").AsInt64OK()
			if !okF || !okN {
				return nil, errors.New("truncatedArrays entry lacks field or newSize")
			}
			u.TruncatedArrays = append(u.TruncatedArrays, TruncatedArray{Field: f, NewSize: int32(n)})
		}
	}
	if v, err := d.LookupErr("disambiguatedPaths"); err == nil {
		doc, ok := v.DocumentOK()
		if !ok {
			return nil, errors.New("disambiguatedPaths is not a document")
		}
		u.DisambiguatedPaths = doc
	}
	return u, nil
}

// DocumentID returns the _id value of the document key, if any.
func (e *Event) DocumentID() (bson.RawValue, bool) {
	if e.DocumentKey == nil {
		return bson.RawValue{}, false
	}
	v, err := e.DocumentKey.LookupErr("_id")
	return v, err == nil
}

// validate checks that raw is one well-formed BSON document. The driver's
// Raw.Validate panics on a length prefix below 5 (found by fuzzing the
// Kafka/NATS envelope): bytes from outside are checked here first.
func validate(raw bson.Raw) error {
	if len(raw) < 5 {
		return fmt.Errorf("%d bytes are too short for a BSON document", len(raw))
	}
	if n := int32(binary.LittleEndian.Uint32(raw)); n < 5 || int(n) != len(raw) {
		return fmt.Errorf("BSON length prefix %d does not match the %d bytes given", n, len(raw))
	}
	return raw.Validate()
}
