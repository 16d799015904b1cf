package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/godwit-dev/godwit/change"
)

// Severities, lowest first.
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// Severities lists the valid severities, lowest first.
var Severities = []string{SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}

// SeverityRank orders severities: 1 (low) to 4 (critical), 0 for an unknown
// value.
func SeverityRank(s string) int {
	for i, v := range Severities {
		if v == s {
			return i + 1
		}
	}
	return 0
}

// Classes of records derived from change events. The DDL classes are named
// after the operationType they come from, so that a record can be matched
// against MongoDB's own vocabulary.
const (
	ClassDropDatabase = change.OpDropDatabase // "dropDatabase"
	ClassDrop         = change.OpDrop         // "drop": a collection was dropped
	ClassRename       = change.OpRename       // "rename"
	ClassDropIndexes  = change.OpDropIndexes  // "dropIndexes"
	ClassModify       = change.OpModify       // "modify": collMod
	ClassMassDelete   = "mass_delete"
	// ClassRule is a record written only because user rules matched.
	ClassRule = "rule"
	// ClassUnreadable is an event the sink could not parse: it is recorded
	// rather than skipped, so nothing is dropped without a trace.
	ClassUnreadable = "unreadable_event"
	// ClassStateReset says the sink lost its mass-delete state (state file
	// missing or unreadable while the log was not empty); open bursts were
	// forgotten.
	ClassStateReset = "audit_state_reset"
)

// Classes of godwit's own events, recorded with Sink.RecordSystem.
const (
	ClassCaptureHalted       = "capture_halted"
	ClassCaptureSkipped      = "capture_skipped"
	ClassResync              = "resync"
	ClassDaemonStart         = "daemon_start"
	ClassDaemonStop          = "daemon_stop"
	ClassReplicationConflict = "replication_conflict"
	ClassTriggerChanged      = "trigger_changed"
	ClassFunctionChanged     = "function_changed"
)

// BuiltinClasses are the event classes on by default; Config.Disable turns
// them off.
var BuiltinClasses = []string{ClassDropDatabase, ClassDrop, ClassRename, ClassDropIndexes, ClassModify, ClassMassDelete}

// defaultSeverity is the severity of a class unless Config.Severity says
// otherwise. Unknown system classes get medium.
var defaultSeverity = map[string]string{
	ClassDropDatabase:        SeverityCritical,
	ClassDrop:                SeverityHigh,
	ClassRename:              SeverityHigh,
	ClassDropIndexes:         SeverityMedium,
	ClassModify:              SeverityMedium,
	ClassMassDelete:          SeverityHigh,
	ClassUnreadable:          SeverityMedium,
	ClassStateReset:          SeverityMedium,
	ClassCaptureHalted:       SeverityHigh,
	ClassCaptureSkipped:      SeverityCritical,
	ClassResync:              SeverityHigh,
	ClassDaemonStart:         SeverityLow,
	ClassDaemonStop:          SeverityLow,
	ClassReplicationConflict: SeverityMedium,
	ClassTriggerChanged:      SeverityMedium,
	ClassFunctionChanged:     SeverityMedium,
}

// Genesis is the prev hash of the first record of every log.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Record is one line of the audit log. Field names are stable; docs/audit.md
// describes each. New fields may be added; readers must ignore unknown ones.
type Record struct {
	// Index numbers records 1, 2, 3, ... with no gaps.
	Index uint64 `json:"index"`
	// Prev is the Hash of the record before (Genesis for index 1).
	Prev string `json:"prev"`
	// Class is what happened: one of the Class constants, or a system class
	// given to RecordSystem.
	Class    string `json:"class"`
	Severity string `json:"severity"`
	// Time is when it happened: the event's wallTime, else its clusterTime,
	// else when godwit captured it; for a burst, its first delete; for a
	// system record, when it was recorded.
	Time time.Time `json:"time"`
	// RecordedAt is godwit's clock when the record was written.
	RecordedAt time.Time `json:"recorded_at"`
	// Rules names the user rules that matched, in config order.
	Rules []string `json:"rules,omitempty"`
	// Source is the godwit source the event was captured from.
	Source string `json:"source,omitempty"`
	// Seq is the outbox sequence of the event (for a burst: of its last
	// delete). Zero for system records.
	Seq         uint64            `json:"seq,omitempty"`
	Op          string            `json:"op,omitempty"`
	NS          *change.Namespace `json:"ns,omitempty"`
	To          *change.Namespace `json:"to,omitempty"`
	ClusterTime *ClusterTime      `json:"cluster_time,omitempty"`
	WallTime    *time.Time        `json:"wall_time,omitempty"`
	// DocumentKey is the event's documentKey in relaxed Extended JSON.
	DocumentKey json.RawMessage `json:"document_key,omitempty"`
	// Description is the event's operationDescription (DDL events of
	// servers with showExpandedEvents) in relaxed Extended JSON.
	Description json.RawMessage `json:"description,omitempty"`
	// StateBefore is a modify event's stateBeforeChange.
	StateBefore json.RawMessage `json:"state_before,omitempty"`
	Burst       *Burst          `json:"burst,omitempty"`
	// User is the acting user, for system records that know it (trigger and
	// function changes). Change events never carry it.
	User    string         `json:"user,omitempty"`
	Message string         `json:"message,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	// Seal is the forward-secure seal: HMAC-SHA256 (hex) of this line
	// without its seal and hash members, under the sealing key of its
	// position (see docs/audit.md). Records written before sealing started
	// have none. It must stay just before Hash.
	Seal string `json:"seal,omitempty"`
	// Hash is the SHA-256 (hex) of this line with the hash member removed;
	// see docs/audit.md. It must stay the last field.
	Hash string `json:"hash,omitempty"`

	line []byte // the line it was decoded from, without the newline
}

// ClusterTime is a BSON timestamp: seconds and an increment.
type ClusterTime struct {
	T uint32 `json:"t"`
	I uint32 `json:"i"`
}

// Burst describes a mass delete.
type Burst struct {
	// Count is the number of deletes in the burst.
	Count     uint64       `json:"count"`
	FirstTime time.Time    `json:"first_time"`
	LastTime  time.Time    `json:"last_time"`
	FirstSeq  uint64       `json:"first_seq"`
	LastSeq   uint64       `json:"last_seq"`
	FirstCT   *ClusterTime `json:"first_cluster_time,omitempty"`
	LastCT    *ClusterTime `json:"last_cluster_time,omitempty"`
	// SampleKeys are the document keys of the first deletes of the burst
	// (relaxed Extended JSON), up to mass_delete.sample of them.
	SampleKeys []json.RawMessage `json:"sample_keys"`
	// Threshold and WindowSeconds are the settings the burst was detected
	// with: more than Threshold deletes within WindowSeconds.
	Threshold     int     `json:"threshold"`
	WindowSeconds float64 `json:"window_seconds"`
	// Ended is EndedWindow or EndedClose.
	Ended string `json:"ended"`
}

// How a burst ended.
const (
	// EndedWindow: events later than the window showed the delete rate fell
	// back to the threshold or below.
	EndedWindow = "window"
	// EndedClose: the sink was closed while the burst was open; deletes that
	// continue after a restart count towards a new burst.
	EndedClose = "close"
)

// Line returns the record as it appears in the log, without the newline.
// For a record that was not decoded from a log it returns its JSON encoding.
func (r Record) Line() []byte {
	if r.line != nil {
		return r.line
	}
	b, _ := json.Marshal(r)
	return b
}

// hashSuffixLen is the length of `,"hash":"<64 hex>"}`.
const hashSuffixLen = len(`,"hash":"`) + 64 + len(`"}`)

// encodeRecord sets r.Seal (when k is not nil) and r.Hash and returns the
// line (with newline) for r. r.Index and r.Prev must be set.
func encodeRecord(r *Record, k *sealKey) ([]byte, error) {
	r.Hash, r.Seal = "", ""
	r.line = nil
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode audit record %d (%s): %w", r.Index, r.Class, err)
	}
	if k != nil {
		r.Seal = k.seal(body)
		sealed := make([]byte, 0, len(body)+sealSuffixLen+hashSuffixLen+1)
		sealed = append(sealed, body[:len(body)-1]...)
		sealed = append(sealed, `,"seal":"`...)
		sealed = append(sealed, r.Seal...)
		body = append(sealed, `"}`...)
	}
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	line := make([]byte, 0, len(body)+hashSuffixLen+1)
	line = append(line, body[:len(body)-1]...)
	line = append(line, `,"hash":"`...)
	line = append(line, r.Hash...)
	line = append(line, "\"}\n"...)
	r.line = line[:len(line)-1]
	return line, nil
}

// splitHash returns the hash stored at the end of line (no newline); ok is
// false when line does not end with a well-formed hash member.
func splitHash(line []byte) (stored string, ok bool) {
	if len(line) < hashSuffixLen+1 || line[0] != '{' {
		return "", false
	}
	suffix := line[len(line)-hashSuffixLen:]
	if !bytes.HasPrefix(suffix, []byte(`,"hash":"`)) || !bytes.HasSuffix(suffix, []byte(`"}`)) {
		return "", false
	}
	stored = string(suffix[len(`,"hash":"`) : len(`,"hash":"`)+64])
	return stored, isHex64(stored)
}

// contentHash is the hash line should carry: SHA-256 of the line without
// its hash member (that is, with `,"hash":"…"}` replaced by `}`). line must
// have passed splitHash.
func contentHash(line []byte) string {
	h := sha256.New()
	h.Write(line[:len(line)-hashSuffixLen])
	h.Write([]byte{'}'})
	return hex.EncodeToString(h.Sum(nil))
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// DecodeLine decodes one line of an audit log (a trailing newline is
// allowed). It checks the record's shape, not its hash or seal: Verify does
// that. The line must be valid UTF-8 and one JSON object with no member
// given twice (at any depth), ending in the hash member, preceded by the
// seal member if the record is sealed.
func DecodeLine(line []byte) (Record, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		return Record{}, fmt.Errorf("%w: a newline inside the line at byte %d: one record per line", ErrMalformedRecord, i)
	}
	if !utf8.Valid(line) {
		return Record{}, fmt.Errorf("%w: not valid UTF-8 at byte %d", ErrMalformedRecord, invalidUTF8At(line))
	}
	stored, ok := splitHash(line)
	if !ok {
		return Record{}, fmt.Errorf(`%w: does not end with a "hash" member of 64 hex digits`, ErrMalformedRecord)
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformedRecord, err)
	}
	hasSeal, err := uniqueKeys(line)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformedRecord, err)
	}
	if hasSeal {
		unhashed := append(append([]byte(nil), line[:len(line)-hashSuffixLen]...), '}')
		if _, s, ok := splitSeal(unhashed); !ok || s != r.Seal {
			return Record{}, fmt.Errorf(`%w: a "seal" member must be 64 hex digits, just before "hash"`, ErrMalformedRecord)
		}
	}
	switch {
	case r.Index == 0:
		return Record{}, fmt.Errorf("%w: index missing or 0", ErrMalformedRecord)
	case !isHex64(r.Prev):
		return Record{}, fmt.Errorf("%w: prev is not 64 lowercase hex digits", ErrMalformedRecord)
	case r.Hash != stored:
		return Record{}, fmt.Errorf("%w: hash member is not the stored hash", ErrMalformedRecord)
	case r.Class == "":
		return Record{}, fmt.Errorf("%w: class missing", ErrMalformedRecord)
	}
	r.line = append([]byte(nil), line...)
	return r, nil
}

// uniqueKeys rejects a member given twice in one object, at any depth:
// readers disagree on which one counts (Go takes the last, others the
// first), so a record must not be able to say two things. In the objects
// Go decodes into structs (the record, burst, ns, to and the cluster
// times) it also rejects names other than lowercase snake_case: Go matches
// member names without regard to case (and folds 'ſ' to 's'), so "seAl"
// would be the seal to Go and an unknown member to other readers. It
// reports whether the record has a top-level "seal" member. line must be
// valid JSON (json.Unmarshal checked it); this only walks it, which is much
// cheaper than decoding.
func uniqueKeys(line []byte) (hasSeal bool, err error) {
	type scope struct {
		obj     bool
		strict  bool // decoded into a struct
		lastKey string
		seen    map[string]struct{}
	}
	stack := make([]scope, 0, 4)
	key := false // the next string is a member name
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '{':
			strict := len(stack) == 0
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].strict {
				_, strict = structMembers[stack[n-1].lastKey]
			}
			stack = append(stack, scope{obj: true, strict: strict})
			key = true
		case '[':
			stack = append(stack, scope{})
			key = false
		case '}', ']':
			stack = stack[:len(stack)-1]
			key = false
		case ',':
			key = len(stack) > 0 && stack[len(stack)-1].obj
		case '"':
			j := i + 1
			escaped := false
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					escaped = true
					j++
				}
			}
			if key {
				name := string(line[i+1 : j])
				if escaped {
					if err := json.Unmarshal(line[i:j+1], &name); err != nil {
						return false, err
					}
				}
				top := &stack[len(stack)-1]
				if top.strict && !snakeCase(name) {
					return false, fmt.Errorf("member name %q: record members are lowercase snake_case", name)
				}
				if top.seen == nil {
					top.seen = make(map[string]struct{}, 24)
				}
				if _, dup := top.seen[name]; dup {
					return false, fmt.Errorf("member %q given twice in one object", name)
				}
				top.seen[name] = struct{}{}
				top.lastKey = name
				hasSeal = hasSeal || len(stack) == 1 && name == "seal"
				key = false
			}
			i = j
		}
	}
	return hasSeal, nil
}

// structMembers are the members whose object values Go decodes into
// structs (Burst, change.Namespace, ClusterTime).
var structMembers = map[string]struct{}{
	"burst": {}, "ns": {}, "to": {}, "cluster_time": {}, "first_cluster_time": {}, "last_cluster_time": {},
}

func snakeCase(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return s != ""
}

// invalidUTF8At returns the offset of the first invalid UTF-8 byte of b.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// Head identifies the end of a log: the last record's index and hash. The
// head of an empty log is {0, Genesis}.
type Head struct {
	Index uint64 `json:"index"`
	Hash  string `json:"hash"`
}

// String returns INDEX:HASH, the form ParseHead reads and --head takes.
func (h Head) String() string { return strconv.FormatUint(h.Index, 10) + ":" + h.Hash }

// ParseHead parses INDEX:HASH.
func ParseHead(s string) (Head, error) {
	i, hash, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Head{}, fmt.Errorf("%w %q: want INDEX:HASH, as printed by 'godwit audit head'", ErrBadHead, s)
	}
	n, err := strconv.ParseUint(i, 10, 64)
	if err != nil {
		return Head{}, fmt.Errorf("%w %q: index: %v", ErrBadHead, s, err)
	}
	hash = strings.ToLower(hash)
	if !isHex64(hash) {
		return Head{}, fmt.Errorf("%w %q: hash must be 64 hex digits", ErrBadHead, s)
	}
	if n == 0 && hash != Genesis {
		return Head{}, fmt.Errorf("%w %q: index 0 is the empty log, whose hash is %s", ErrBadHead, s, Genesis)
	}
	return Head{Index: n, Hash: hash}, nil
}
