package outbox

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Record is one captured change event as stored in the outbox.
type Record struct {
	// Seq is the outbox sequence, unique and increasing across all sources.
	Seq uint64
	// Source is the id of the source the event was captured from.
	Source string
	// CapturedAt is when capture appended the event.
	CapturedAt time.Time
	// Raw is the change event exactly as the server sent it (BSON).
	Raw []byte
}

const recordVersion = 1

// maxSourceID bounds the source id length in the record header; config
// validation keeps ids far shorter.
const maxSourceID = 255

// encodeRecord appends the stored form of a record (without its sequence,
// which is the key) to dst.
//
// Layout: version byte, source id length byte, source id, capture time as
// big-endian unix nanoseconds (8 bytes), raw event BSON.
func encodeRecord(dst []byte, source string, capturedAt time.Time, raw []byte) []byte {
	dst = append(dst, recordVersion, byte(len(source)))
	dst = append(dst, source...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(capturedAt.UnixNano()))
	return append(dst, raw...)
}

// DecodeRecord decodes a stored record value. The returned record does not
// alias value. It is exported for tools and fuzzing; sinks get decoded
// records from Read.
func DecodeRecord(seq uint64, value []byte) (Record, error) {
	if len(value) < 2 {
		return Record{}, fmt.Errorf("%w %d: %d bytes is too short", ErrCorruptRecord, seq, len(value))
	}
	if value[0] != recordVersion {
		return Record{}, fmt.Errorf("%w %d: unknown record version %d", ErrCorruptRecord, seq, value[0])
	}
	n := int(value[1])
	rest := value[2:]
	if len(rest) < n+8 {
		return Record{}, fmt.Errorf("%w %d: truncated header", ErrCorruptRecord, seq)
	}
	source := string(rest[:n])
	nanos := int64(binary.BigEndian.Uint64(rest[n : n+8]))
	raw := rest[n+8:]
	if !oneDocument(raw) {
		return Record{}, fmt.Errorf("%w %d: event is not one BSON document", ErrCorruptRecord, seq)
	}
	return Record{
		Seq:        seq,
		Source:     source,
		CapturedAt: time.Unix(0, nanos).UTC(),
		Raw:        append([]byte(nil), raw...),
	}, nil
}

// oneDocument reports whether raw is framed as exactly one BSON document:
// its length prefix covers all of it and it ends with the terminating zero.
func oneDocument(raw []byte) bool {
	return len(raw) >= 5 && int(int32(binary.LittleEndian.Uint32(raw))) == len(raw) && raw[len(raw)-1] == 0
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func keySeq(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}
