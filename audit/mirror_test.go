package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/internal/testwait"
)

func TestSink_mirror(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Long)
	defer cancel()
	client, engine, err := lungo.Open(ctx, lungo.Options{Store: lungo.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	coll := client.Database("godwit").Collection("audit")
	path := logPath(t)
	f := &feed{}
	drop := func(i int) evt {
		return evt{op: "drop", db: "shop", coll: fmt.Sprint("c", i), at: time.Duration(i) * time.Second}
	}

	// Records written while no mirror is configured...
	s := open(t, audit.Config{Path: path})
	deliver(t, s, f.evts(drop(1), drop(2)))
	closeSink(t, s)

	// ...are copied when one is, followed by new ones.
	s, err = audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithMirror(coll))
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, s, f.evts(drop(3)))
	if err := s.RecordSystem(ctx, audit.SystemEvent{Class: audit.ClassDaemonStop}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return audit.MirroredThrough(s) == 4 })
	deliver(t, s, f.evts(drop(4)))
	closeSink(t, s) // Close catches up

	// A restart resumes after the last mirrored record.
	s, err = audit.Open(audit.Config{Path: path}, zerolog.Nop(), audit.WithMirror(coll))
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, s, f.evts(drop(5)))
	closeSink(t, s)

	recs := readLog(t, path)
	n, err := coll.CountDocuments(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(recs)) || n != 6 {
		t.Fatalf("mirror has %d documents, log %d records", n, len(recs))
	}
	cur, err := coll.Find(ctx, bson.M{}, options.Find().SetSort(bson.M{"_id": 1}))
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.M
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	for i, d := range docs {
		r := recs[i]
		if d["_id"] != int64(r.Index) || d["hash"] != r.Hash || d["prev"] != r.Prev || d["class"] != r.Class {
			t.Fatalf("document %d = %v, record %+v", i, d, r)
		}
		if tm, ok := d["time"].(primitive.DateTime); !ok || !tm.Time().Equal(r.Time.Truncate(time.Millisecond)) {
			t.Fatalf("document %d time = %#v, want a date %v", i, d["time"], r.Time)
		}
	}
	if ns, _ := docs[0]["ns"].(bson.M); ns["coll"] != "c1" {
		t.Fatalf("ns = %#v", docs[0]["ns"])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testwait.Long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in %s", testwait.Long)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
