package devdb

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// session is a logical session (lsid) and its transaction.
//
// A transaction runs on a private copy-on-write transaction over a snapshot
// of the catalog (base), so it holds no lock while the client works: other
// clients keep writing. At commit its oplog entries are replayed onto the
// engine under its write lock, after checking that no document it wrote
// changed since the snapshot (else WriteConflict, retried by drivers).
type session struct {
	mu        sync.Mutex
	lsid      bson.D
	txnNumber int64
	txn       *lungo.Transaction // open transaction (private)
	base      *lungo.Catalog     // the snapshot txn started from
	committed bool               // txnNumber's transaction committed
	lastUse   time.Time
}

func (sess *session) abort(*lungo.Engine) {
	sess.txn, sess.base = nil, nil
}

func (s *Server) session(lsid bson.D) *session {
	id, _ := lookup(lsid, "id").(primitive.Binary)
	key := string(id.Data)
	s.sessionsMu.Lock()
	defer s.sessionsMu.Unlock()
	sess := s.sessions[key]
	if sess == nil {
		sess = &session{lsid: lsid}
		s.sessions[key] = sess
	}
	return sess
}

func (s *Server) endSessions(ids bson.A) {
	for _, v := range ids {
		d, ok := v.(bson.D)
		if !ok {
			continue
		}
		id, _ := lookup(d, "id").(primitive.Binary)
		s.sessionsMu.Lock()
		sess := s.sessions[string(id.Data)]
		delete(s.sessions, string(id.Data))
		s.sessionsMu.Unlock()
		if sess != nil {
			sess.mu.Lock()
			sess.abort(s.engine)
			sess.mu.Unlock()
		}
	}
}

// runInSession runs r inside its client transaction when the command is
// part of one (lsid + txnNumber + autocommit:false), else on its own.
func (s *Server) runInSession(r *request) (bson.D, error) {
	lsid, _ := lookup(r.cmd, "lsid").(bson.D)
	txnNumber, hasTxn := asInt(lookup(r.cmd, "txnNumber"))
	autocommit := lookup(r.cmd, "autocommit")
	if lsid == nil || !hasTxn || autocommit == nil || asBool(autocommit) {
		// Retryable writes carry lsid+txnNumber without autocommit: each
		// write command is atomic here, so a retry after a lost reply may
		// apply twice; godwit's writes are idempotent.
		return s.dispatch(r)
	}
	sess := s.session(lsid)
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.lastUse = time.Now()
	start := asBool(lookup(r.cmd, "startTransaction"))
	switch {
	case txnNumber < sess.txnNumber:
		return nil, errorf(codeTransactionTooOld, "txnNumber %d is older than the session's %d", txnNumber, sess.txnNumber)
	case start:
		if txnNumber == sess.txnNumber && (sess.txn != nil || sess.committed) {
			return nil, errorf(codeBadValue, "transaction %d was already started", txnNumber)
		}
		sess.abort(s.engine)
		sess.txnNumber, sess.committed = txnNumber, false
		snap, err := s.engine.Begin(s.ctx, false)
		if err != nil {
			return nil, s.engineError(err, lungo.Handle{}, nil)
		}
		sess.base = snap.Catalog()
		sess.txn = lungo.NewTransaction(sess.base)
	case txnNumber > sess.txnNumber:
		return nil, &cmdError{code: codeNoSuchTransaction, msg: "no transaction started with this txnNumber", labels: []string{labelTransient}}
	}
	switch r.name {
	case "commitTransaction":
		if sess.committed {
			return bson.D{}, nil // a retried commit
		}
		if sess.txn == nil {
			return nil, &cmdError{code: codeNoSuchTransaction, msg: "transaction was aborted", labels: []string{labelTransient}}
		}
		if err := s.commitTxn(sess); err != nil {
			return nil, err
		}
		return bson.D{}, nil
	case "abortTransaction":
		if sess.txn == nil {
			return nil, &cmdError{code: codeNoSuchTransaction, msg: "no transaction in progress", labels: []string{labelTransient}}
		}
		sess.abort(s.engine)
		return bson.D{}, nil
	}
	if sess.txn == nil {
		if sess.committed {
			return nil, errorf(codeBadValue, "transaction %d has been committed", txnNumber)
		}
		return nil, &cmdError{code: codeNoSuchTransaction, msg: "transaction was aborted", labels: []string{labelTransient}}
	}
	r.txn = sess.txn
	out, err := s.dispatch(r)
	if err != nil || lookup(out, "writeErrors") != nil {
		// A real server aborts the transaction on any error inside it.
		sess.abort(s.engine)
		if err != nil {
			var ce *cmdError
			if errors.As(err, &ce) && ce.code != codeDuplicateKey {
				ce.labels = append(ce.labels, labelTransient)
			}
		}
	}
	return out, err
}

func (s *Server) commitTxn(sess *session) error {
	txn, base := sess.txn, sess.base
	sess.txn, sess.base = nil, nil
	entries := txn.Catalog().Namespaces[lungo.Oplog].Documents.List()[base.Namespaces[lungo.Oplog].Documents.Len():]
	if len(entries) == 0 {
		sess.committed = true // read-only
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.TransactionLifetime)
	defer cancel()
	live, err := s.engine.Begin(ctx, true)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return &cmdError{code: codeWriteConflict, msg: "write conflict: the write lock stayed busy", labels: []string{labelTransient}}
		}
		return s.engineError(err, lungo.Handle{}, nil)
	}
	defer s.engine.Abort(live)
	before := lastOplogTime(live.Catalog())
	if live.Catalog() != base {
		if err := conflicts(base, live.Catalog(), entries); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := replay(live, e); err != nil {
			return err
		}
	}
	// The transaction's oplog entries carry its lsid and txnNumber, so
	// its change events do (as a real server's) also when they are read
	// after devdb restarted. The entries were created by this commit and
	// are not shared with any committed catalog yet.
	oplog := live.Catalog().Namespaces[lungo.Oplog].Documents.List()
	for i := len(oplog) - 1; i >= 0; i-- {
		if ts, _ := bsonkit.Get(oplog[i], "clusterTime").(primitive.Timestamp); !before.Before(ts) {
			break
		}
		*oplog[i] = append(*oplog[i], bson.E{Key: "lsid", Value: sess.lsid}, bson.E{Key: "txnNumber", Value: sess.txnNumber})
	}
	if err := s.engine.Commit(live); err != nil {
		return s.engineError(err, lungo.Handle{}, nil)
	}
	sess.committed = true
	return nil
}

// entryTarget returns the namespace and document key of an oplog entry.
func entryTarget(e bsonkit.Doc) (lungo.Handle, any, bool) {
	db, _ := bsonkit.Get(e, "ns.db").(string)
	coll, _ := bsonkit.Get(e, "ns.coll").(string)
	id := bsonkit.Get(e, "documentKey._id")
	return lungo.Handle{db, coll}, id, id != bsonkit.Missing
}

// conflicts reports WriteConflict when a document (or collection) the
// transaction wrote changed between its snapshot and now. Committed
// documents are immutable and replaced on change, so comparing pointers
// says whether one changed.
func conflicts(base, now *lungo.Catalog, entries bsonkit.List) error {
	for _, e := range entries {
		h, id, ok := entryTarget(e)
		if !ok {
			if base.Namespaces[h] != now.Namespaces[h] {
				return &cmdError{code: codeWriteConflict, msg: "write conflict: " + h.String() + " changed since the transaction started", labels: []string{labelTransient}}
			}
			continue
		}
		if byID(base, h, id) != byID(now, h, id) {
			return &cmdError{code: codeWriteConflict, msg: "write conflict: a document this transaction wrote in " + h.String() + " changed since the transaction started", labels: []string{labelTransient}}
		}
	}
	return nil
}

func byID(c *lungo.Catalog, h lungo.Handle, id any) bsonkit.Doc {
	ns := c.Namespaces[h]
	if ns == nil {
		return nil
	}
	res, err := ns.Find(&bson.D{{Key: "_id", Value: id}}, nil, 0, 1)
	if err != nil || len(res.Matched) == 0 {
		return nil
	}
	return res.Matched[0]
}

// replay applies one oplog entry of a transaction to the live engine, so
// the committed events are the ones the transaction's commands produced.
func replay(live *lungo.Transaction, e bsonkit.Doc) error {
	h, id, _ := entryTarget(e)
	op, _ := bsonkit.Get(e, "operationType").(string)
	full, _ := bsonkit.Get(e, "fullDocument").(bson.D)
	key := &bson.D{{Key: "_id", Value: id}}
	var err error
	switch op {
	case "insert":
		var res *lungo.Result
		res, err = live.Insert(h, bsonkit.List{&full}, true)
		if err == nil {
			err = res.Error
		}
	case "replace":
		_, err = live.Replace(h, key, nil, &full, false)
	case "update":
		upd := bson.D{}
		if set, ok := bsonkit.Get(e, "updateDescription.updatedFields").(bson.D); ok && len(set) > 0 {
			upd = append(upd, bson.E{Key: "$set", Value: inDocumentOrder(set, full)})
		}
		if removed, ok := bsonkit.Get(e, "updateDescription.removedFields").(bson.A); ok && len(removed) > 0 {
			unset := bson.D{}
			for _, f := range removed {
				if fs, ok := f.(string); ok {
					unset = append(unset, bson.E{Key: fs, Value: ""})
				}
			}
			upd = append(upd, bson.E{Key: "$unset", Value: unset})
		}
		var res *lungo.Result
		if res, err = live.Update(h, key, nil, &upd, 0, 1, false, nil); err == nil {
			if len(res.Modified) != 1 || bsonkit.Compare(*res.Modified[0], full) != 0 {
				err = errors.New("replaying an update did not reproduce its document")
			}
		}
	case "delete":
		_, err = live.Delete(h, key, nil, 0, 1)
	case "drop":
		err = live.Drop(h)
	case "dropDatabase":
		// Its collections' drop entries came first.
	default:
		err = errors.New("unknown oplog entry " + op)
	}
	if err != nil {
		return errorf(codeInternalError, "committing the transaction's %s on %s: %v", op, h.String(), err)
	}
	return nil
}

// inDocumentOrder returns an update's updatedFields in the order their
// paths appear in the updated document. The engine lists them sorted by
// name, but $set appends a field that did not exist: replayed by name,
// {s, f} added to a document would commit as {f, s}, not as the
// transaction wrote it. Sorted by their place in the result, every added
// field is appended in its final position.
func inDocumentOrder(set bson.D, full bson.D) bson.D {
	pos := make(map[string][]int, len(set))
	for _, f := range set {
		pos[f.Key] = pathPosition(full, f.Key)
	}
	out := slices.Clone(set)
	slices.SortStableFunc(out, func(a, b bson.E) int { return slices.Compare(pos[a.Key], pos[b.Key]) })
	return out
}

// pathPosition is the index of each element of a dotted path in doc (a
// field's place in its document, an array index); a path that is not there
// sorts last.
func pathPosition(doc bson.D, path string) []int {
	var out []int
	var cur any = doc
	for _, seg := range strings.Split(path, ".") {
		i := -1
		switch v := cur.(type) {
		case bson.D:
			i = slices.IndexFunc(v, func(e bson.E) bool { return e.Key == seg })
			if i >= 0 {
				cur = v[i].Value
			}
		case bson.A:
			if n, err := strconv.Atoi(seg); err == nil && n >= 0 && n < len(v) {
				i, cur = n, v[n]
			}
		}
		if i < 0 {
			return append(out, math.MaxInt)
		}
		out = append(out, i)
	}
	return out
}

// write runs fn in the request's transaction, or in one engine transaction
// committed when fn returns nil (fn records per-statement write errors in
// its reply and returns nil, so the statements before an error persist).
func (s *Server) write(r *request, fn func(txn *lungo.Transaction) error) error {
	if r.txn != nil {
		return fn(r.txn)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.TransactionLifetime+10*time.Second)
	defer cancel()
	txn, err := s.engine.Begin(ctx, true)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errorf(codeWriteConflict, "write conflict: a transaction held the write lock for too long")
		}
		return s.engineError(err, lungo.Handle{}, nil)
	}
	defer s.engine.Abort(txn)
	if err := fn(txn); err != nil {
		return err
	}
	if err := s.engine.Commit(txn); err != nil {
		return s.engineError(err, lungo.Handle{}, nil)
	}
	return nil
}

// read returns the transaction reads see: the client transaction, or a
// snapshot of the committed catalog. For readConcern level "snapshot" it
// sets r.atClusterTime to the snapshot's cluster time (sent back as
// atClusterTime); devdb keeps no history, so a later read asking for an
// older atClusterTime fails with SnapshotTooOld instead of reading newer
// data.
func (s *Server) read(r *request) (*lungo.Transaction, error) {
	if r.txn != nil {
		return r.txn, nil
	}
	txn, err := s.engine.Begin(s.ctx, false)
	if err != nil {
		return nil, s.engineError(err, lungo.Handle{}, nil)
	}
	rc, _ := lookup(r.cmd, "readConcern").(bson.D)
	if lookup(rc, "level") == "snapshot" {
		now := lastOplogTime(txn.Catalog())
		if at, ok := lookup(rc, "atClusterTime").(primitive.Timestamp); ok && at != now {
			return nil, errorf(codeSnapshotTooOld, "devdb keeps no history: cannot read at %d.%d, the data is at %d.%d", at.T, at.I, now.T, now.I)
		}
		r.atClusterTime = &now
	}
	return txn, nil
}

func lastOplogTime(c *lungo.Catalog) primitive.Timestamp {
	list := c.Namespaces[lungo.Oplog].Documents.List()
	if len(list) == 0 {
		return primitive.Timestamp{}
	}
	ts, _ := bsonkit.Get(list[len(list)-1], "clusterTime").(primitive.Timestamp)
	return ts
}

func firstOplogTime(c *lungo.Catalog) primitive.Timestamp {
	list := c.Namespaces[lungo.Oplog].Documents.List()
	if len(list) == 0 {
		return primitive.Timestamp{}
	}
	ts, _ := bsonkit.Get(list[0], "clusterTime").(primitive.Timestamp)
	return ts
}
