package capture_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change/changetest"
	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/internal/wiretest"
	"github.com/godwit-dev/godwit/outbox"
)

// TestSource_Real_PermanentErrorsHalt: errors that retrying cannot fix halt
// the source with a reason in plain words (issue 13 S1, S3, N4, N6; issue
// 14 item 2), reported through OnHalt (the daemon's audit) and status, and
// keep the stored position: a restart after the fix resumes there.
func TestSource_Real_PermanentErrorsHalt(t *testing.T) {
	open := func(err bson.Raw) [][]reply { return [][]reply{{{opening: true, err: err}}} }
	// afterInsert fails the getMore that follows a first event.
	afterInsert := func(err bson.Raw) [][]reply { return [][]reply{{{events: []string{"insert"}}, {err: err}}} }
	for _, tc := range []struct {
		name    string
		scripts [][]reply
		cfg     capture.Config
		want    string
	}{
		{"Standalone", open(wiretest.Error(40573, "Location40573", "The $changeStream stage is only supported on replica sets")),
			capture.Config{}, "this deployment does not support change streams: it must be a replica set or sharded cluster"},
		// FerretDB v1.24.2's exact answers (issue 14).
		{"FerretDBWholeDeployment", open(wiretest.Error(9, "FailedToParse", "Invalid command format: the 'aggregate' field must specify a collection name or 1")),
			capture.Config{}, "this deployment does not support change streams"},
		{"FerretDBNotImplemented", open(wiretest.Error(238, "NotImplemented", "$changeStream is not implemented yet")),
			capture.Config{}, "this deployment does not support change streams"},
		{"CommandNotSupported", open(wiretest.Error(115, "CommandNotSupported", "aggregate with $changeStream is not supported")),
			capture.Config{}, "this deployment does not support change streams"},
		{"ShowExpandedEventsBefore60", open(wiretest.Error(40415, "Location40415", "BSON field '$changeStream.showExpandedEvents' is an unknown field.")),
			capture.Config{ShowExpandedEvents: true}, "set show_expanded_events: false"},
		{"SplitStageBefore609", open(wiretest.Error(40324, "Location40324", "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'")),
			capture.Config{SplitLargeEvents: true}, "set split_large_events: false"},
		{"InvalidRegex", open(wiretest.Error(51091, "Location51091", "Regular expression is invalid: missing terminating ] for character class")),
			capture.Config{}, "include/ignore"},
		{"EventTooLarge", afterInsert(wiretest.Error(10334, "BSONObjectTooLarge", "BSONObj size: 17825792 (0x1100000) is invalid. Size must be between 0 and 16793600(16MB)")),
			capture.Config{}, "set split_large_events: true"},
		{"FatalNotHistoryLost", afterInsert(wiretest.Error(280, "ChangeStreamFatalError", "found more than one document with document key {_id: 1} [{_id: 1}, {_id: 1}]")),
			capture.Config{FullDocument: "updateLookup"}, "raises again on every resume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := openOutbox(t, outbox.Options{})
			srv := newWireServer(t, tc.scripts...)
			var mu sync.Mutex
			var audited []string
			tc.cfg.OnHalt = func(_, reason string) {
				mu.Lock()
				audited = append(audited, reason)
				mu.Unlock()
			}
			src, err := runWire(t, srv, ob, tc.cfg)
			if !isHalted(err) {
				t.Fatalf("Run = %v, want ErrHalted", err)
			}
			st := src.Status()
			if st.State != capture.StateHalted || !strings.Contains(st.Reason, tc.want) {
				t.Fatalf("status %q reason %q, want halted with %q", st.State, st.Reason, tc.want)
			}
			if strings.Contains(st.Reason, "history") || strings.Contains(st.Reason, "resync") {
				t.Fatalf("reason %q speaks of lost history: this halt keeps the position", st.Reason)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(audited) != 1 || audited[0] != st.Reason {
				t.Fatalf("audited %q, want the reason once", audited)
			}
			if n := len(srv.watchCalls()); n != 1 {
				t.Fatalf("%d aggregates: a permanent error must not be retried", n)
			}
			// The stored position stays usable: not halted in the outbox.
			if stored, ok, _ := ob.Source("real"); ok && stored.State == outbox.StateHalted {
				t.Fatalf("stored state halted (%q): a restart after the fix must resume", stored.Reason)
			}
		})
	}
}

// TestSource_Real_UnauthorizedIsFailing: 13 Unauthorized names the
// privileges capture needs and is retried (at the longest backoff) in the
// failing state, not halted; once the role is granted capture goes on.
func TestSource_Real_UnauthorizedIsFailing(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	denied := wiretest.Error(13, "Unauthorized", "not authorized on shop to execute command { aggregate: 1, pipeline: [ { $changeStream: {} } ] }")
	srv := newWireServer(t,
		[]reply{{opening: true, err: denied}},
		[]reply{{opening: true, err: denied}},
		[]reply{{events: []string{"insert"}}},
	)
	seen := make(chan capture.Status, 3)
	var src *capture.Source
	var srcMu sync.Mutex
	srv.script(func(n int) {
		srcMu.Lock()
		defer srcMu.Unlock()
		if n > 0 && src != nil {
			seen <- src.Status() // the status during the wait before this retry
		}
	}, func(req wiretest.Request) bson.Raw {
		if req.Command != "connectionStatus" {
			return nil
		}
		return wiretest.OK(bson.E{Key: "authInfo", Value: bson.D{
			{Key: "authenticatedUsers", Value: bson.A{bson.D{{Key: "user", Value: "capture"}, {Key: "db", Value: "admin"}}}},
			{Key: "authenticatedUserPrivileges", Value: bson.A{bson.D{
				{Key: "resource", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: ""}}},
				{Key: "actions", Value: bson.A{"find"}}}}}}})
	})
	cfg := capture.Config{ID: "real", Database: "shop", MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		CheckpointInterval: time.Nanosecond, MaxAwaitTime: time.Millisecond,
		OnHalt: func(_, reason string) { t.Errorf("halted: %s", reason) }}
	srcMu.Lock()
	src = capture.New(cfg, connect(t, srv), ob, nil, zerolog.Nop())
	srcMu.Unlock()
	r := start(t, src)
	select {
	case <-srv.idle:
	case err := <-r.done:
		t.Fatalf("Run returned %v while failing", err)
	case <-time.After(testwait.Long):
		t.Fatalf("never retried past the refusals: %+v", src.Status())
	}
	for range 2 {
		st := <-seen
		if st.State != capture.StateFailing || !strings.Contains(st.LastError, "find and changeStream actions on every collection of database shop") ||
			!strings.Contains(st.LastError, "role read on database shop") ||
			!strings.Contains(st.LastError, "the server says the user lacks changeStream on every collection of database shop") {
			t.Fatalf("status while refused = %q %q, want failing naming the privileges", st.State, st.LastError)
		}
	}
	waitEvents(t, ob, 1)
	if st := src.Status(); st.State != capture.StateRunning {
		t.Fatalf("after the grant: %q %q", st.State, st.LastError)
	}
}

// TestSource_Real_InvalidateThenStepDown (issue 13 S2): reopened with
// startAfter an invalidate token, a step-down before the first event makes
// the driver resume with resumeAfter, which the server refuses with 260.
// That is not a bad token: capture reopens with startAfter itself.
func TestSource_Real_InvalidateThenStepDown(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	stepDown := wiretest.Error(10107, "NotWritablePrimary", "not primary", "ResumableChangeStreamError")
	srv := newWireServer(t,
		[]reply{{events: []string{"insert", "invalidate"}, closed: true}},
		// godwit reopens startAfter the invalidate; the primary steps down.
		[]reply{{err: stepDown}},
		// The driver resumes by itself, with resumeAfter: refused.
		[]reply{{opening: true, err: wiretest.Error(260, "InvalidResumeToken", "Cannot resume from an invalidate: use startAfter")}},
		[]reply{{events: []string{"txn_insert_1"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatalf("Run = %v: a healthy source halted", err)
	}
	inv := changetest.Event("invalidate").Lookup("_id").Document()
	calls := srv.watchCalls()
	if len(calls) != 4 || string(calls[1].startAfter) != string(inv) || string(calls[2].resumeAfter) != string(inv) ||
		string(calls[3].startAfter) != string(inv) {
		t.Fatalf("aggregates: want startAfter, the driver's resumeAfter, then startAfter the invalidate again; got %+v", calls)
	}
	if got := summaries(t, readAll(t, ob)); len(got) != 3 {
		t.Fatalf("events = %q", got)
	}
}

// TestSource_Real_WholeEventInsideSplitEventHalts (issue 13 N2): the
// checkpoint never moves past half an event.
func TestSource_Real_WholeEventInsideSplitEventHalts(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t, []reply{{events: []string{"insert"}}, {events: []string{"split_1", "update"}}})
	err := runFake(t, srv, ob, capture.Config{SplitLargeEvents: true})
	if !isHalted(err) || !strings.Contains(err.Error(), "whole event while fragment 2 of 2") {
		t.Fatalf("Run = %v, want a halt naming the missing fragment", err)
	}
	ins := changetest.Event("insert").Lookup("_id").Document()
	if st := stored(t, ob, "real"); string(st.Token) != string(ins) || len(readAll(t, ob)) != 1 {
		t.Fatalf("stored token %v with %d events: want the insert's, before the split event", bson.Raw(st.Token), len(readAll(t, ob)))
	}
}

// TestSource_Real_ServerClosedCursorReopens (issue 13 N3): a cursor the
// server ends (id 0) without an invalidate is reopened at the stored token
// (before the fix, TryNext returned false forever and capture spun).
func TestSource_Real_ServerClosedCursorReopens(t *testing.T) {
	ob := openOutbox(t, outbox.Options{})
	srv := newWireServer(t,
		[]reply{{events: []string{"insert"}, closed: true}},
		[]reply{{events: []string{"txn_insert_1"}}},
	)
	if err := runFake(t, srv, ob, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	ins := changetest.Event("insert").Lookup("_id").Document()
	calls := srv.watchCalls()
	if len(calls) != 2 || string(calls[1].startAfter) != string(ins) {
		t.Fatalf("want one reopen startAfter the insert, got %+v", calls)
	}
	if n := len(readAll(t, ob)); n != 2 {
		t.Fatalf("%d events stored, want 2", n)
	}
}

// TestSource_MissingPrivileges: the start-time check reads the user's
// privileges from connectionStatus and names what a stream of this scope
// needs and lacks.
func TestSource_MissingPrivileges(t *testing.T) {
	priv := func(db, coll string, actions ...string) bson.D {
		return bson.D{{Key: "resource", Value: bson.D{{Key: "db", Value: db}, {Key: "collection", Value: coll}}}, {Key: "actions", Value: actions}}
	}
	users := bson.A{bson.D{{Key: "user", Value: "capture"}, {Key: "db", Value: "admin"}}}
	for _, tc := range []struct {
		name  string
		cfg   capture.Config
		users bson.A
		privs bson.A
		known bool
		want  []string
	}{
		{"ReadRoleOnDatabase", capture.Config{Database: "shop"}, users,
			bson.A{priv("shop", "", "changeStream", "find", "listCollections")}, true, nil},
		{"FindOnly", capture.Config{Database: "shop"}, users,
			bson.A{priv("shop", "", "find")}, true, []string{"changeStream on every collection of database shop"}},
		{"CollectionScope", capture.Config{Database: "shop", Collection: "orders"}, users,
			bson.A{priv("shop", "orders", "changeStream", "find")}, true, nil},
		{"OtherCollection", capture.Config{Database: "shop", Collection: "orders"}, users,
			bson.A{priv("shop", "items", "changeStream", "find")}, true,
			[]string{"changeStream on collection shop.orders", "find on collection shop.orders"}},
		{"DatabaseRoleForWholeDeployment", capture.Config{}, users,
			bson.A{priv("shop", "", "changeStream", "find")}, true,
			[]string{"changeStream on every database (a whole-deployment stream)", "find on every database (a whole-deployment stream)"}},
		{"ReadAnyDatabase", capture.Config{}, users,
			bson.A{priv("", "", "changeStream", "find")}, true, nil},
		{"AccessControlOff", capture.Config{}, bson.A{}, bson.A{}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newWireServer(t)
			srv.script(nil, func(req wiretest.Request) bson.Raw {
				if req.Command != "connectionStatus" || !req.Body.Lookup("showPrivileges").Boolean() {
					return nil
				}
				return wiretest.OK(bson.E{Key: "authInfo", Value: bson.D{{Key: "authenticatedUsers", Value: tc.users},
					{Key: "authenticatedUserRoles", Value: bson.A{}}, {Key: "authenticatedUserPrivileges", Value: tc.privs}}})
			})
			tc.cfg.ID = "real"
			src := capture.New(tc.cfg, connect(t, srv), nil, nil, zerolog.Nop())
			ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
			defer cancel()
			missing, known := src.MissingPrivileges(ctx)
			if known != tc.known || !slices.Equal(missing, tc.want) {
				t.Fatalf("MissingPrivileges = %q, %v; want %q, %v", missing, known, tc.want, tc.known)
			}
		})
	}
}
