package audit_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/audit"
	"github.com/godwit-dev/godwit/outbox"
	"github.com/godwit-dev/godwit/sink"
	"github.com/godwit-dev/godwit/sink/sinktest"
)

// drops returns n drop events of distinct collections: each must produce
// exactly one record.
func drops(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		raw, err := bson.Marshal(bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: fmt.Sprintf("%016X", i+1)}}},
			{Key: "operationType", Value: "drop"},
			{Key: "clusterTime", Value: primitive.Timestamp{T: 1700000000, I: uint32(i + 1)}},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "conf"}, {Key: "coll", Value: fmt.Sprint("c", i+1)}}},
		})
		if err != nil {
			panic(err)
		}
		out[i] = raw
	}
	return out
}

func TestSink_conformance(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			s, err := audit.Open(audit.Config{Path: filepath.Join(dir, "audit.jsonl")}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			recs := readLog(t, filepath.Join(dir, "audit.jsonl"))
			if len(recs) != len(want) {
				t.Fatalf("%d records, want %d", len(recs), len(want))
			}
			for i, r := range recs {
				if r.Class != audit.ClassDrop || r.Seq != want[i].Seq || r.Source != want[i].Source || r.NS.Coll != fmt.Sprint("c", i+1) {
					t.Fatalf("record %d = %s seq %d ns %v, want drop of seq %d", i+1, r.Class, r.Seq, r.NS, want[i].Seq)
				}
			}
		},
		Events: drops,
	})
}

// TestSink_conformanceMassDelete runs the suite over deletes that form
// bursts across batch and restart boundaries (the runner in the suite uses
// batches of 7): each burst must be recorded once.
func TestSink_conformanceMassDelete(t *testing.T) {
	const perBurst = 8 // threshold 5: one burst per group
	events := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			// Groups of perBurst deletes 100ms apart, groups a minute apart.
			at := time.Duration(i/perBurst)*time.Minute + time.Duration(i%perBurst)*100*time.Millisecond
			out[i] = del("orders", i+1, at).raw()
		}
		return out
	}
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T, dir string) sink.Sink {
			s, err := audit.Open(mdConfig(filepath.Join(dir, "audit.jsonl")), zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Check: func(t *testing.T, dir string, want []outbox.Record) {
			recs := readLog(t, filepath.Join(dir, "audit.jsonl"))
			groups := len(want) / perBurst
			if len(want)%perBurst > 5 {
				groups++ // a short last group is a burst if above the threshold
			}
			if len(recs) != groups {
				t.Fatalf("%d records for %d events, want %d bursts:\n%s", len(recs), len(want), groups, summarize(recs))
			}
			for g, r := range recs {
				first := want[g*perBurst].Seq
				last := want[min((g+1)*perBurst, len(want))-1].Seq
				if r.Class != audit.ClassMassDelete || r.Burst.FirstSeq != first || r.Burst.LastSeq != last {
					t.Fatalf("burst %d: %s %d..%d, want %d..%d", g+1, r.Class, r.Burst.FirstSeq, r.Burst.LastSeq, first, last)
				}
			}
		},
		Events: events,
	})
}
