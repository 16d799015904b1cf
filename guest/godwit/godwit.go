//go:build wasip1

package godwit

import (
	"errors"
	"fmt"
	"unsafe"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// ABIVersion is the ABI version this SDK implements.
const ABIVersion = 1

// Errors the host reports for writes.
var (
	// ErrDenied is returned when the trigger's writes config does not allow
	// the namespace.
	ErrDenied = errors.New("write to namespace not allowed by the trigger")
	// ErrInvalid is returned for a malformed namespace or document.
	ErrInvalid = errors.New("invalid write")
	// ErrFailed is returned when the database rejected the write.
	ErrFailed = errors.New("write failed")
	// ErrDuplicateKey is returned when an insert hit an existing _id.
	ErrDuplicateKey = errors.New("duplicate key")
)

// Event is what fired the function: a change event, a scheduled run or an
// authentication event (docs/abi.md lists the fields of each).
type Event struct {
	// Raw is the BSON document. It is only valid during the call.
	Raw bsoncore.Document
}

// Lookup returns the value at a dotted path given as separate keys
// (Lookup("fullDocument", "status")); the zero Value when absent.
func (e Event) Lookup(path ...string) bsoncore.Value {
	v, err := e.Raw.LookupErr(path...)
	if err != nil {
		return bsoncore.Value{}
	}
	return v
}

// String returns the string at path, or "".
func (e Event) String(path ...string) string {
	s, _ := e.Lookup(path...).StringValueOK()
	return s
}

// OperationType is insert, update, replace, delete (database triggers),
// scheduled, or login, create, delete (authentication triggers).
func (e Event) OperationType() string { return e.String("operationType") }

// Namespace returns the database and collection of a change event.
func (e Event) Namespace() (db, coll string) {
	return e.String("ns", "db"), e.String("ns", "coll")
}

// Document returns the document at path, or nil.
func (e Event) Document(path ...string) bsoncore.Document {
	d, _ := e.Lookup(path...).DocumentOK()
	return d
}

// FullDocument returns the changed document (inserts, replaces, and
// updates of triggers with full_document), or nil.
func (e Event) FullDocument() bsoncore.Document { return e.Document("fullDocument") }

// ID returns the event's _id: the change stream resume token, unique per
// event and stable across retries.
func (e Event) ID() bsoncore.Value { return e.Lookup("_id") }

// Handler handles one event. A non-nil error fails the attempt; the
// trigger retries and finally parks the event in its dead letters.
type Handler func(Event) error

var handler Handler

// Handle registers the function's handler. Call it from init.
func Handle(h Handler) { handler = h }

// Log levels.
const (
	LevelDebug int32 = 0
	LevelInfo  int32 = 1
	LevelWarn  int32 = 2
	LevelError int32 = 3
)

// Log logs msg at info level.
func Log(msg string) { LogLevel(LevelInfo, msg) }

// Logf logs a formatted line at info level.
func Logf(format string, args ...any) { LogLevel(LevelInfo, fmt.Sprintf(format, args...)) }

// LogLevel logs msg at level.
func LogLevel(level int32, msg string) {
	hostLog(level, unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}

// SetResult sets the call's result document, which ExecuteFunction
// returns (triggers ignore it).
func SetResult(doc bsoncore.Document) {
	hostSetResult(ptr(doc), int32(len(doc)))
}

// Insert inserts doc into namespace ns ("db.collection").
func Insert(ns string, doc bsoncore.Document) error {
	return codeErr(hostInsert(sptr(ns), int32(len(ns)), ptr(doc), int32(len(doc))))
}

// Update updates the first document matching filter; with upsert, inserts
// one when none matches.
func Update(ns string, filter, update bsoncore.Document, upsert bool) error {
	return update1(ns, filter, update, flag(upsert, flagUpsert))
}

// UpdateMany updates every document matching filter.
func UpdateMany(ns string, filter, update bsoncore.Document) error {
	return update1(ns, filter, update, flagMany)
}

// Delete deletes the first document matching filter.
func Delete(ns string, filter bsoncore.Document) error {
	return codeErr(hostDelete(sptr(ns), int32(len(ns)), ptr(filter), int32(len(filter)), 0))
}

// DeleteMany deletes every document matching filter.
func DeleteMany(ns string, filter bsoncore.Document) error {
	return codeErr(hostDelete(sptr(ns), int32(len(ns)), ptr(filter), int32(len(filter)), flagMany))
}

const (
	flagUpsert = 1
	flagMany   = 2
)

func flag(b bool, f int32) int32 {
	if b {
		return f
	}
	return 0
}

func update1(ns string, filter, update bsoncore.Document, flags int32) error {
	return codeErr(hostUpdate(sptr(ns), int32(len(ns)), ptr(filter), int32(len(filter)), ptr(update), int32(len(update)), flags))
}

func codeErr(code int32) error {
	switch code {
	case 0:
		return nil
	case 1:
		return ErrDenied
	case 2:
		return ErrInvalid
	case 4:
		return ErrDuplicateKey
	}
	return ErrFailed
}

func ptr(b []byte) unsafe.Pointer  { return unsafe.Pointer(unsafe.SliceData(b)) }
func sptr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

// buf is the event buffer handed to the host. It is kept in a global so the
// garbage collector never frees it while the host holds its address.
var buf = make([]byte, 4096)

//go:wasmexport godwit_abi_version
func abiVersion() int32 { return ABIVersion }

//go:wasmexport godwit_alloc
func alloc(size int32) unsafe.Pointer {
	if int(size) > cap(buf) {
		buf = make([]byte, size)
	}
	return unsafe.Pointer(unsafe.SliceData(buf))
}

//go:wasmexport godwit_handle
func handle(p unsafe.Pointer, n int32) int32 {
	if handler == nil {
		setError("no handler: call godwit.Handle in init")
		return 1
	}
	ev := Event{Raw: bsoncore.Document(unsafe.Slice((*byte)(p), n))}
	if err := handler(ev); err != nil {
		setError(err.Error())
		return 1
	}
	return 0
}

func setError(msg string) { hostSetError(sptr(msg), int32(len(msg))) }

//go:wasmimport godwit log
func hostLog(level int32, msg unsafe.Pointer, n int32)

//go:wasmimport godwit set_error
func hostSetError(msg unsafe.Pointer, n int32)

//go:wasmimport godwit set_result
func hostSetResult(doc unsafe.Pointer, n int32)

//go:wasmimport godwit insert
func hostInsert(ns unsafe.Pointer, nsLen int32, doc unsafe.Pointer, docLen int32) int32

//go:wasmimport godwit update
func hostUpdate(ns unsafe.Pointer, nsLen int32, filter unsafe.Pointer, filterLen int32, update unsafe.Pointer, updateLen int32, flags int32) int32

//go:wasmimport godwit delete
func hostDelete(ns unsafe.Pointer, nsLen int32, filter unsafe.Pointer, filterLen int32, flags int32) int32
