package capture

import (
	"errors"
	"fmt"
	"strings"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/godwit-dev/godwit/logging"
)

// Server error codes (MongoDB's error_codes.yml and the uassert ids the
// server raises for change streams).
const (
	codeFailedToParse        = 9
	codeUnauthorized         = 13
	codeAuthenticationFailed = 18
	codeCursorNotFound       = 43
	codeCommandNotSupported  = 115
	codeNotImplemented       = 238
	codeInvalidResumeToken   = 260
	codeChangeStreamFatal    = 280
	codeHistoryLost          = 286
	codeBSONObjectTooLarge   = 10334
	codeNotAReplicaSet       = 40573 // "The $changeStream stage is only supported on replica sets"
	codeUnknownField         = 40415 // IDL: "BSON field '…' is an unknown field"
	codeUnknownStage         = 40324 // "Unrecognized pipeline stage name"
	codeInvalidRegex         = 51091 // "Regular expression is invalid"
)

// resumableCodes are the change-streams specification's resumable codes
// for servers before 4.4 (wire version < 9); newer servers label resumable
// errors ResumableChangeStreamError instead. godwit retries both whatever the
// wire version: retrying a resumable error never loses data.
var resumableCodes = map[int32]bool{
	6: true, 7: true, 89: true, 91: true, 189: true, 262: true, 9001: true, 10107: true,
	11600: true, 11602: true, 13435: true, 13436: true, 63: true, 150: true, 13388: true,
	234: true, 133: true, codeCursorNotFound: true,
}

// haltError stops the source. A persistent halt (the stored position is
// unusable) is stored in the outbox and lasts until `godwit resync`; any
// other halt names what to change in the deployment or configuration and
// lasts until godwit restarts, which resumes at the stored token.
type haltError struct {
	reason     string
	persistent bool
}

func (h haltError) Error() string { return h.reason }

// failingError is an error retrying may get past once someone acts outside
// godwit (grants a role, fixes a server): retried slowly, shown as failing.
type failingError struct {
	reason       string
	slow         bool // wait the longest backoff between attempts
	unauthorized bool // ask the server what the user lacks
}

func (f failingError) Error() string { return f.reason }

// serverError returns the server's code, message and labels.
func serverError(err error) (mongo.CommandError, bool) {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return ce, true
	}
	var we mongo.WriteException
	if errors.As(err, &we) && we.WriteConcernError != nil {
		return mongo.CommandError{Code: int32(we.WriteConcernError.Code), Message: we.WriteConcernError.Message, Labels: we.Labels}, true
	}
	return mongo.CommandError{}, false
}

// classify sorts a stream error following the change-streams
// specification's resumable-error rules: network errors and resumable
// codes or labels stay plain errors (reconnect with backoff); errors that
// retrying cannot fix become a haltError with a reason in plain words;
// authorization failures and other server errors become a failingError.
// resumed tells that the error came after the stream opened (from a getMore
// or the driver's own resume), not from godwit's aggregate.
func (s *Source) classify(err error, resumed bool) error {
	if err == nil {
		return nil
	}
	msg := logging.RedactText(err.Error())
	if errors.Is(err, lungo.ErrLostOplogPosition) || strings.Contains(err.Error(), "unable to resume change stream") {
		return s.historyLost(msg)
	}
	ce, ok := serverError(err)
	if !ok && strings.Contains(err.Error(), "auth error") {
		return failingError{reason: fmt.Sprintf("authentication failed (%s): check the user, password and authSource of the source URI", msg), slow: true}
	}
	if !ok || mongo.IsNetworkError(err) || mongo.IsTimeout(err) || ce.HasErrorLabel("NetworkError") {
		return err // not a server's answer: resumable
	}
	if ce.HasErrorLabel("ResumableChangeStreamError") || resumableCodes[ce.Code] {
		return err
	}
	cfg := s.cfg
	switch ce.Code {
	case codeHistoryLost:
		return s.historyLost(msg)
	case codeInvalidResumeToken:
		if resumed {
			// The driver resumes with resumeAfter even where the stream was
			// opened with startAfter an invalidate event (the specification
			// says it must keep startAfter), and the server refuses to
			// resume after an invalidate. godwit's own reopen uses startAfter.
			return fmt.Errorf("the driver's resume was refused (%s); reopening with startAfter the stored token", msg)
		}
		return haltError{fmt.Sprintf("the server rejected the stored resume token as invalid (%s); %s", msg, s.resyncHint()), true}
	case codeChangeStreamFatal:
		// 280 is not one condition: the token's event vanished (rolled back
		// or out of the oplog), or the stream met something it will meet
		// again on every retry.
		if strings.Contains(ce.Message, "resume token was not found") {
			return haltError{fmt.Sprintf("the source's history no longer contains the event of the stored resume token (it was rolled back or is past the oplog) (%s): events after it may be lost; %s",
				msg, s.resyncHint()), true}
		}
		reason := "the server ended the change stream with an error it raises again on every resume"
		if strings.Contains(ce.Message, "more than one document with document key") {
			reason += " (full_document: updateLookup found two documents for one document key, as on a sharded collection whose shard key is not unique; set full_document: off or fix the duplicates)"
		}
		return s.configHalt(reason, msg)
	case codeNotAReplicaSet:
		return s.configHalt("this deployment does not support change streams: it must be a replica set or sharded cluster (a standalone mongod can run as a one-member replica set)", msg)
	case codeNotImplemented, codeCommandNotSupported, codeFailedToParse:
		return s.configHalt("this deployment does not support change streams: it must be a MongoDB replica set or sharded cluster (4.0 or newer); the server cannot run the change-stream aggregate godwit sends", msg)
	case codeUnknownField:
		switch {
		case strings.Contains(ce.Message, "showExpandedEvents"):
			return s.configHalt("this server does not support show_expanded_events (MongoDB 6.0 or newer): set show_expanded_events: false for this source", msg)
		case strings.Contains(ce.Message, "fullDocumentBeforeChange"):
			return s.configHalt("this server does not support pre-images (MongoDB 6.0 or newer): set full_document_before_change: off for this source", msg)
		}
		return s.configHalt("this server does not know an option godwit sends with the change stream; turn off the newer source options (show_expanded_events, full_document_before_change, split_large_events)", msg)
	case codeUnknownStage:
		if strings.Contains(ce.Message, "changeStreamSplitLargeEvent") {
			return s.configHalt("this server does not support split_large_events ($changeStreamSplitLargeEvent needs MongoDB 7.0, or 6.0.9 or newer): set split_large_events: false for this source", msg)
		}
		return s.configHalt("this server does not know a stage of the change-stream pipeline godwit sends", msg)
	case codeInvalidRegex:
		return s.configHalt("the server rejected a regular expression of the source's include/ignore filter; check those globs", msg)
	case codeBSONObjectTooLarge:
		if !cfg.SplitLargeEvents {
			return s.configHalt("a change event is larger than 16 MiB and the server cannot send it: set split_large_events: true for this source (MongoDB 7.0, or 6.0.9 or newer), then restart godwit; capture resumes at the stored token", msg)
		}
		return s.configHalt("a change event is larger than 16 MiB even in fragments", msg)
	case codeUnauthorized, codeAuthenticationFailed:
		return failingError{fmt.Sprintf("not authorized to read the change stream (%s): %s", msg, s.privilegeHint()), true, true}
	}
	if strings.Contains(ce.Message, "Regular expression") {
		return s.configHalt("the server rejected a regular expression of the source's include/ignore filter; check those globs", msg)
	}
	return failingError{reason: fmt.Sprintf("the server refused the change stream (%s); retrying", msg)}
}

func (s *Source) historyLost(msg string) error {
	return haltError{fmt.Sprintf("change stream history no longer reaches the stored resume token (%s): events in between are lost at the source; %s",
		msg, s.resyncHint()), true}
}

// configHalt halts until godwit restarts: the position is still good.
func (s *Source) configHalt(reason, serverMsg string) error {
	return haltError{reason: fmt.Sprintf("%s (server: %s); the stored position is kept: after the fix, restart godwit and capture resumes where it stopped", reason, serverMsg)}
}

// privilegeHint names what capture needs for this source's scope.
func (s *Source) privilegeHint() string {
	return fmt.Sprintf("the source's user needs the find and changeStream actions on %s (%s)", s.scope(), s.scopeRole())
}

func (s *Source) scope() string {
	switch {
	case s.cfg.Collection != "":
		return fmt.Sprintf("collection %s.%s", s.cfg.Database, s.cfg.Collection)
	case s.cfg.Database != "":
		return fmt.Sprintf("every collection of database %s", s.cfg.Database)
	}
	return "every database (a whole-deployment stream)"
}

func (s *Source) scopeRole() string {
	if s.cfg.Database != "" {
		return fmt.Sprintf("the built-in role read on database %s gives both", s.cfg.Database)
	}
	return "the built-in role readAnyDatabase gives both"
}
