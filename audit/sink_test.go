package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// one delivers events to a fresh sink and returns the records written.
func one(t *testing.T, cfg audit.Config, events ...[]byte) []audit.Record {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = logPath(t)
	}
	s := open(t, cfg)
	f := &feed{}
	deliver(t, s, f.records(events...))
	closeSink(t, s)
	return readLog(t, cfg.Path)
}

func jsonEq(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("%s = %s, want %s", what, gb, wb)
	}
}

func TestSink_Deliver(t *testing.T) {
	t.Run("DropDatabase", func(t *testing.T) {
		recs := one(t, audit.Config{}, fixture(t, "dropDatabase"))
		if len(recs) != 1 {
			t.Fatalf("%d records", len(recs))
		}
		r := recs[0]
		if r.Class != audit.ClassDropDatabase || r.Severity != audit.SeverityCritical || r.Op != "dropDatabase" ||
			r.NS == nil || *r.NS != (change.Namespace{DB: "staging"}) || r.Seq != 1 || r.Source != "src" || r.Index != 1 || r.Prev != audit.Genesis {
			t.Fatalf("record %+v", r)
		}
		if r.ClusterTime == nil || *r.ClusterTime != (audit.ClusterTime{T: 1710000005, I: 1}) {
			t.Errorf("cluster_time %+v", r.ClusterTime)
		}
		wall := time.Date(2024, 3, 9, 16, 0, 5, 0, time.UTC)
		if r.WallTime == nil || !r.WallTime.Equal(wall) || !r.Time.Equal(wall) {
			t.Errorf("wall_time %v, time %v", r.WallTime, r.Time)
		}
	})
	t.Run("Drop", func(t *testing.T) {
		recs := one(t, audit.Config{}, fixture(t, "drop"))
		if len(recs) != 1 || recs[0].Class != audit.ClassDrop || recs[0].Severity != audit.SeverityHigh ||
			*recs[0].NS != (change.Namespace{DB: "shop", Coll: "carts"}) {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("Rename", func(t *testing.T) {
		recs := one(t, audit.Config{}, fixture(t, "rename"))
		if len(recs) != 1 {
			t.Fatalf("%d records", len(recs))
		}
		r := recs[0]
		if r.Class != audit.ClassRename || *r.NS != (change.Namespace{DB: "shop", Coll: "orders"}) ||
			r.To == nil || *r.To != (change.Namespace{DB: "shop", Coll: "orders_2023"}) {
			t.Fatalf("record %+v", r)
		}
		if !r.Time.Equal(time.Date(2024, 3, 9, 16, 0, 0, 123e6, time.UTC)) {
			t.Errorf("time %v: want the wallTime with ms", r.Time)
		}
		jsonEq(t, "description.to", mustField(t, r.Description, "to"), `{"db":"shop","coll":"orders_2023"}`)
	})
	t.Run("DropIndexes", func(t *testing.T) {
		recs := one(t, audit.Config{}, fixture(t, "dropIndexes"))
		if len(recs) != 1 || recs[0].Class != audit.ClassDropIndexes || recs[0].Severity != audit.SeverityMedium {
			t.Fatalf("records %+v", recs)
		}
		jsonEq(t, "description", recs[0].Description, `{"indexes":[{"v":2,"key":{"email":1},"name":"email_1","unique":true}]}`)
	})
	t.Run("Modify", func(t *testing.T) {
		recs := one(t, audit.Config{}, fixture(t, "modify"))
		if len(recs) != 1 || recs[0].Class != audit.ClassModify {
			t.Fatalf("records %+v", recs)
		}
		jsonEq(t, "description", recs[0].Description, `{"index":{"name":"expires_1","expireAfterSeconds":60}}`)
		jsonEq(t, "state_before", recs[0].StateBefore, `{"indexOptions":{"expireAfterSeconds":86400}}`)
	})
	t.Run("NotRisky", func(t *testing.T) {
		recs := one(t, audit.Config{},
			fixture(t, "createIndexes"), fixture(t, "update-role"),
			evt{op: "insert", db: "shop", coll: "orders", id: 1}.raw(),
			evt{op: "someFutureOp", db: "shop", coll: "orders"}.raw(),
			del("orders", 1, 0).raw())
		if len(recs) != 0 {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("Disabled", func(t *testing.T) {
		recs := one(t, audit.Config{Disable: []string{audit.ClassDrop, audit.ClassModify}},
			fixture(t, "drop"), fixture(t, "modify"), fixture(t, "dropIndexes"))
		if len(recs) != 1 || recs[0].Class != audit.ClassDropIndexes {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("SeverityOverride", func(t *testing.T) {
		recs := one(t, audit.Config{Severity: map[string]string{audit.ClassDrop: audit.SeverityCritical}}, fixture(t, "drop"))
		if recs[0].Severity != audit.SeverityCritical {
			t.Fatalf("severity %s", recs[0].Severity)
		}
	})
	t.Run("UserRule", func(t *testing.T) {
		match, err := audit.ParseMatch(`{"fullDocument.role": "admin", "documentKey._id": {"$oid": "65f1a2b6c0ffee0000000001"}}`)
		if err != nil {
			t.Fatal(err)
		}
		cfg := audit.Config{Rules: []audit.Rule{
			{Name: "admin-granted", Namespaces: []string{"auth.*"}, OperationTypes: []string{"update", "replace"}, Match: match, Severity: audit.SeverityCritical},
			{Name: "other-db", Namespaces: []string{"billing.*"}},
			{Name: "inserts-only", OperationTypes: []string{"insert"}, Namespaces: []string{"auth.users"}},
			{Name: "any-shop-ddl", Namespaces: []string{"shop.*"}, OperationTypes: []string{"createIndexes", "drop"}},
		}}
		recs := one(t, cfg, fixture(t, "update-role"), fixture(t, "createIndexes"), fixture(t, "drop"),
			evt{op: "update", db: "auth", coll: "users", id: 2, extra: bson.D{{Key: "fullDocument", Value: bson.D{{Key: "role", Value: "user"}}}}}.raw())
		if len(recs) != 3 {
			t.Fatalf("%d records: %+v", len(recs), recs)
		}
		r := recs[0]
		if r.Class != audit.ClassRule || r.Severity != audit.SeverityCritical || fmt.Sprint(r.Rules) != "[admin-granted]" || r.Op != "update" {
			t.Errorf("rule record %+v", r)
		}
		jsonEq(t, "document_key", r.DocumentKey, `{"_id":{"$oid":"65f1a2b6c0ffee0000000001"}}`)
		if r := recs[1]; r.Class != audit.ClassRule || fmt.Sprint(r.Rules) != "[any-shop-ddl]" || r.Severity != audit.SeverityMedium {
			t.Errorf("createIndexes record %+v", r)
		}
		// A built-in class keeps its class and gets the rules' names; the
		// severity is the highest of both.
		if r := recs[2]; r.Class != audit.ClassDrop || fmt.Sprint(r.Rules) != "[any-shop-ddl]" || r.Severity != audit.SeverityHigh {
			t.Errorf("drop record %+v", r)
		}
	})
	t.Run("RuleMatchesRenameTarget", func(t *testing.T) {
		cfg := audit.Config{Disable: []string{audit.ClassRename}, Rules: []audit.Rule{{Name: "protect-orders", Namespaces: []string{"shop.orders_*"}}}}
		recs := one(t, cfg, fixture(t, "rename"))
		if len(recs) != 1 || recs[0].Class != audit.ClassRule {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("UnreadableEvent", func(t *testing.T) {
		bad, _ := bson.Marshal(bson.D{{Key: "operationType", Value: 42}})
		recs := one(t, audit.Config{}, bad, fixture(t, "drop"))
		if len(recs) != 2 || recs[0].Class != audit.ClassUnreadable || recs[0].Seq != 1 || recs[1].Seq != 2 {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("RedeliveryIsSkipped", func(t *testing.T) {
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		f := &feed{}
		batch := f.records(fixture(t, "drop"), fixture(t, "rename"), fixture(t, "dropDatabase"))
		deliver(t, s, batch)
		deliver(t, s, batch)
		deliver(t, s, batch[1:])
		closeSink(t, s)
		s = open(t, audit.Config{Path: path})
		deliver(t, s, batch)
		closeSink(t, s)
		if recs := readLog(t, path); len(recs) != 3 {
			t.Fatalf("%d records after redeliveries, want 3", len(recs))
		}
	})
	t.Run("AfterClose", func(t *testing.T) {
		s := open(t, audit.Config{Path: logPath(t)})
		closeSink(t, s)
		if err := s.Deliver(context.Background(), (&feed{}).records(fixture(t, "drop"))); !errors.Is(err, audit.ErrClosed) {
			t.Fatalf("Deliver after Close = %v", err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	})
}

func mustField(t *testing.T, doc json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m[key]
}

func TestSink_RecordSystem(t *testing.T) {
	t.Run("Fields", func(t *testing.T) {
		path := logPath(t)
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		s, err := audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithClock(func() time.Time { return now }))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		events := []audit.SystemEvent{
			{Class: audit.ClassDaemonStart, Message: "godwit 1.0 started"},
			{Class: audit.ClassCaptureHalted, Source: "shop", Message: "history lost", Details: map[string]any{"code": 286}},
			{Class: audit.ClassCaptureSkipped, Source: "shop", Severity: audit.SeverityHigh, Time: t0},
			{Class: audit.ClassTriggerChanged, User: "alice", Namespace: "shop.orders.archive", Message: "trigger t1 updated"},
			{Class: audit.ClassDaemonStop},
		}
		for _, ev := range events {
			if err := s.RecordSystem(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordSystem(ctx, audit.SystemEvent{}); err == nil {
			t.Error("RecordSystem without class succeeded")
		}
		if err := s.RecordSystem(ctx, audit.SystemEvent{Class: "x", Severity: "dire"}); err == nil {
			t.Error("RecordSystem with a bad severity succeeded")
		}
		if s.Count() != 5 || s.Head().Index != 5 {
			t.Fatalf("Count %d Head %v", s.Count(), s.Head())
		}
		closeSink(t, s)
		recs := readLog(t, path)
		want := []struct{ class, sev string }{
			{audit.ClassDaemonStart, audit.SeverityLow}, {audit.ClassCaptureHalted, audit.SeverityHigh},
			{audit.ClassCaptureSkipped, audit.SeverityHigh}, {audit.ClassTriggerChanged, audit.SeverityMedium},
			{audit.ClassDaemonStop, audit.SeverityLow},
		}
		for i, w := range want {
			if recs[i].Class != w.class || recs[i].Severity != w.sev || recs[i].Seq != 0 {
				t.Errorf("record %d: %s/%s, want %s/%s", i+1, recs[i].Class, recs[i].Severity, w.class, w.sev)
			}
		}
		if !recs[0].Time.Equal(now) || !recs[0].RecordedAt.Equal(now) || !recs[2].Time.Equal(t0) {
			t.Errorf("times: %v %v %v", recs[0].Time, recs[0].RecordedAt, recs[2].Time)
		}
		if recs[1].Details["code"] != float64(286) || recs[1].Source != "shop" {
			t.Errorf("details %+v", recs[1])
		}
		if recs[3].User != "alice" || *recs[3].NS != (change.Namespace{DB: "shop", Coll: "orders.archive"}) {
			t.Errorf("trigger record %+v", recs[3])
		}
	})
	t.Run("ConcurrentWithDeliver", func(t *testing.T) {
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		f := &feed{}
		var batches [][]outbox.Record
		for i := range 50 {
			batches = append(batches, f.evts(evt{op: "drop", db: "shop", coll: fmt.Sprint("c", i), at: time.Duration(i) * time.Second}))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		wg.Go(func() {
			for _, b := range batches {
				errs <- s.Deliver(context.Background(), b)
			}
		})
		for range 2 {
			wg.Go(func() {
				for range 25 {
					errs <- s.RecordSystem(context.Background(), audit.SystemEvent{Class: audit.ClassReplicationConflict})
					_ = s.Head()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		closeSink(t, s)
		recs := readLog(t, path)
		if len(recs) != 100 || len(ofClass(recs, audit.ClassDrop)) != 50 {
			t.Fatalf("%d records, %d drops", len(recs), len(ofClass(recs, audit.ClassDrop)))
		}
	})
}

func TestSink_Close(t *testing.T) {
	t.Run("LogsHead", func(t *testing.T) {
		var buf bytes.Buffer
		path := logPath(t)
		s, err := audit.Open(audit.Config{Path: path, HeadEvery: 2}, zerolog.New(&buf))
		if err != nil {
			t.Fatal(err)
		}
		f := &feed{}
		for i := range 5 {
			deliver(t, s, f.evts(evt{op: "drop", db: "shop", coll: fmt.Sprint("c", i)}))
		}
		head := s.Head()
		closeSink(t, s)
		var heads []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			if h, ok := m["audit_head"].(string); ok {
				heads = append(heads, fmt.Sprintf("%s:%s", m["message"], strings.SplitN(h, ":", 2)[0]))
			}
		}
		// Open, every 2 records, Close.
		want := "[audit log opened:0 audit chain head:2 audit chain head:4 audit log closed:5]"
		if fmt.Sprint(heads) != want {
			t.Fatalf("head log lines %v, want %s", heads, want)
		}
		if !strings.Contains(buf.String(), head.String()) {
			t.Errorf("closing head %s not logged", head)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Run("InvalidConfig", func(t *testing.T) {
		if _, err := audit.Open(audit.Config{}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "path") {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("Locked", func(t *testing.T) {
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		defer closeSink(t, s)
		if _, err := audit.Open(audit.Config{Path: path}, zerolog.Nop()); !errors.Is(err, audit.ErrLocked) {
			t.Fatalf("second Open = %v, want ErrLocked", err)
		}
	})
	t.Run("RefusesCutTail", func(t *testing.T) {
		path, _ := systemLog(t, 5)
		writeLines(t, path, lines(t, path)[:3])
		openHalted(t, audit.Config{Path: path}, audit.ErrTailCut)
	})
	t.Run("RefusesRewrittenTail", func(t *testing.T) {
		path, _ := systemLog(t, 5)
		ls := lines(t, path)
		ls[4] = bytes.Replace(ls[4], []byte("start 5"), []byte("start 6"), 1)
		writeLines(t, path, ls)
		openHalted(t, audit.Config{Path: path}, audit.ErrHeadMismatch)
	})
	t.Run("RefusesTamperedRecordsAfterState", func(t *testing.T) {
		path, _ := systemLog(t, 2)
		ls := lines(t, path)
		writeLines(t, path, append(ls, []byte(`{"index":3,"prev":"`+audit.Genesis+`","class":"x","hash":"`+audit.Genesis+`"}`+"\n")))
		openHalted(t, audit.Config{Path: path}, audit.ErrHashMismatch)
	})
	t.Run("WithoutStateFile", func(t *testing.T) {
		path := logPath(t)
		s := open(t, audit.Config{Path: path})
		f := &feed{}
		batch := f.records(fixture(t, "drop"), fixture(t, "rename"), fixture(t, "dropDatabase"))
		deliver(t, s, batch)
		closeSink(t, s)
		if err := os.Remove(path + ".state"); err != nil {
			t.Fatal(err)
		}
		// The state held the sealing key: without it godwit can neither
		// check what it did not account for nor seal.
		closeSink(t, openHalted(t, audit.Config{Path: path}, audit.ErrSealStateLost))
		// Going on takes a new key, on purpose.
		s, err := audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithNewKey())
		if err != nil {
			t.Fatal(err)
		}
		deliver(t, s, batch) // a redelivery: nothing new
		deliver(t, s, f.records(fixture(t, "drop")))
		closeSink(t, s)
		recs := readLog(t, path)
		classes := []string{}
		for _, r := range recs {
			classes = append(classes, r.Class)
		}
		if fmt.Sprint(classes) != "[drop rename dropDatabase audit_state_reset drop]" {
			t.Fatalf("classes %v", classes)
		}
		rep := checkSealed(t, path, keyFiles(t, path)...)
		if len(rep.Segments) != 2 || rep.Segments[1].FirstIndex != 4 {
			t.Fatalf("segments %+v, want a new key from the reset record (4)", rep.Segments)
		}
	})
	t.Run("WithoutStateFileUnsealed", func(t *testing.T) {
		// A log of an older godwit, which did not seal: rebuilt as before,
		// and sealed from the reset record on.
		path := legacyLog(t, 3)
		s := open(t, audit.Config{Path: path})
		closeSink(t, s)
		recs := readLog(t, path)
		if len(recs) != 4 || recs[3].Class != audit.ClassStateReset || recs[3].Seal == "" || recs[2].Seal != "" {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("CorruptStateFile", func(t *testing.T) {
		path, _ := systemLog(t, 2)
		os.WriteFile(path+".state", []byte("{not json"), 0o600)
		s := openHalted(t, audit.Config{Path: path}, audit.ErrSealStateLost)
		if !strings.Contains(s.Halted().Error(), "corrupt") {
			t.Fatalf("halted: %v, want it to say the state file is corrupt", s.Halted())
		}
	})
}
