package boltstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/mongodb/boltstore"
)

// The crash test runs a writer in a child process (this test binary,
// re-executed) that commits transactions through package mongodb's
// lungo:PATH engine and prints "ack N" after commit N returned, and kills it
// with SIGKILL at random moments.
const childEnv = "GODWIT_BOLTSTORE_CHILD"

// keep is how many of the newest items each commit leaves in shop.items.
const keep = 10

var (
	itemsNS   = lungo.Handle{"shop", "items"}
	counterNS = lungo.Handle{"shop", "counter"}
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		if err := runWriter(path); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runWriter commits forever: commit n inserts item n (with a unique u),
// deletes item n-keep and sets the counter to n, in one transaction.
func runWriter(path string) error {
	ctx := context.Background()
	// A small oplog that lungo trims while the writer runs.
	mongodb.EmbeddedOplogSize = 50
	mongodb.EmbeddedMinOplogAge = time.Nanosecond
	conn, err := mongodb.Open(ctx, "lungo:"+path, "")
	if err != nil {
		return err
	}
	db := conn.Client.Database("shop")
	items, counter := db.Collection("items"), db.Collection("counter")
	if _, err := items.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "u", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
		return err
	}
	var c struct{ N int64 }
	if err := counter.FindOne(ctx, bson.M{"_id": "c"}).Decode(&c); err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return err
	}
	fmt.Println("ready")
	for n := c.N + 1; ; n++ {
		err := conn.Client.UseSession(ctx, func(sc lungo.ISessionContext) error {
			_, err := sc.WithTransaction(sc, func(tc lungo.ISessionContext) (any, error) {
				if _, err := items.InsertOne(tc, bson.M{"_id": n, "u": fmt.Sprint("u", n)}); err != nil {
					return nil, err
				}
				if _, err := items.DeleteOne(tc, bson.M{"_id": n - keep}); err != nil {
					return nil, err
				}
				_, err := counter.UpdateOne(tc, bson.M{"_id": "c"}, bson.M{"$set": bson.M{"n": n}}, options.Update().SetUpsert(true))
				return nil, err
			})
			return err
		})
		if err != nil {
			return err
		}
		fmt.Println("ack", n)
	}
}

func TestStore_SurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	path := filepath.Join(t.TempDir(), "source.lungo")
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var acked int64
	for run := 1; run <= 6; run++ {
		killAt := acked + 1 + rnd.Int64N(150)
		last := runWriterUntil(t, path, killAt, run == 1)
		if last > acked {
			acked = last
		}
		checkAfterCrash(t, path, acked)
	}
}

// runWriterUntil starts the writer and kills it with SIGKILL when it
// acknowledged commit killAt. It returns the last acknowledged commit.
func runWriterUntil(t *testing.T, path string, killAt int64, checkLock bool) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last int64
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			if checkLock {
				// A second process on the same file gets a clear error.
				_, err := mongodb.Open(context.Background(), "lungo:"+path, "")
				if !errors.Is(err, boltstore.ErrLocked) || !strings.Contains(err.Error(), path) {
					_ = cmd.Process.Kill()
					t.Fatalf("open while the writer runs = %v, want ErrLocked naming %s", err, path)
				}
			}
			continue
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(line, "ack "), 10, 64)
		if err != nil {
			_ = cmd.Process.Kill()
			t.Fatalf("child printed %q", line)
		}
		last = n
		if n >= killAt && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("writer exited before it was killed (%v): %s", err, stderr.String())
	}
	return last
}

// checkAfterCrash reopens the file and checks that every acknowledged commit
// is there, each commit whole, the indexes agree with the documents, and the
// oplog is a continuous history.
func checkAfterCrash(t *testing.T, path string, acked int64) {
	t.Helper()
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cat, err := s.Load() // rebuilds the indexes: fails on a duplicate u
	if err != nil {
		t.Fatal(err)
	}
	counter := cat.Namespaces[counterNS]
	if counter == nil || len(counter.Documents.List()) != 1 {
		t.Fatalf("counter missing after acknowledging commit %d", acked)
	}
	n, _ := bsonkit.Get(counter.Documents.List()[0], "n").(int64)
	// The commit after the last acknowledged one may be durable too (killed
	// before it printed its ack).
	if n != acked && n != acked+1 {
		t.Fatalf("counter is %d after acknowledging commit %d", n, acked)
	}

	items := cat.Namespaces[itemsNS]
	var want []int64
	for i := max(1, n-keep+1); i <= n; i++ {
		want = append(want, i)
	}
	if len(items.Documents.List()) != len(want) {
		t.Fatalf("shop.items has %d documents at commit %d, want %d", len(items.Documents.List()), n, len(want))
	}
	for i, doc := range items.Documents.List() {
		id, _ := bsonkit.Get(doc, "_id").(int64)
		if id != want[i] || bsonkit.Get(doc, "u") != fmt.Sprint("u", id) {
			t.Fatalf("shop.items document %d is %v, want _id %d", i, *doc, want[i])
		}
	}
	for _, name := range []string{"_id_", "u_1"} {
		index := items.Indexes[name]
		if index == nil {
			t.Fatalf("index %s missing", name)
		}
		if got := len(index.List()); got != len(items.Documents.List()) {
			t.Fatalf("index %s has %d entries for %d documents", name, got, len(items.Documents.List()))
		}
	}

	// The inserts into shop.items in the oplog are consecutive and end with
	// the last commit.
	var inserted []int64
	for _, e := range cat.Namespaces[lungo.Oplog].Documents.List() {
		if bsonkit.Get(e, "ns.coll") == "items" && bsonkit.Get(e, "operationType") == "insert" {
			id, _ := bsonkit.Get(e, "documentKey._id").(int64)
			inserted = append(inserted, id)
		}
	}
	if len(inserted) == 0 || inserted[len(inserted)-1] != n {
		t.Fatalf("oplog does not end with commit %d: %v", n, inserted)
	}
	for i := 1; i < len(inserted); i++ {
		if inserted[i] != inserted[i-1]+1 {
			t.Fatalf("oplog has a gap: insert %d follows %d", inserted[i], inserted[i-1])
		}
	}
}
