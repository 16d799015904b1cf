package outbox_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/godwit-dev/godwit/outbox"
)

// BenchmarkOutage reproduces issue 19: 1 KiB events appended in batches of
// 500 at a fixed rate, a drainer reading pages of 1,000 and acking each
// page, no size bound; the sink is down for a while, then back. It runs the
// godwit outbox and plain bbolt with the old single-file pattern (delete the
// acked prefix, default freelist) one after the other in the same run and
// prints, per window, the append and drain rates, the p99 commit latency,
// the backlog, segments or free pages and the size of the files; then a
// side-by-side summary with the catch-up time (sink back → backlog gone),
// the file size after the drain and the time to reopen.
//
// One pass is the whole scenario: run it with -benchtime=1x. Parameters
// (environment, Go durations):
//
//	GODWIT_OUTAGE_RATE    events/s appended          (default 10000)
//	GODWIT_OUTAGE_WARM    drainer on before the outage (5s)
//	GODWIT_OUTAGE_DOWN    sink down                   (10s)
//	GODWIT_OUTAGE_AFTER   longest catch-up waited for (60s)
//	GODWIT_OUTAGE_WINDOW  reporting window            (2s)
//	GODWIT_OUTAGE_STORES  which stores, in order      (godwit,bbolt)
//
// The stores: godwit (this package), bbolt (the single-file pattern with
// bbolt's defaults, as the outbox was before segments) and bbolt-map (the
// same with NoFreelistSync and the map freelist, etcd's options).
//
// The runs: RATE=50000 DOWN=30s, and RATE=75000 DOWN=60s AFTER=180s.
func BenchmarkOutage(b *testing.B) {
	p := outageParams{
		rate:   envInt("GODWIT_OUTAGE_RATE", 10000),
		warm:   envDuration("GODWIT_OUTAGE_WARM", 5*time.Second),
		down:   envDuration("GODWIT_OUTAGE_DOWN", 10*time.Second),
		after:  envDuration("GODWIT_OUTAGE_AFTER", 60*time.Second),
		window: envDuration("GODWIT_OUTAGE_WINDOW", 2*time.Second),
		batch:  500, page: 1000, size: benchEventSize,
	}
	stores := strings.Split(envString("GODWIT_OUTAGE_STORES", "godwit,bbolt"), ",")
	var results []outageResult
	for _, name := range stores {
		b.Run("store="+name, func(b *testing.B) {
			for b.Loop() {
				r := runOutage(b, name, p)
				results = append(results, r)
				b.ReportMetric(r.catchUp.Seconds(), "catchup-s")
				b.ReportMetric(100*r.minAppendRate/float64(p.rate), "min-append-%")
				b.ReportMetric(r.drainRate/float64(p.rate), "drain/arrival")
			}
		})
	}
	printOutageSummary(p, results)
}

type outageParams struct {
	rate                      int
	warm, down, after, window time.Duration
	batch, page, size         int
}

type outageStore interface {
	append(batch [][]byte, token []byte) error
	read(after uint64, n int) (last uint64, count int, err error)
	wait(ctx context.Context, after uint64) error
	ack(seq uint64) error
	// state returns the bytes of the store's files and a word on what
	// retention costs it: segments or free pages.
	state() (fileBytes int64, note string)
	close() error
	reopen() (time.Duration, error)
}

type outageResult struct {
	store                      string
	load                       string
	backlogAtReturn            uint64
	filePeak, fileAfter        int64
	catchUp                    time.Duration // -1: not within the limit
	minAppendRate, appendAfter float64       // events/s: worst window; mean after the sink returned
	drainRate                  float64       // events/s from the sink's return to the backlog's end
	p99Worst                   time.Duration // worst window's p99 commit latency
	reopen                     time.Duration
	noteAfter                  string
}

func runOutage(b *testing.B, name string, p outageParams) outageResult {
	dir := b.TempDir()
	var st outageStore
	var err error
	switch name {
	case "godwit":
		st, err = openGodwitStore(dir)
	case "bbolt", "bbolt-map":
		st, err = openPlainStore(dir, name == "bbolt-map")
	default:
		b.Fatalf("GODWIT_OUTAGE_STORES: unknown store %q (godwit, bbolt or bbolt-map)", name)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer st.close()
	res := outageResult{store: name, load: loadAvg(), catchUp: -1}
	fmt.Printf("\n%s: %d events/s in batches of %d, drainer pages of %d, warm %s, sink down %s; load average %s\n",
		name, p.rate, p.batch, p.page, p.warm, p.down, res.load)
	fmt.Printf("%7s %-6s %10s %10s %9s %10s %10s %s\n", "t", "phase", "append/s", "drain/s", "p99 ms", "backlog", "files MB", "retention")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var appended, drained atomic.Uint64 // events
	var latMu sync.Mutex
	var lats []time.Duration
	var sinkDown atomic.Bool
	// The sink's return and the moment the backlog was gone, in
	// nanoseconds since start; the drainer notices the latter between two
	// windows.
	var returnedAt, caughtUpAt atomic.Int64
	sinkUp := make(chan struct{})
	var wg sync.WaitGroup
	var appendErr, drainErr error

	batch := events(0, p.batch, p.size)
	interval := time.Duration(float64(time.Second) * float64(p.batch) / float64(p.rate))
	start := time.Now()
	wg.Add(2)
	go func() { // capture at a fixed rate; when behind, it appends back to back
		defer wg.Done()
		next := start
		for ctx.Err() == nil {
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			next = next.Add(interval)
			t0 := time.Now()
			n := appended.Load() + uint64(p.batch)
			if err := st.append(batch, []byte(strconv.FormatUint(n, 10))); err != nil {
				appendErr = err
				cancel()
				return
			}
			lat := time.Since(t0)
			appended.Store(n)
			latMu.Lock()
			lats = append(lats, lat)
			latMu.Unlock()
		}
	}()
	go func() { // the sink: read a page, ack it
		defer wg.Done()
		var acked uint64
		for ctx.Err() == nil {
			if sinkDown.Load() {
				select {
				case <-sinkUp:
				case <-ctx.Done():
					return
				}
			}
			last, n, err := st.read(acked, p.page)
			if err == nil && n == 0 {
				err = st.wait(ctx, acked)
				if ctx.Err() != nil {
					return
				}
			} else if err == nil {
				err = st.ack(last)
				acked = last
				d := drained.Add(uint64(n))
				if returnedAt.Load() > 0 && caughtUpAt.Load() == 0 && appended.Load()-d <= uint64(p.batch+p.page) {
					caughtUpAt.Store(int64(time.Since(start)))
				}
			}
			if err != nil {
				drainErr = err
				cancel()
				return
			}
		}
	}()

	phase := "warm"
	var returned time.Time
	var prevA, prevD, drainedAtReturn uint64
	var afterWindows, afterAppended float64
	tick := time.NewTicker(p.window)
	defer tick.Stop()
	prevT := start
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case now := <-tick.C:
			el := now.Sub(start)
			a, d := appended.Load(), drained.Load()
			secs := now.Sub(prevT).Seconds()
			aRate, dRate := float64(a-prevA)/secs, float64(d-prevD)/secs
			latMu.Lock()
			p99 := percentile(lats, 0.99)
			lats = lats[:0]
			latMu.Unlock()
			backlog := a - d
			files, note := st.state()
			fmt.Printf("%6.0fs %-6s %10.0f %10.0f %9.1f %10d %10.0f %s\n", el.Seconds(), phase, aRate, dRate,
				float64(p99.Microseconds())/1000, backlog, float64(files)/(1<<20), note)
			if phase != "warm" { // the warm-up fills caches and files: not held against a store
				res.minAppendRate = minNonZero(res.minAppendRate, aRate)
			}
			res.p99Worst = max(res.p99Worst, p99)
			if phase == "down" {
				res.backlogAtReturn = backlog
			}
			res.filePeak = max(res.filePeak, files)
			if phase == "after" {
				afterWindows += secs
				afterAppended += float64(a - prevA)
			}
			prevA, prevD, prevT = a, d, now
			switch {
			case phase == "warm" && el >= p.warm:
				phase = "down"
				sinkDown.Store(true)
			case phase == "down" && el >= p.warm+p.down:
				phase, returned, drainedAtReturn = "after", now, d
				returnedAt.Store(int64(now.Sub(start)))
				sinkDown.Store(false)
				close(sinkUp)
			case phase == "after" && caughtUpAt.Load() > 0:
				res.catchUp = time.Duration(caughtUpAt.Load() - returnedAt.Load())
				res.drainRate = (float64(res.backlogAtReturn) + float64(p.rate)*res.catchUp.Seconds()) / res.catchUp.Seconds()
				cancel()
			case phase == "after" && now.Sub(returned) >= p.after:
				res.drainRate = float64(d-drainedAtReturn) / now.Sub(returned).Seconds()
				cancel()
			}
		}
	}
	wg.Wait()
	if appendErr != nil || drainErr != nil {
		b.Fatalf("append: %v; drain: %v", appendErr, drainErr)
	}
	if afterWindows > 0 {
		res.appendAfter = afterAppended / afterWindows
	}
	res.fileAfter, res.noteAfter = st.state()
	if res.reopen, err = st.reopen(); err != nil {
		b.Fatal(err)
	}
	res.load += " → " + loadAvg()
	return res
}

func printOutageSummary(p outageParams, results []outageResult) {
	if len(results) == 0 {
		return
	}
	fmt.Printf("\nsummary: %d events/s of %d B, sink down %s\n", p.rate, p.size, p.down)
	row := func(label string, f func(r outageResult) string) {
		fmt.Printf("%-36s", label)
		for _, r := range results {
			fmt.Printf(" %24s", f(r))
		}
		fmt.Println()
	}
	row("", func(r outageResult) string { return r.store })
	row("load average (start → end)", func(r outageResult) string { return r.load })
	row("backlog at the sink's return", func(r outageResult) string { return strconv.FormatUint(r.backlogAtReturn, 10) })
	row("appends, worst window (% of rate)", func(r outageResult) string {
		return fmt.Sprintf("%.0f/s (%.0f%%)", r.minAppendRate, 100*r.minAppendRate/float64(p.rate))
	})
	row("appends while catching up", func(r outageResult) string { return fmt.Sprintf("%.0f/s", r.appendAfter) })
	row("drained while catching up (× arrival)", func(r outageResult) string {
		return fmt.Sprintf("%.0f/s (%.1f×)", r.drainRate, r.drainRate/float64(p.rate))
	})
	row("catch-up time", func(r outageResult) string {
		if r.catchUp < 0 {
			return "not within " + p.after.String()
		}
		return r.catchUp.Round(100 * time.Millisecond).String()
	})
	row("worst p99 commit latency", func(r outageResult) string { return r.p99Worst.Round(100 * time.Microsecond).String() })
	row("files, peak", func(r outageResult) string { return fmt.Sprintf("%.0f MB", float64(r.filePeak)/(1<<20)) })
	row("files after the drain", func(r outageResult) string {
		return fmt.Sprintf("%.0f MB, %s", float64(r.fileAfter)/(1<<20), r.noteAfter)
	})
	row("reopen after the drain", func(r outageResult) string { return r.reopen.Round(100 * time.Microsecond).String() })
}

// godwitStore is the outbox under test.
type godwitStore struct {
	path string
	ob   *outbox.Outbox
}

func openGodwitStore(dir string) (*godwitStore, error) {
	s := &godwitStore{path: filepath.Join(dir, "outbox.db")}
	var err error
	if s.ob, err = outbox.Open(s.path, outbox.Options{MaxBytes: -1}); err != nil {
		return nil, err
	}
	_, err = s.ob.RegisterSink(outbox.SinkCursor("sink"))
	return s, err
}

func (s *godwitStore) append(batch [][]byte, token []byte) error {
	_, err := s.ob.Append(context.Background(), "src", batch, outbox.Checkpoint{Token: token, Fingerprint: "fp"})
	return err
}

func (s *godwitStore) read(after uint64, n int) (uint64, int, error) {
	recs, err := s.ob.Read(after, n, 0)
	if err != nil || len(recs) == 0 {
		return after, 0, err
	}
	return recs[len(recs)-1].Seq, len(recs), nil
}

func (s *godwitStore) wait(ctx context.Context, after uint64) error { return s.ob.Wait(ctx, after) }
func (s *godwitStore) ack(seq uint64) error                         { return s.ob.Ack(outbox.SinkCursor("sink"), seq, 1) }
func (s *godwitStore) close() error                                 { return s.ob.Close(context.Background()) }

func (s *godwitStore) state() (int64, string) {
	st := s.ob.Stats()
	return st.FileBytes, fmt.Sprintf("%d segments", st.Segments)
}

func (s *godwitStore) reopen() (time.Duration, error) {
	if err := s.ob.Close(context.Background()); err != nil {
		return 0, err
	}
	t0 := time.Now()
	ob, err := outbox.Open(s.path, outbox.Options{MaxBytes: -1})
	d := time.Since(t0)
	if err == nil {
		s.ob = ob
	}
	return d, err
}

// plainStore is what the outbox did before segments, in plain bbolt: one
// file, one Update per append (events and a checkpoint), and each ack
// deletes the acked prefix and moves a cursor in one Update.
type plainStore struct {
	path   string
	opts   *bolt.Options
	db     *bolt.DB
	notify chan struct{}
	mu     sync.Mutex
}

var (
	plainEvents = []byte("events")
	plainMeta   = []byte("meta")
)

func openPlainStore(dir string, mapFreelist bool) (*plainStore, error) {
	s := &plainStore{path: filepath.Join(dir, "plain.db"), notify: make(chan struct{}), opts: &bolt.Options{}}
	if mapFreelist {
		s.opts = &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	}
	var err error
	if s.db, err = bolt.Open(s.path, 0o600, s.opts); err != nil {
		return nil, err
	}
	return s, s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{plainEvents, plainMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *plainStore) append(batch [][]byte, token []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(plainEvents)
		b.FillPercent = 1.0
		seq := b.Sequence()
		keys := make([]byte, 0, 8*len(batch))
		for _, e := range batch {
			seq++
			keys = binary.BigEndian.AppendUint64(keys, seq)
			if err := b.Put(keys[len(keys)-8:], e); err != nil {
				return err
			}
		}
		if err := b.SetSequence(seq); err != nil {
			return err
		}
		return tx.Bucket(plainMeta).Put([]byte("token"), token)
	})
	s.mu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return err
}

func (s *plainStore) read(after uint64, n int) (uint64, int, error) {
	last, count := after, 0
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(plainEvents).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && count < n; k, v = c.Next() {
			_ = append([]byte(nil), v...) // a sink gets its own copy, as Read gives
			last, count = binary.BigEndian.Uint64(k), count+1
		}
		return nil
	})
	return last, count, err
}

func (s *plainStore) wait(ctx context.Context, after uint64) error {
	s.mu.Lock()
	ch := s.notify
	s.mu.Unlock()
	var last uint64
	_ = s.db.View(func(tx *bolt.Tx) error { last = tx.Bucket(plainEvents).Sequence(); return nil })
	if last > after {
		return nil
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return nil
}

func (s *plainStore) ack(seq uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(plainEvents).Cursor()
		var key []byte
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq; k, _ = c.Seek(key) {
			key = append(key[:0], k...)
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return tx.Bucket(plainMeta).Put([]byte("acked"), binary.BigEndian.AppendUint64(nil, seq))
	})
}

func (s *plainStore) close() error { return s.db.Close() }

func (s *plainStore) state() (int64, string) {
	st := s.db.Stats()
	var size int64
	if fi, err := os.Stat(s.path); err == nil {
		size = fi.Size()
	}
	return size, fmt.Sprintf("%d free pages", st.FreePageN+st.PendingPageN)
}

func (s *plainStore) reopen() (time.Duration, error) {
	if err := s.db.Close(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	db, err := bolt.Open(s.path, 0o600, s.opts)
	if err == nil {
		// bbolt reads the freelist on the first write transaction.
		err = db.Update(func(*bolt.Tx) error { return nil })
	}
	d := time.Since(t0)
	if err == nil {
		s.db = db
	}
	return d, err
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func minNonZero(a, b float64) float64 {
	if a == 0 || b < a {
		return b
	}
	return a
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// BenchmarkOpen measures opening an outbox that holds a backlog of
// GODWIT_OPEN_MIB MiB (default 256) of 1 KiB events, beside plain bbolt
// holding the same events with the same drain history (a third of them
// acked and deleted, so its freelist is not empty), with bbolt's defaults
// and with etcd's options (NoFreelistSync, map freelist), whose open
// rebuilds the freelist by scanning the file. Issue 19's figure is 5 GiB:
// GODWIT_OPEN_MIB=5120; GODWIT_OPEN_STORES picks the stores (default
// godwit,bbolt,bbolt-map).
func BenchmarkOpen(b *testing.B) {
	mib := envInt("GODWIT_OPEN_MIB", 256)
	n := mib << 10 // 1 KiB events
	batch := events(0, 1000, benchEventSize)
	for _, name := range strings.Split(envString("GODWIT_OPEN_STORES", "godwit,bbolt,bbolt-map"), ",") {
		b.Run("store="+name, func(b *testing.B) {
			dir := b.TempDir()
			var st outageStore
			var err error
			if name == "godwit" {
				st, err = openGodwitStore(dir)
			} else {
				st, err = openPlainStore(dir, name == "bbolt-map")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer func() { st.close() }()
			// Append 1.5 n, ack the first half n: a backlog of n after an
			// outage that retention partly drained.
			for i := 0; i < n*3/2; i += len(batch) {
				if err := st.append(batch, []byte(strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
				if i >= len(batch) && i <= n/2 {
					if err := st.ack(uint64(i)); err != nil {
						b.Fatal(err)
					}
				}
			}
			files, note := st.state()
			var total time.Duration
			for b.Loop() {
				d, err := st.reopen()
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/open")
			b.ReportMetric(float64(files)/(1<<20), "file-MB")
			fmt.Printf("%s: backlog of %d MiB of events, files %.0f MB (%s), load average %s\n", name, mib, float64(files)/(1<<20), note, loadAvg())
		})
	}
}
