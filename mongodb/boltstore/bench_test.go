package boltstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/internal/cputime"
	"github.com/godwit-dev/godwit/mongodb/boltstore"
)

// Benchmark figures (commits/s) are printed side by side for this store and
// the one a user would otherwise get, lungo's FileStore:
//
//	go test -run '^$' -bench 'Store_Commit|Engine_' -benchtime 1000x ./mongodb/boltstore/
//
// A fixed count keeps the run finite: lungo's FileStore takes about a
// second per commit at 100,000 documents.
//
// BenchmarkStore_Commit times only Store, the durable write of one commit
// that inserted one document (the commit itself is prepared with lungo's
// transactions outside the timer); the boltstore figure includes its
// checkpoints into bbolt (one every 512 commits). It does not force a
// garbage collection per commit: that returned the heap to the system each
// time and made every Store fault its memory back in (547 cpu-µs/op
// against 314 without, at 100,000 documents).
//
// The Engine benchmarks time an InsertOne, and an UpdateOne by _id, through
// lungo's client, engine and store: a durable single-document transaction
// as a user makes it. Their "memory" column (lungo's MemoryStore, nothing
// written) is the engine's own cost.
//
// cpu-µs/op is the process's CPU time (user + system) per commit in the
// timed part. On a shared machine commits/s also measures the wait for a
// CPU after each fsync; cpu-µs/op does not, and with the disk's fsync
// latency it says what an idle machine would do.

var benchSizes = []int{1_000, 10_000, 100_000}

var benchNS = lungo.Handle{"shop", "orders"}

// benchCatalog builds a catalog with n documents in shop.orders (with an
// _id index and a secondary index) directly, as lungo's own inserts would
// take quadratic time to get there.
func benchCatalog(b *testing.B, n int) *lungo.Catalog {
	b.Helper()
	coll := mongokit.NewCollection(true)
	if _, err := coll.CreateIndex("customer_1", mongokit.IndexConfig{Key: bsonkit.MustConvert(bson.M{"customer": 1})}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := coll.Insert(benchDoc(i)); err != nil {
			b.Fatal(err)
		}
	}
	cat := lungo.NewCatalog()
	cat.Namespaces[benchNS] = coll
	return cat
}

func benchDoc(i int) bsonkit.Doc {
	return bsonkit.MustConvert(bson.D{{Key: "_id", Value: int64(i)}, {Key: "customer", Value: fmt.Sprintf("c%05d", i%5000)},
		{Key: "total", Value: float64(i) * 1.5}, {Key: "status", Value: "new"},
		{Key: "note", Value: "a typical order document of a few hundred bytes with some text in it"}})
}

type benchStore struct {
	name string
	open func(b *testing.B, dir string) (lungo.Store, func())
}

// iterations caps lungo's FileStore, which takes a second or more per commit
// at 100,000 documents, at a few commits, so the run finishes.
func iterations(b *testing.B, store string, docs int) int {
	if store == "filestore" && docs >= 100_000 {
		return min(b.N, 5)
	}
	return b.N
}

// report sets ns/op, commits/s and cpu-µs/op from the commits actually
// timed and the CPU time they took.
func report(b *testing.B, commits int, cpu time.Duration) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(commits), "ns/op")
	b.ReportMetric(float64(commits)/b.Elapsed().Seconds(), "commits/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(commits), "cpu-µs/op")
}

func cpuTime(b *testing.B) time.Duration {
	d, err := cputime.Process()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

var benchStores = []benchStore{
	{"boltstore", func(b *testing.B, dir string) (lungo.Store, func()) {
		s, err := boltstore.Open(filepath.Join(dir, "bolt.lungo"), boltstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s, func() { _ = s.Close() }
	}},
	{"filestore", func(b *testing.B, dir string) (lungo.Store, func()) {
		return lungo.NewFileStore(filepath.Join(dir, "file.bson"), 0o600), func() {}
	}},
}

func BenchmarkStore_Commit(b *testing.B) {
	for _, n := range benchSizes {
		for _, bs := range benchStores {
			b.Run(fmt.Sprintf("docs=%d/%s", n, bs.name), func(b *testing.B) {
				store, done := bs.open(b, b.TempDir())
				defer done()
				cat := benchCatalog(b, n)
				if err := store.Store(cat); err != nil {
					b.Fatal(err)
				}
				commits := iterations(b, bs.name, n)
				var cpu time.Duration
				b.ResetTimer()
				for i := 0; i < commits; i++ {
					b.StopTimer()
					txn := lungo.NewTransaction(cat)
					if _, err := txn.Insert(benchNS, bsonkit.List{benchDoc(n + i)}, true); err != nil {
						b.Fatal(err)
					}
					// As the engine does before Store, with godwit's sizes.
					txn.Clean(100, 4000, 0, 0)
					b.StartTimer()
					start := cpuTime(b)
					if err := store.Store(txn.Catalog()); err != nil {
						b.Fatal(err)
					}
					cpu += cpuTime(b) - start
					cat = txn.Catalog()
				}
				report(b, commits, cpu)
			})
		}
	}
}

func BenchmarkEngine_InsertOne(b *testing.B) {
	benchEngine(b, func(ctx context.Context, coll lungo.ICollection, n, i int) error {
		_, err := coll.InsertOne(ctx, benchDoc(n+i))
		return err
	})
}

// BenchmarkEngine_UpdateOneByID times an update of one existing document
// found by _id: lungo finds it in the _id index, not by a scan.
func BenchmarkEngine_UpdateOneByID(b *testing.B) {
	benchEngine(b, func(ctx context.Context, coll lungo.ICollection, n, i int) error {
		res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: int64(i * 7919 % n)}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "total", Value: 1.0}}}})
		if err == nil && res.ModifiedCount != 1 {
			err = fmt.Errorf("updated %d documents, want 1", res.ModifiedCount)
		}
		return err
	})
}

// benchEngine times op, one commit each, through lungo's client, engine and
// store with n documents in the collection; its "memory" column (lungo's
// MemoryStore, nothing written) is the engine's own cost.
func benchEngine(b *testing.B, op func(ctx context.Context, coll lungo.ICollection, n, i int) error) {
	ctx := context.Background()
	stores := append([]benchStore{{"memory", func(*testing.B, string) (lungo.Store, func()) {
		return lungo.NewMemoryStore(), func() {}
	}}}, benchStores...)
	for _, n := range benchSizes {
		for _, bs := range stores {
			b.Run(fmt.Sprintf("docs=%d/%s", n, bs.name), func(b *testing.B) {
				store, done := bs.open(b, b.TempDir())
				defer done()
				if err := store.Store(benchCatalog(b, n)); err != nil {
					b.Fatal(err)
				}
				client, engine, err := lungo.Open(ctx, lungo.Options{Store: store, MaxOplogSize: 4000, MinOplogSize: 100})
				if err != nil {
					b.Fatal(err)
				}
				defer engine.Close()
				coll := client.Database(benchNS[0]).Collection(benchNS[1])
				commits := iterations(b, bs.name, n)
				b.ResetTimer()
				start := cpuTime(b)
				for i := 0; i < commits; i++ {
					if err := op(ctx, coll, n, i); err != nil {
						b.Fatal(err)
					}
				}
				report(b, commits, cpuTime(b)-start)
			})
		}
	}
}
