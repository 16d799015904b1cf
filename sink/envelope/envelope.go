// Package envelope turns an outbox record into the key, value and headers
// of a broker message, in one of two layouts:
//
//   - "godwit": the value is the change event itself, as relaxed (default)
//     or canonical MongoDB Extended JSON, or as the raw BSON the server
//     sent. The key is the event's documentKey as canonical Extended JSON.
//   - "debezium": the value is the payload of the Debezium MongoDB
//     connector's change event (before/after as Extended JSON strings,
//     updateDescription, op c/u/d, source block, ts_ms), the key is
//     {"id": "<_id as relaxed Extended JSON>"}, so consumers written for
//     Debezium parse it unchanged. Only document changes (insert, update,
//     replace, delete) have a Debezium form: other events are skipped.
//
// Every message carries the same headers (see the Header constants) so that
// consumers can deduplicate redeliveries by source and outbox sequence.
//
// # Caveats
//
// The Debezium connector writes after/before in the Java driver's legacy
// "strict" JSON mode; godwit writes canonical Extended JSON (or relaxed),
// which every Extended JSON parser (BsonDocument.parse, bson.UnmarshalExtJSON,
// EJSON.parse) reads back to the same BSON. Values are the schemaless
// payload (what Kafka Connect's JsonConverter writes with
// schemas.enable=false).
package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// Formats.
const (
	FormatGodwit   = "godwit"
	FormatDebezium = "debezium"
)

// Encodings of the godwit format's value (and, for debezium, of the JSON
// strings inside it; bson is godwit only).
const (
	EncodingRelaxed   = "relaxed"
	EncodingCanonical = "canonical"
	EncodingBSON      = "bson"
)

// Header names on every message.
const (
	// HeaderSource is the id of the source the event was captured from.
	HeaderSource = "godwit-source"
	// HeaderSeq is the outbox sequence (decimal): unique and increasing
	// across all sources of one outbox. A redelivered event has the same
	// source and sequence, so consumers deduplicate on the pair.
	HeaderSeq = "godwit-seq"
	// HeaderOperation is the change event's operationType.
	HeaderOperation = "godwit-operation"
	// HeaderNamespace is "db.coll" (or "db" for database events).
	HeaderNamespace = "godwit-namespace"
	// HeaderClusterTime is the event's clusterTime as "T:I" (seconds and
	// increment of the BSON timestamp).
	HeaderClusterTime = "godwit-cluster-time"
	// HeaderContentType is application/json or application/bson.
	HeaderContentType = "content-type"
)

// Config chooses the layout.
type Config struct {
	// Format is godwit (default) or debezium.
	Format string `yaml:"format"`
	// Encoding is relaxed, canonical or bson for the godwit format
	// (default relaxed), and relaxed or canonical for the Extended JSON
	// strings of the debezium format (default canonical).
	Encoding string `yaml:"encoding"`
	// Name is the Debezium logical server name (source.name). Default: the
	// id of the source the event came from.
	Name string `yaml:"name"`
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch c.Format {
	case "", FormatGodwit:
		switch c.Encoding {
		case "", EncodingRelaxed, EncodingCanonical, EncodingBSON:
		default:
			return fmt.Errorf("encoding: %q: use relaxed, canonical or bson", c.Encoding)
		}
		if c.Name != "" {
			return errors.New("name: only the debezium format has a logical server name")
		}
	case FormatDebezium:
		switch c.Encoding {
		case "", EncodingRelaxed, EncodingCanonical:
		default:
			return fmt.Errorf("encoding: %q: the debezium format writes Extended JSON strings: use canonical or relaxed", c.Encoding)
		}
	default:
		return fmt.Errorf("format: %q: use godwit or debezium", c.Format)
	}
	return nil
}

// Header is one message header.
type Header struct {
	Key, Value string
}

// Message is an encoded event.
type Message struct {
	// Key identifies the document (nil for events without a documentKey).
	Key []byte
	// Value is the encoded event.
	Value []byte
	// Headers are the godwit headers, in a fixed order.
	Headers []Header
	// Event is the parsed change event (for topic or subject names).
	Event *change.Event
}

// Encoder encodes records per its Config.
type Encoder struct {
	cfg       Config
	canonical bool
}

// New returns an encoder; it validates cfg.
func New(cfg Config) (*Encoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Format == "" {
		cfg.Format = FormatGodwit
	}
	if cfg.Encoding == "" {
		cfg.Encoding = EncodingRelaxed
		if cfg.Format == FormatDebezium {
			cfg.Encoding = EncodingCanonical
		}
	}
	return &Encoder{cfg: cfg, canonical: cfg.Encoding == EncodingCanonical}, nil
}

// ErrMalformed is returned by Encode for a record whose event godwit cannot
// parse: retrying cannot help, so sinks mark it permanent.
var ErrMalformed = errors.New("event cannot be encoded")

// Encode encodes rec. ok is false when the format has no form for the
// event (Debezium and DDL events): the sink skips it.
func (e *Encoder) Encode(rec outbox.Record) (m Message, ok bool, err error) {
	if len(rec.Raw) < 5 || int(int32(uint32(rec.Raw[0])|uint32(rec.Raw[1])<<8|uint32(rec.Raw[2])<<16|uint32(rec.Raw[3])<<24)) < 5 {
		// Shorter than the smallest BSON document: the driver's validation
		// panics on some of these (found by FuzzEncoder).
		return m, false, fmt.Errorf("%w: event %d: %d bytes are not a BSON document", ErrMalformed, rec.Seq, len(rec.Raw))
	}
	ev, err := change.Parse(rec.Raw)
	if err != nil {
		return m, false, fmt.Errorf("%w: event %d: %v", ErrMalformed, rec.Seq, err)
	}
	m.Event = ev
	m.Headers = headers(rec, ev)
	if e.cfg.Format == FormatDebezium {
		return e.debezium(rec, ev, m)
	}
	if ev.DocumentKey != nil {
		if m.Key, err = bson.MarshalExtJSON(ev.DocumentKey, true, false); err != nil {
			return m, false, fmt.Errorf("%w: event %d: documentKey: %v", ErrMalformed, rec.Seq, err)
		}
	}
	if e.cfg.Encoding == EncodingBSON {
		m.Value = rec.Raw
		m.Headers = append(m.Headers, Header{HeaderContentType, "application/bson"})
		return m, true, nil
	}
	if m.Value, err = bson.MarshalExtJSON(ev.Raw, e.canonical, false); err != nil {
		return m, false, fmt.Errorf("%w: event %d: %v", ErrMalformed, rec.Seq, err)
	}
	m.Headers = append(m.Headers, Header{HeaderContentType, "application/json"})
	return m, true, nil
}

func headers(rec outbox.Record, ev *change.Event) []Header {
	return []Header{
		{HeaderSource, rec.Source},
		{HeaderSeq, strconv.FormatUint(rec.Seq, 10)},
		{HeaderOperation, ev.OperationType},
		{HeaderNamespace, ev.NS.String()},
		{HeaderClusterTime, strconv.FormatUint(uint64(ev.ClusterTime.T), 10) + ":" + strconv.FormatUint(uint64(ev.ClusterTime.I), 10)},
	}
}

// Debezium layout. Field order and names follow the Debezium MongoDB
// connector's change-stream events (docs/sinks.md cites the fields).
type dbzValue struct {
	Before            *string    `json:"before"`
	After             *string    `json:"after"`
	UpdateDescription *dbzUpdate `json:"updateDescription"`
	Source            dbzSource  `json:"source"`
	Op                string     `json:"op"`
	TsMs              int64      `json:"ts_ms"`
	Transaction       *struct{}  `json:"transaction"`
}

type dbzUpdate struct {
	RemovedFields   []string       `json:"removedFields"`
	UpdatedFields   *string        `json:"updatedFields"`
	TruncatedArrays []dbzTruncated `json:"truncatedArrays"`
}

type dbzTruncated struct {
	Field string `json:"field"`
	Size  int32  `json:"size"`
}

type dbzSource struct {
	Version    string  `json:"version"`
	Connector  string  `json:"connector"`
	Name       string  `json:"name"`
	TsMs       int64   `json:"ts_ms"`
	Snapshot   string  `json:"snapshot"`
	DB         string  `json:"db"`
	Sequence   *string `json:"sequence"`
	Rs         string  `json:"rs"`
	Collection string  `json:"collection"`
	Ord        uint32  `json:"ord"`
	Lsid       *string `json:"lsid"`
	TxnNumber  *int64  `json:"txnNumber"`
	WallTime   *int64  `json:"wallTime"`
}

type dbzKey struct {
	ID string `json:"id"`
}

// DebeziumVersion is what godwit writes in source.version.
const DebeziumVersion = "godwit"

func (e *Encoder) debezium(rec outbox.Record, ev *change.Event, m Message) (Message, bool, error) {
	var op string
	switch ev.OperationType {
	case change.OpInsert:
		op = "c"
	case change.OpUpdate, change.OpReplace:
		op = "u"
	case change.OpDelete:
		op = "d"
	default:
		return m, false, nil
	}
	id, hasID := ev.DocumentID()
	if !hasID {
		return m, false, fmt.Errorf("%w: event %d: %s without documentKey._id", ErrMalformed, rec.Seq, ev.OperationType)
	}
	// Debezium's key is the _id alone, as relaxed JSON.
	idJSON, err := bson.MarshalExtJSON(bson.D{{Key: "id", Value: id}}, false, false)
	if err != nil {
		return m, false, fmt.Errorf("%w: event %d: _id: %v", ErrMalformed, rec.Seq, err)
	}
	var wrapped struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(idJSON, &wrapped); err != nil {
		return m, false, fmt.Errorf("%w: event %d: _id: %v", ErrMalformed, rec.Seq, err)
	}
	if m.Key, err = json.Marshal(dbzKey{ID: string(wrapped.ID)}); err != nil {
		return m, false, err
	}

	name := e.cfg.Name
	if name == "" {
		name = rec.Source
	}
	v := dbzValue{
		Op:   op,
		TsMs: rec.CapturedAt.UnixMilli(),
		Source: dbzSource{
			Version: DebeziumVersion, Connector: "mongodb", Name: name,
			TsMs: int64(ev.ClusterTime.T) * 1000, Snapshot: "false",
			DB: ev.NS.DB, Rs: rec.Source, Collection: ev.NS.Coll, Ord: ev.ClusterTime.I,
		},
	}
	if !ev.WallTime.IsZero() {
		w := ev.WallTime.UnixMilli()
		v.Source.WallTime = &w
	}
	if ev.HasTxn {
		n := ev.TxnNumber
		v.Source.TxnNumber = &n
		if ev.LSID != nil {
			s, err := e.json(ev.LSID)
			if err != nil {
				return m, false, fmt.Errorf("%w: event %d: lsid: %v", ErrMalformed, rec.Seq, err)
			}
			v.Source.Lsid = s
		}
	}
	if ev.FullDocument != nil && op != "d" {
		if v.After, err = e.json(ev.FullDocument); err != nil {
			return m, false, fmt.Errorf("%w: event %d: fullDocument: %v", ErrMalformed, rec.Seq, err)
		}
	}
	if ev.FullDocumentBeforeChange != nil && op != "c" {
		if v.Before, err = e.json(ev.FullDocumentBeforeChange); err != nil {
			return m, false, fmt.Errorf("%w: event %d: fullDocumentBeforeChange: %v", ErrMalformed, rec.Seq, err)
		}
	}
	if u := ev.UpdateDescription; u != nil && ev.OperationType == change.OpUpdate {
		d := &dbzUpdate{}
		if len(u.RemovedFields) > 0 {
			d.RemovedFields = u.RemovedFields
		}
		if u.UpdatedFields != nil {
			if d.UpdatedFields, err = e.json(u.UpdatedFields); err != nil {
				return m, false, fmt.Errorf("%w: event %d: updatedFields: %v", ErrMalformed, rec.Seq, err)
			}
		}
		for _, t := range u.TruncatedArrays {
			d.TruncatedArrays = append(d.TruncatedArrays, dbzTruncated{Field: t.Field, Size: t.NewSize})
		}
		v.UpdateDescription = d
	}
	if m.Value, err = json.Marshal(v); err != nil {
		return m, false, err
	}
	m.Headers = append(m.Headers, Header{HeaderContentType, "application/json"})
	return m, true, nil
}

func (e *Encoder) json(doc bson.Raw) (*string, error) {
	b, err := bson.MarshalExtJSON(doc, e.canonical, false)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

// Tombstone reports whether a delete of this message's document may be
// followed by a tombstone (a null value under the same key) for compacted
// Kafka topics.
func (m Message) Tombstone() bool {
	return m.Event != nil && m.Event.OperationType == change.OpDelete && m.Key != nil
}
