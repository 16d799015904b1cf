package devdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// MaxMessageSize is the largest wire message devdb reads or writes (the
// real server's maxMessageSizeBytes).
const MaxMessageSize = 48_000_000

// maxBSONSize is the largest document the server accepts (maxBsonObjectSize).
const maxBSONSize = 16 * 1024 * 1024

// ErrBadMessage is returned by ReadMessage and DecodeMessage when the bytes
// on a connection are not a well-formed MongoDB wire message this server
// understands; the connection is closed.
var ErrBadMessage = errors.New("bad wire message")

// message is one decoded request.
type message struct {
	requestID int32
	opcode    wiremessage.OpCode
	// moreToCome is set when the client expects no reply (OP_MSG flag bit 1).
	moreToCome bool
	// command is the command document with document sequences (OP_MSG
	// section kind 1) folded in as arrays.
	command bson.Raw
	// db is the database an OP_QUERY named in its full collection name
	// (OP_MSG carries $db in the command).
	db string
}

// readMessage reads one wire message from r. It returns io.EOF when the
// peer closed the connection between messages.
func readMessage(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: connection closed inside a message header", ErrBadMessage)
		}
		return nil, err
	}
	size := int32(binary.LittleEndian.Uint32(hdr[:4]))
	if size < 16 || size > MaxMessageSize {
		return nil, fmt.Errorf("%w: message length %d is outside 16..%d", ErrBadMessage, size, MaxMessageSize)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[16:]); err != nil {
		return nil, fmt.Errorf("%w: connection closed inside a %d-byte message: %v", ErrBadMessage, size, err)
	}
	return buf, nil
}

// decodeMessage parses a whole wire message (header included). Only OP_MSG
// and OP_QUERY are accepted: modern drivers send everything as OP_MSG after
// a legacy OP_QUERY hello, and devdb advertises no compression.
func decodeMessage(wm []byte) (*message, error) {
	length, reqID, _, opcode, rem, ok := wiremessage.ReadHeader(wm)
	if !ok || int(length) != len(wm) {
		return nil, fmt.Errorf("%w: header length does not match the message", ErrBadMessage)
	}
	m := &message{requestID: reqID, opcode: opcode}
	switch opcode {
	case wiremessage.OpMsg:
		return m, decodeMsg(m, rem)
	case wiremessage.OpQuery:
		return m, decodeQuery(m, rem)
	default:
		return nil, fmt.Errorf("%w: opcode %d is not served (only OP_MSG and OP_QUERY)", ErrBadMessage, opcode)
	}
}

func decodeMsg(m *message, rem []byte) error {
	flags, rem, ok := wiremessage.ReadMsgFlags(rem)
	if !ok {
		return fmt.Errorf("%w: OP_MSG without flags", ErrBadMessage)
	}
	// Bits 0-15 are required: a receiver must reject unknown ones.
	if flags&0xfffc != 0 {
		return fmt.Errorf("%w: OP_MSG has unknown required flag bits %#x", ErrBadMessage, uint32(flags))
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		if len(rem) < 4 {
			return fmt.Errorf("%w: OP_MSG checksum missing", ErrBadMessage)
		}
		rem = rem[:len(rem)-4]
	}
	m.moreToCome = flags&wiremessage.MoreToCome != 0
	var body bsoncore.Document
	type seq struct {
		id   string
		docs []bsoncore.Document
	}
	var seqs []seq
	for len(rem) > 0 {
		var stype wiremessage.SectionType
		stype, rem, ok = wiremessage.ReadMsgSectionType(rem)
		if !ok {
			return fmt.Errorf("%w: OP_MSG section type missing", ErrBadMessage)
		}
		switch stype {
		case wiremessage.SingleDocument:
			if body != nil {
				return fmt.Errorf("%w: OP_MSG has two body sections", ErrBadMessage)
			}
			body, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok {
				return fmt.Errorf("%w: OP_MSG body section is truncated", ErrBadMessage)
			}
		case wiremessage.DocumentSequence:
			// The driver's reader trusts the length's sign (a length of
			// -2^31 wraps and panics): check it first.
			if len(rem) < 4 {
				return fmt.Errorf("%w: OP_MSG document sequence is truncated", ErrBadMessage)
			}
			if size := int32(binary.LittleEndian.Uint32(rem)); size < 5 || int(size) > len(rem) {
				return fmt.Errorf("%w: OP_MSG document sequence length %d is outside 5..%d", ErrBadMessage, size, len(rem))
			}
			var s seq
			s.id, s.docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem)
			if !ok {
				return fmt.Errorf("%w: OP_MSG document sequence is truncated", ErrBadMessage)
			}
			seqs = append(seqs, s)
		default:
			return fmt.Errorf("%w: OP_MSG section kind %d is unknown", ErrBadMessage, stype)
		}
	}
	if body == nil {
		return fmt.Errorf("%w: OP_MSG without a body section", ErrBadMessage)
	}
	if err := validateDoc(body); err != nil {
		return fmt.Errorf("%w: OP_MSG body: %v", ErrBadMessage, err)
	}
	if len(seqs) == 0 {
		m.command = bson.Raw(body)
		return nil
	}
	// Fold the sequences into the body as arrays, the way the command would
	// look had the client sent it as one document.
	idx, doc := bsoncore.AppendDocumentStart(nil)
	elems, _ := body.Elements()
	for _, e := range elems {
		doc = append(doc, e...)
	}
	for _, s := range seqs {
		if _, err := body.LookupErr(s.id); err == nil {
			return fmt.Errorf("%w: OP_MSG field %q is both in the body and a document sequence", ErrBadMessage, s.id)
		}
		var aidx int32
		aidx, doc = bsoncore.AppendArrayElementStart(doc, s.id)
		for i, d := range s.docs {
			if err := validateDoc(d); err != nil {
				return fmt.Errorf("%w: OP_MSG sequence %q document %d: %v", ErrBadMessage, s.id, i, err)
			}
			doc = bsoncore.AppendDocumentElement(doc, fmt.Sprint(i), d)
		}
		doc, _ = bsoncore.AppendArrayEnd(doc, aidx)
	}
	doc, _ = bsoncore.AppendDocumentEnd(doc, idx)
	m.command = bson.Raw(doc)
	return nil
}

func decodeQuery(m *message, rem []byte) error {
	_, rem, ok := wiremessage.ReadQueryFlags(rem)
	if !ok {
		return fmt.Errorf("%w: OP_QUERY without flags", ErrBadMessage)
	}
	var ns string
	if ns, rem, ok = wiremessage.ReadQueryFullCollectionName(rem); !ok {
		return fmt.Errorf("%w: OP_QUERY collection name is not terminated", ErrBadMessage)
	}
	if _, rem, ok = wiremessage.ReadQueryNumberToSkip(rem); !ok {
		return fmt.Errorf("%w: OP_QUERY numberToSkip missing", ErrBadMessage)
	}
	if _, rem, ok = wiremessage.ReadQueryNumberToReturn(rem); !ok {
		return fmt.Errorf("%w: OP_QUERY numberToReturn missing", ErrBadMessage)
	}
	var q bsoncore.Document
	if q, _, ok = wiremessage.ReadQueryQuery(rem); !ok {
		return fmt.Errorf("%w: OP_QUERY query document is truncated", ErrBadMessage)
	}
	if err := validateDoc(q); err != nil {
		return fmt.Errorf("%w: OP_QUERY query: %v", ErrBadMessage, err)
	}
	db, coll, _ := cutNS(ns)
	if coll != "$cmd" {
		return fmt.Errorf("%w: OP_QUERY on %q: only commands ($cmd) are served over OP_QUERY", ErrBadMessage, ns)
	}
	m.db = db
	// Legacy drivers wrap the command as {$query: {...}, $readPreference: …}.
	if inner, ok := bson.Raw(q).Lookup("$query").DocumentOK(); ok {
		q = bsoncore.Document(inner)
	}
	m.command = bson.Raw(q)
	return nil
}

func cutNS(ns string) (db, coll string, ok bool) {
	for i := 0; i < len(ns); i++ {
		if ns[i] == '.' {
			return ns[:i], ns[i+1:], true
		}
	}
	return ns, "", false
}

func validateDoc(d bsoncore.Document) error {
	if len(d) > maxBSONSize+16*1024 {
		return fmt.Errorf("document of %d bytes is larger than the 16 MiB limit", len(d))
	}
	return d.Validate()
}

// appendMsgReply appends an OP_MSG reply carrying doc.
func appendMsgReply(dst []byte, responseTo int32, doc []byte) []byte {
	idx, dst := wiremessage.AppendHeaderStart(dst, wiremessage.NextRequestID(), responseTo, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, doc...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

// appendQueryReply appends the OP_REPLY answering an OP_QUERY command.
func appendQueryReply(dst []byte, responseTo int32, doc []byte) []byte {
	idx, dst := wiremessage.AppendHeaderStart(dst, wiremessage.NextRequestID(), responseTo, wiremessage.OpReply)
	dst = wiremessage.AppendReplyFlags(dst, wiremessage.AwaitCapable)
	dst = wiremessage.AppendReplyCursorID(dst, 0)
	dst = wiremessage.AppendReplyStartingFrom(dst, 0)
	dst = wiremessage.AppendReplyNumberReturned(dst, 1)
	dst = append(dst, doc...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}
