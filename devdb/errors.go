package devdb

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// Error codes and names as a real server sends them (error_codes.yml of
// the server); drivers and godwit branch on them.
const (
	codeBadValue                = 2
	codeFailedToParse           = 9
	codeUnauthorized            = 13
	codeTypeMismatch            = 14
	codeIllegalOperation        = 20
	codeNamespaceNotFound       = 26
	codeIndexNotFound           = 27
	codeCursorNotFound          = 43
	codeCannotCreateIndex       = 67
	codeIndexOptionsConflict    = 85
	codeNamespaceExists         = 48
	codeMaxTimeMSExpired        = 50
	codeCommandNotFound         = 59
	codeInvalidNamespace        = 73
	codeOperationFailed         = 96
	codeWriteConflict           = 112
	codeCommandNotSupported     = 115
	codeNoSuchTransaction       = 251
	codeTransactionTooOld       = 225
	codeSnapshotTooOld          = 239
	codeNotInTransaction        = 263
	codeInvalidResumeToken      = 260
	codeChangeStreamFatal       = 280
	codeChangeStreamHistoryLost = 286
	codeDuplicateKey            = 11000
	codeUnrecognizedStage       = 40324
	codeInternalError           = 1
)

var codeNames = map[int32]string{
	codeInternalError:           "InternalError",
	codeBadValue:                "BadValue",
	codeFailedToParse:           "FailedToParse",
	codeUnauthorized:            "Unauthorized",
	codeTypeMismatch:            "TypeMismatch",
	codeIllegalOperation:        "IllegalOperation",
	codeNamespaceNotFound:       "NamespaceNotFound",
	codeIndexNotFound:           "IndexNotFound",
	codeCursorNotFound:          "CursorNotFound",
	codeCannotCreateIndex:       "CannotCreateIndex",
	codeIndexOptionsConflict:    "IndexOptionsConflict",
	codeNamespaceExists:         "NamespaceExists",
	codeMaxTimeMSExpired:        "MaxTimeMSExpired",
	codeCommandNotFound:         "CommandNotFound",
	codeInvalidNamespace:        "InvalidNamespace",
	codeOperationFailed:         "OperationFailed",
	codeWriteConflict:           "WriteConflict",
	codeCommandNotSupported:     "CommandNotSupported",
	codeNoSuchTransaction:       "NoSuchTransaction",
	codeTransactionTooOld:       "TransactionTooOld",
	codeSnapshotTooOld:          "SnapshotTooOld",
	codeNotInTransaction:        "OperationNotSupportedInTransaction",
	codeInvalidResumeToken:      "InvalidResumeToken",
	codeChangeStreamFatal:       "ChangeStreamFatalError",
	codeChangeStreamHistoryLost: "ChangeStreamHistoryLost",
	codeDuplicateKey:            "DuplicateKey",
	codeUnrecognizedStage:       "Location40324",
}

const labelTransient = "TransientTransactionError"

// cmdError is a command failure, sent as {ok: 0, errmsg, code, codeName,
// errorLabels}.
type cmdError struct {
	code   int32
	msg    string
	labels []string
	extra  bson.D
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("%s (%d): %s", codeNames[e.code], e.code, e.msg)
}

func errorf(code int32, format string, args ...any) *cmdError {
	return &cmdError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (e *cmdError) reply() bson.D {
	d := bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: e.msg}, {Key: "code", Value: e.code}, {Key: "codeName", Value: codeNames[e.code]}}
	if len(e.labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: e.labels})
	}
	return append(d, e.extra...)
}

// writeError is one entry of a write command's writeErrors.
func (e *cmdError) writeError(index int) bson.D {
	d := bson.D{{Key: "index", Value: int32(index)}, {Key: "code", Value: e.code}, {Key: "codeName", Value: codeNames[e.code]}, {Key: "errmsg", Value: e.msg}}
	return append(d, e.extra...)
}

var dupIndexRE = regexp.MustCompile(`duplicate document for index "([^"]*)"`)

// sameKeyRE matches the engine's error for a new index whose key an existing
// index (named in the match) already has.
var sameKeyRE = regexp.MustCompile(`existing index "([^"]*)" has same key`)

// engineError maps an error from the embedded engine to the code a real
// server would send. doc is the document being written (for a duplicate
// key's keyValue), ns the namespace it was written to.
func (s *Server) engineError(err error, h lungo.Handle, doc bson.D) *cmdError {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce
	}
	var me mongo.CommandError
	if errors.As(err, &me) {
		// The engine's catalog operations fail with a server's codes.
		return errorf(me.Code, "%s", me.Message)
	}
	msg := err.Error()
	switch {
	case errors.Is(err, lungo.ErrLostOplogPosition):
		return errorf(codeChangeStreamHistoryLost, "the resume point is no longer in the oplog: %v", err)
	case lungo.IsUniquenessError(err):
		name := "_id_"
		if m := dupIndexRE.FindStringSubmatch(msg); m != nil {
			name = m[1]
		}
		key := bson.D{{Key: "_id", Value: int32(1)}}
		if ns := s.engine.Catalog().Namespaces[h]; ns != nil {
			if idx := ns.Indexes[name]; idx != nil {
				key = *idx.Config().Key
			}
		}
		var value bson.D
		for _, k := range key {
			v, _ := lookupPath(doc, k.Key)
			value = append(value, bson.E{Key: k.Key, Value: v})
		}
		ce := errorf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: %s dup key: %s", h.String(), name, fmtKey(value))
		ce.extra = bson.D{{Key: "keyPattern", Value: key}, {Key: "keyValue", Value: value}}
		return ce
	case sameKeyRE.MatchString(msg):
		return errorf(codeIndexOptionsConflict, "Index already exists with a different name: %s", sameKeyRE.FindStringSubmatch(msg)[1])
	case strings.Contains(msg, "token acquisition timeout"):
		return errorf(codeWriteConflict, "write conflict: another transaction held the write lock too long")
	}
	return errorf(codeBadValue, "%s", msg)
}

func fmtKey(d bson.D) string {
	var parts []string
	for _, e := range d {
		raw, err := bson.Marshal(bson.D{{Key: "v", Value: e.Value}})
		v := fmt.Sprint(e.Value)
		if err == nil {
			v = bson.Raw(raw).Lookup("v").String()
		}
		parts = append(parts, e.Key+": "+v)
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

// lookupPath returns the value at a dotted path in d.
func lookupPath(d bson.D, path string) (any, bool) {
	head, rest, more := strings.Cut(path, ".")
	for _, e := range d {
		if e.Key != head {
			continue
		}
		if !more {
			return e.Value, true
		}
		if sub, ok := e.Value.(bson.D); ok {
			return lookupPath(sub, rest)
		}
		return nil, false
	}
	return nil, false
}
