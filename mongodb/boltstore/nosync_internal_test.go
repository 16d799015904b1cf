package boltstore

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
)

// BenchmarkStore_CommitNoFsync is BenchmarkStore_Commit without the fsync
// (bbolt's NoSync and the log's, which the store never skips otherwise): the
// store's own cost per commit, separated from the disk's flush latency.
//
//	go test -run '^$' -bench 'Store_CommitNoFsync' -benchtime 200x ./mongodb/boltstore/
func BenchmarkStore_CommitNoFsync(b *testing.B) {
	ns := lungo.Handle{"shop", "orders"}
	doc := func(i int) bsonkit.Doc {
		return bsonkit.MustConvert(bson.D{{Key: "_id", Value: int64(i)}, {Key: "customer", Value: fmt.Sprintf("c%05d", i%5000)},
			{Key: "total", Value: float64(i) * 1.5}, {Key: "status", Value: "new"},
			{Key: "note", Value: "a typical order document of a few hundred bytes with some text in it"}})
	}
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("docs=%d", n), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bolt.lungo"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.db.NoSync, s.walNoSync = true, true
			coll := mongokit.NewCollection(true)
			if _, err := coll.CreateIndex("customer_1", mongokit.IndexConfig{Key: bsonkit.MustConvert(bson.M{"customer": 1})}); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if _, err := coll.Insert(doc(i)); err != nil {
					b.Fatal(err)
				}
			}
			cat := lungo.NewCatalog()
			cat.Namespaces[ns] = coll
			if err := s.Store(cat); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				txn := lungo.NewTransaction(cat)
				if _, err := txn.Insert(ns, bsonkit.List{doc(n + i)}, true); err != nil {
					b.Fatal(err)
				}
				txn.Clean(100, 4000, 0, 0)
				runtime.GC()
				b.StartTimer()
				if err := s.Store(txn.Catalog()); err != nil {
					b.Fatal(err)
				}
				cat = txn.Catalog()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
