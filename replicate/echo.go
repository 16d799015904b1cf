package replicate

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/capture"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// Collections in godwit's metadata database.
const (
	// MarkersCollection holds the origin markers: one document per applied
	// group, inserted first and deleted last in the group's transaction.
	MarkersCollection = capture.MarkersCollection
	// StateCollection holds each pipeline's initial-sync progress and
	// applied positions.
	StateCollection = "replicate_state"
	// VersionsCollection holds, for two-way pipelines, the version (origin
	// cluster time and source) of each document's current state.
	VersionsCollection = "replicate_versions"
)

// Marker kinds.
const (
	markerDML   = "dml"   // a transaction of document changes
	markerDDL   = "ddl"   // one DDL operation, applied outside a transaction
	markerFence = "fence" // a write whose only purpose is to be observed
)

// groupTimeout bounds how long (in cluster seconds) a marker may stay open
// in the filter. A transaction's marker always closes within its transaction;
// a DDL marker whose pipeline crashed between insert and delete would
// otherwise hold capture's checkpoint forever.
const groupTimeout = 60

// EchoFilter recognises the replicator's own writes in the change stream of a
// replication target, so that capture drops them: install it in the
// capture.Source of every deployment that some pipeline writes to. It
// implements capture.EchoFilter and must see every event of the stream, in
// order, godwit's metadata database included.
//
// For two-way pipelines it also tracks the target's local writes that no
// pipeline has accounted for yet (see WithPeer).
type EchoFilter struct {
	metadataDB string

	mu      sync.Mutex
	group   *openGroup           // the marked transaction being dropped
	ddl     map[string]ddlExpect // open DDL markers by marker id
	seen    primitive.Timestamp  // cluster time of the last observed event
	fences  map[string]int64     // fence id → last observed counter
	changed chan struct{}        // closed and replaced whenever seen or fences move
	dropped uint64

	// Local-write tracking for two-way pipelines: writes to namespaces
	// some pipeline writes to (interests), not yet in the version table.
	interests []func(change.Namespace) bool
	pending   map[string]pendingWrite
}

type openGroup struct {
	id      string
	lsid    bson.Raw
	txn     int64
	hasTxn  bool
	started primitive.Timestamp
}

type ddlExpect struct {
	ns      change.Namespace
	op      string
	started primitive.Timestamp
}

type pendingWrite struct {
	ns change.Namespace
	id bson.RawValue
	ts primitive.Timestamp
}

// NewEchoFilter returns a filter for a deployment whose godwit metadata
// database is metadataDB.
func NewEchoFilter(metadataDB string) *EchoFilter {
	if metadataDB == "" {
		metadataDB = "godwit"
	}
	return &EchoFilter{metadataDB: metadataDB, ddl: map[string]ddlExpect{},
		fences: map[string]int64{}, changed: make(chan struct{}), pending: map[string]pendingWrite{}}
}

// Observe implements capture.EchoFilter: it reports whether ev is the
// replicator's own write (or godwit metadata) and must not be captured.
func (f *EchoFilter) Observe(ev *change.Event) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.advance(ev.ClusterTime)
	f.expire(ev.ClusterTime)

	if ev.NS.DB == f.metadataDB {
		if ev.NS.Coll == MarkersCollection {
			f.marker(ev)
		}
		return true
	}
	if g := f.group; g != nil {
		// On a real server, the events of the marked transaction share the
		// marker's lsid and txnNumber; others are not ours even while the
		// group is open. The embedded engine has neither, and its
		// transactions are contiguous in the oplog.
		if !g.hasTxn || ev.HasTxn && ev.TxnNumber == g.txn && bytes.Equal(ev.LSID, g.lsid) {
			f.dropped++
			return true
		}
	}
	for _, x := range f.ddl {
		if x.matches(ev) {
			f.dropped++
			return true
		}
	}
	if len(f.interests) > 0 && change.IsDML(ev.OperationType) && f.interested(ev.NS) {
		if id, ok := ev.DocumentID(); ok {
			f.noteLocal(ev.NS, id, ev.ClusterTime)
		}
	}
	return false
}

// Pending implements capture.EchoFilter: capture must not checkpoint inside a
// marked group, or a restart would resume after the marker and capture the
// rest of the group as user writes.
func (f *EchoFilter) Pending() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.group != nil || len(f.ddl) > 0
}

// Dropped returns how many events the filter dropped as the replicator's own.
func (f *EchoFilter) Dropped() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dropped
}

func (f *EchoFilter) marker(ev *change.Event) {
	idv, ok := ev.DocumentID()
	if !ok {
		return
	}
	id := markerKey(idv)
	switch ev.OperationType {
	case change.OpInsert, change.OpUpdate, change.OpReplace:
		doc := ev.FullDocument
		if doc == nil {
			if ev.UpdateDescription != nil {
				doc = ev.UpdateDescription.UpdatedFields
			} else {
				return
			}
		}
		kind, _ := doc.Lookup("kind").StringValueOK()
		switch kind {
		case markerDML:
			if ev.OperationType == change.OpInsert {
				f.group = &openGroup{id: id, lsid: append(bson.Raw(nil), ev.LSID...), txn: ev.TxnNumber, hasTxn: ev.HasTxn, started: ev.ClusterTime}
			}
		case markerDDL:
			op, _ := doc.Lookup("op").StringValueOK()
			var ns change.Namespace
			if d, ok := doc.Lookup("ns").DocumentOK(); ok {
				ns.DB, _ = d.Lookup("db").StringValueOK()
				ns.Coll, _ = d.Lookup("coll").StringValueOK()
			}
			f.ddl[id] = ddlExpect{ns: ns, op: op, started: ev.ClusterTime}
		case markerFence:
			if n, ok := doc.Lookup("n").AsInt64OK(); ok && n > f.fences[id] {
				f.fences[id] = n
			}
		}
	case change.OpDelete:
		if f.group != nil && f.group.id == id {
			f.group = nil
		}
		delete(f.ddl, id)
	}
}

// expire closes markers open for longer than groupTimeout.
func (f *EchoFilter) expire(now primitive.Timestamp) {
	if now.T == 0 {
		return
	}
	if g := f.group; g != nil && now.T > g.started.T+groupTimeout {
		f.group = nil
	}
	for id, x := range f.ddl {
		if now.T > x.started.T+groupTimeout {
			delete(f.ddl, id)
		}
	}
}

func (f *EchoFilter) advance(ts primitive.Timestamp) {
	if ts.After(f.seen) {
		f.seen = ts
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// matches reports whether ev is the DDL a marker announced. A database-level
// marker (drop of a database) matches every drop in it.
func (x ddlExpect) matches(ev *change.Event) bool {
	if ev.NS.DB != x.ns.DB {
		return false
	}
	switch x.op {
	case change.OpDropDatabase:
		return ev.OperationType == change.OpDrop || ev.OperationType == change.OpDropDatabase
	case change.OpRename:
		// Emulated renames on the embedded engine write documents into the
		// new collection and drop the old one.
		return ev.NS.Coll == x.ns.Coll && (ev.OperationType == change.OpRename || ev.OperationType == change.OpDrop)
	case change.OpCreateIndexes:
		// The replicator creates a missing collection before its indexes.
		return ev.NS.Coll == x.ns.Coll && (ev.OperationType == change.OpCreate || ev.OperationType == change.OpCreateIndexes)
	}
	return ev.OperationType == x.op && ev.NS.Coll == x.ns.Coll
}

func markerKey(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	if oid, ok := v.ObjectIDOK(); ok {
		return oid.Hex()
	}
	return string(v.Value)
}

// waitSeen blocks until the filter has observed an event at or after ts, ctx
// ends, or d passes (ErrFence).
func (f *EchoFilter) waitSeen(ctx context.Context, ts primitive.Timestamp, d time.Duration) error {
	return f.wait(ctx, d, func() bool { return !ts.After(f.seen) },
		func() string { return fmt.Sprintf("observed up to %v, target at %v", f.seen, ts) })
}

// waitFence blocks until the filter has observed fence id at counter n.
func (f *EchoFilter) waitFence(ctx context.Context, id string, n int64, d time.Duration) error {
	return f.wait(ctx, d, func() bool { return f.fences[id] >= n },
		func() string { return fmt.Sprintf("fence %s observed at %d, waiting for %d", id, f.fences[id], n) })
}

func (f *EchoFilter) wait(ctx context.Context, d time.Duration, done func() bool, state func() string) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		f.mu.Lock()
		ok, ch := done(), f.changed
		msg := ""
		if !ok {
			msg = state()
		}
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%w: %s; is the target's capture running and watching the whole deployment?", ErrFence, msg)
		}
	}
}

// Local-write tracking.

// pendingKey identifies a document: its namespace and the hex of its _id's
// BSON type and value. It is also the _id of the document's entry in the
// version table (the embedded engine cannot replace documents whose _id is
// itself a document).
func pendingKey(ns change.Namespace, id bson.RawValue) string {
	return ns.String() + ":" + hex.EncodeToString([]byte{byte(id.Type)}) + hex.EncodeToString(id.Value)
}

func (f *EchoFilter) noteLocal(ns change.Namespace, id bson.RawValue, ts primitive.Timestamp) {
	k := pendingKey(ns, id)
	if p, ok := f.pending[k]; ok && !ts.After(p.ts) {
		return
	}
	f.pending[k] = pendingWrite{ns: ns, id: bson.RawValue{Type: id.Type, Value: append([]byte(nil), id.Value...)}, ts: ts}
}

func (f *EchoFilter) interested(ns change.Namespace) bool {
	for _, fn := range f.interests {
		if fn(ns) {
			return true
		}
	}
	return false
}

// trackFrom turns on tracking of local writes to the namespaces interest
// accepts, and seeds it with the source's events still in the outbox: they
// were observed by an earlier process, and their versions may not have
// reached the target's version table yet.
func (f *EchoFilter) trackFrom(ob *outbox.Outbox, sourceID string, interest func(change.Namespace) bool) error {
	f.mu.Lock()
	f.interests = append(f.interests, interest)
	f.mu.Unlock()
	if ob == nil {
		return nil
	}
	// Events retention deleted were acknowledged by every sink, this
	// pipeline included: their versions are in the version table already.
	retained := func() uint64 {
		st := ob.Stats()
		if st.Oldest == 0 { // nothing retained
			return st.Last
		}
		return st.Oldest - 1
	}
	after := retained()
	for {
		recs, err := ob.Read(after, 1000, 8<<20)
		if errors.Is(err, outbox.ErrBehindRetention) {
			if next := retained(); next > after {
				after = next
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("seed two-way conflict tracking from the outbox: %w", err)
		}
		if len(recs) == 0 {
			return nil
		}
		f.mu.Lock()
		for _, r := range recs {
			if r.Source != sourceID {
				continue
			}
			ev, err := change.Parse(r.Raw)
			if err != nil || !change.IsDML(ev.OperationType) || !interest(ev.NS) {
				continue
			}
			if id, ok := ev.DocumentID(); ok {
				f.noteLocal(ev.NS, id, ev.ClusterTime)
			}
		}
		f.mu.Unlock()
		after = recs[len(recs)-1].Seq
	}
}

// pendingSnapshot returns the local writes observed and not yet forgotten
// that interest accepts.
func (f *EchoFilter) pendingSnapshot(interest func(change.Namespace) bool) map[string]pendingWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]pendingWrite, len(f.pending))
	for k, p := range f.pending {
		if interest(p.ns) {
			out[k] = p
		}
	}
	return out
}

// forget drops entries once their version is durable in the target's
// version table (shared by every pipeline writing there), unless a newer
// local write to the document was observed meanwhile.
func (f *EchoFilter) forget(flushed map[string]pendingWrite) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, p := range flushed {
		if cur, ok := f.pending[k]; ok && !cur.ts.After(p.ts) {
			delete(f.pending, k)
		}
	}
}

// pendingFor returns the observed local writes among keys.
func (f *EchoFilter) pendingFor(keys []string) map[string]pendingWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]pendingWrite{}
	for _, k := range keys {
		if p, ok := f.pending[k]; ok {
			out[k] = p
		}
	}
	return out
}
