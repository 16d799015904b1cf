package devdb

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// maxBatchBytes caps one reply batch below the 16 MiB document limit.
const maxBatchBytes = 15 * 1024 * 1024

// cursor is an open find/aggregate result or a change stream.
type cursor struct {
	id     int64
	ns     string
	docs   []bson.Raw    // find/aggregate: what is left
	stream *changeStream // change stream: nil otherwise
	used   atomic.Int64
}

func (c *cursor) lastUse() time.Time { return time.Unix(0, c.used.Load()) }

func (s *Server) addCursor(c *cursor) int64 {
	c.id = s.cursorID.Add(1)
	c.used.Store(time.Now().UnixNano())
	s.cursorsMu.Lock()
	s.cursors[c.id] = c
	s.cursorsMu.Unlock()
	return c.id
}

// batch marshals docs and splits off at most n of them (n < 0: no limit)
// within maxBatchBytes.
func takeBatch(docs []bson.Raw, n int) (batch bson.A, rest []bson.Raw) {
	size := 0
	i := 0
	for ; i < len(docs) && (n < 0 || i < n); i++ {
		if size > 0 && size+len(docs[i]) > maxBatchBytes {
			break
		}
		size += len(docs[i])
		batch = append(batch, docs[i])
	}
	if batch == nil {
		batch = bson.A{}
	}
	return batch, docs[i:]
}

func marshalList(list bsonkit.List) ([]bson.Raw, error) {
	out := make([]bson.Raw, len(list))
	for i, d := range list {
		b, err := bson.Marshal(d)
		if err != nil {
			return nil, errorf(codeInternalError, "encoding a document: %v", err)
		}
		out[i] = b
	}
	return out, nil
}

// cursorReply answers a find/aggregate with a first batch and, when more
// is left, an open cursor.
func (s *Server) cursorReply(ns string, docs []bson.Raw, batchSize int, single bool) bson.D {
	batch, rest := takeBatch(docs, batchSize)
	var id int64
	if len(rest) > 0 && !single {
		id = s.addCursor(&cursor{ns: ns, docs: rest})
	}
	return bson.D{{Key: "cursor", Value: bson.D{{Key: "firstBatch", Value: batch}, {Key: "id", Value: id}, {Key: "ns", Value: ns}}}}
}

func batchSizeOf(d bson.D, def int) (int, error) {
	v := lookup(d, "batchSize")
	if v == nil {
		return def, nil
	}
	n, ok := asInt(v)
	if !ok || n < 0 {
		return 0, errorf(codeBadValue, "batchSize must be a non-negative integer")
	}
	return int(n), nil
}

func (s *Server) find(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	filter, err := docField(r.cmd, "filter")
	if err != nil {
		return nil, err
	}
	sort, err := docField(r.cmd, "sort")
	if err != nil {
		return nil, err
	}
	proj, err := docField(r.cmd, "projection")
	if err != nil {
		return nil, err
	}
	skip, _ := asInt(lookup(r.cmd, "skip"))
	limit, _ := asInt(lookup(r.cmd, "limit"))
	single := asBool(lookup(r.cmd, "singleBatch"))
	if limit < 0 {
		limit, single = -limit, true
	}
	bs, err := batchSizeOf(r.cmd, 101)
	if err != nil {
		return nil, err
	}
	if skip < 0 {
		return nil, errorf(codeBadValue, "skip must not be negative")
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	res, err := txn.Find(h, query(filter), docOrNil(sort), int(skip), int(limit))
	if err != nil {
		return nil, s.engineError(err, h, nil)
	}
	list := res.Matched
	if len(proj) > 0 {
		if list, err = mongokit.ProjectList(list, doc(proj)); err != nil {
			return nil, errorf(codeBadValue, "projection: %v", err)
		}
	}
	docs, err := marshalList(list)
	if err != nil {
		return nil, err
	}
	if single && limit > 0 && int(limit) < bs {
		bs = int(limit)
	}
	return s.cursorReply(h.String(), docs, bs, single), nil
}

func (s *Server) getMore(r *request) (bson.D, error) {
	id, ok := asInt(r.cmd[0].Value)
	if !ok {
		return nil, errorf(codeFailedToParse, "getMore: the cursor id must be a 64-bit integer")
	}
	bs, err := batchSizeOf(r.cmd, -1)
	if err != nil {
		return nil, err
	}
	if bs == 0 {
		bs = -1
	}
	s.cursorsMu.Lock()
	c := s.cursors[id]
	s.cursorsMu.Unlock()
	if c == nil {
		return nil, errorf(codeCursorNotFound, "cursor id %d not found", id)
	}
	c.used.Store(time.Now().UnixNano())
	if c.stream != nil {
		wait := time.Second
		if ms, ok := asInt(lookup(r.cmd, "maxTimeMS")); ok && ms > 0 {
			wait = time.Duration(ms) * time.Millisecond
		}
		if bs < 0 {
			bs = 1000
		}
		out, err := s.streamBatch(c, bs, wait, "nextBatch")
		if err != nil {
			s.killCursor(id)
		}
		return out, err
	}
	batch, rest := takeBatch(c.docs, bs)
	c.docs = rest
	if len(rest) == 0 {
		s.killCursor(id)
		id = 0
	}
	return bson.D{{Key: "cursor", Value: bson.D{{Key: "nextBatch", Value: batch}, {Key: "id", Value: id}, {Key: "ns", Value: c.ns}}}}, nil
}

func (s *Server) killCursor(id int64) bool {
	s.cursorsMu.Lock()
	defer s.cursorsMu.Unlock()
	_, ok := s.cursors[id]
	delete(s.cursors, id)
	return ok
}

func (s *Server) killCursors(r *request) (bson.D, error) {
	ids, _ := lookup(r.cmd, "cursors").(bson.A)
	killed, notFound := bson.A{}, bson.A{}
	for _, v := range ids {
		id, _ := asInt(v)
		if s.killCursor(id) {
			killed = append(killed, id)
		} else {
			notFound = append(notFound, id)
		}
	}
	return bson.D{{Key: "cursorsKilled", Value: killed}, {Key: "cursorsNotFound", Value: notFound},
		{Key: "cursorsAlive", Value: bson.A{}}, {Key: "cursorsUnknown", Value: bson.A{}}}, nil
}

// stmts returns the statements of a write command (the array in field).
func stmts(r *request, field string) (bson.A, bool, error) {
	list, ok := lookup(r.cmd, field).(bson.A)
	if !ok {
		return nil, false, errorf(codeFailedToParse, "%s: field %q must be an array", r.name, field)
	}
	ordered := true
	if v := lookup(r.cmd, "ordered"); v != nil {
		ordered = asBool(v)
	}
	return list, ordered, nil
}

func writeReply(n, nModified int, upserted bson.A, errs bson.A, update bool) bson.D {
	d := bson.D{{Key: "n", Value: int32(n)}}
	if update {
		d = append(d, bson.E{Key: "nModified", Value: int32(nModified)})
		if len(upserted) > 0 {
			d = append(d, bson.E{Key: "upserted", Value: upserted})
		}
	}
	if len(errs) > 0 {
		d = append(d, bson.E{Key: "writeErrors", Value: errs})
	}
	return d
}

func (s *Server) insert(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	list, ordered, err := stmts(r, "documents")
	if err != nil {
		return nil, err
	}
	var n int
	var errs bson.A
	err = s.write(r, func(txn *lungo.Transaction) error {
		for i, v := range list {
			d, ok := v.(bson.D)
			if !ok {
				errs = append(errs, errorf(codeBadValue, "document %d is not a document", i).writeError(i))
			} else {
				d = idFirst(d)
				res, err := txn.Insert(h, bsonkit.List{&d}, true)
				if err == nil {
					err = res.Error
				}
				if err == nil {
					n++
					continue
				}
				errs = append(errs, s.engineError(err, h, d).writeError(i))
			}
			if ordered {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return writeReply(n, 0, nil, errs, false), nil
}

func isReplacement(u bson.D) bool {
	return len(u) == 0 || !strings.HasPrefix(u[0].Key, "$")
}

func (s *Server) update(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	list, ordered, err := stmts(r, "updates")
	if err != nil {
		return nil, err
	}
	var n, nModified int
	var upserted, errs bson.A
	err = s.write(r, func(txn *lungo.Transaction) error {
		for i, v := range list {
			st, _ := v.(bson.D)
			matched, modified, up, err := s.updateOne(txn, h, st)
			if err == nil {
				n += matched
				nModified += modified
				if up != nil {
					n++
					upserted = append(upserted, bson.D{{Key: "index", Value: int32(i)}, {Key: "_id", Value: lookup(*up, "_id")}})
				}
				continue
			}
			var d bson.D
			if u, ok := lookup(st, "u").(bson.D); ok {
				d = u
			}
			errs = append(errs, s.engineError(err, h, d).writeError(i))
			if ordered {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return writeReply(n, nModified, upserted, errs, true), nil
}

func (s *Server) updateOne(txn *lungo.Transaction, h lungo.Handle, st bson.D) (matched, modified int, upserted bsonkit.Doc, err error) {
	q, _ := lookup(st, "q").(bson.D)
	upsert := asBool(lookup(st, "upsert"))
	multi := asBool(lookup(st, "multi"))
	var u bson.D
	switch v := lookup(st, "u").(type) {
	case bson.D:
		u = v
	case bson.A:
		return 0, 0, nil, errorf(codeCommandNotSupported, "devdb does not support pipeline-style updates (an array in u); use update operators")
	default:
		return 0, 0, nil, errorf(codeFailedToParse, "update statement needs u: a document")
	}
	var res *lungo.Result
	if isReplacement(u) {
		if multi {
			return 0, 0, nil, errorf(codeFailedToParse, "multi update is not supported for replacement-style update")
		}
		res, err = txn.Replace(h, query(q), nil, doc(u), upsert)
	} else {
		var af bsonkit.List
		if a, ok := lookup(st, "arrayFilters").(bson.A); ok {
			if af, err = bsonkit.TransformList(a); err != nil {
				return 0, 0, nil, errorf(codeFailedToParse, "arrayFilters: %v", err)
			}
		}
		limit := 1
		if multi {
			limit = 0
		}
		res, err = txn.Update(h, query(q), nil, doc(u), 0, limit, upsert, af)
	}
	if err != nil {
		return 0, 0, nil, err
	}
	if res.Error != nil {
		return 0, 0, nil, res.Error
	}
	return len(res.Matched), len(res.Modified), res.Upserted, nil
}

func (s *Server) delete(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	list, ordered, err := stmts(r, "deletes")
	if err != nil {
		return nil, err
	}
	var n int
	var errs bson.A
	err = s.write(r, func(txn *lungo.Transaction) error {
		for i, v := range list {
			st, _ := v.(bson.D)
			q, _ := lookup(st, "q").(bson.D)
			limit, _ := asInt(lookup(st, "limit"))
			res, err := txn.Delete(h, query(q), nil, 0, int(limit))
			if err == nil && res.Error != nil {
				err = res.Error
			}
			if err == nil {
				n += len(res.Matched)
				continue
			}
			errs = append(errs, s.engineError(err, h, nil).writeError(i))
			if ordered {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return writeReply(n, 0, nil, errs, false), nil
}

func (s *Server) findAndModify(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	q, err := docField(r.cmd, "query")
	if err != nil {
		return nil, err
	}
	sort, err := docField(r.cmd, "sort")
	if err != nil {
		return nil, err
	}
	fields, err := docField(r.cmd, "fields")
	if err != nil {
		return nil, err
	}
	remove := asBool(lookup(r.cmd, "remove"))
	returnNew := asBool(lookup(r.cmd, "new"))
	upsert := asBool(lookup(r.cmd, "upsert"))
	var value bsonkit.Doc
	lastErr := bson.D{{Key: "n", Value: int32(0)}}
	err = s.write(r, func(txn *lungo.Transaction) error {
		if remove {
			res, err := txn.Delete(h, query(q), docOrNil(sort), 0, 1)
			if err != nil {
				return s.engineError(err, h, nil)
			}
			if len(res.Matched) > 0 {
				value = res.Matched[0]
				lastErr = bson.D{{Key: "n", Value: int32(1)}}
			}
			return nil
		}
		var res *lungo.Result
		var err error
		var u bson.D
		switch v := lookup(r.cmd, "update").(type) {
		case bson.D:
			u = v
		case bson.A:
			return errorf(codeCommandNotSupported, "devdb does not support pipeline-style updates in findAndModify")
		default:
			return errorf(codeFailedToParse, "findAndModify needs remove: true or an update document")
		}
		if isReplacement(u) {
			res, err = txn.Replace(h, query(q), docOrNil(sort), doc(u), upsert)
		} else {
			var af bsonkit.List
			if a, ok := lookup(r.cmd, "arrayFilters").(bson.A); ok {
				if af, err = bsonkit.TransformList(a); err != nil {
					return errorf(codeFailedToParse, "arrayFilters: %v", err)
				}
			}
			res, err = txn.Update(h, query(q), docOrNil(sort), doc(u), 0, 1, upsert, af)
		}
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return s.engineError(err, h, u)
		}
		switch {
		case res.Upserted != nil:
			lastErr = bson.D{{Key: "n", Value: int32(1)}, {Key: "updatedExisting", Value: false}, {Key: "upserted", Value: lookup(*res.Upserted, "_id")}}
			if returnNew {
				value = res.Upserted
			}
		case len(res.Matched) > 0:
			lastErr = bson.D{{Key: "n", Value: int32(1)}, {Key: "updatedExisting", Value: true}}
			value = res.Matched[0]
			if returnNew && len(res.Modified) > 0 {
				value = res.Modified[0]
			}
		default:
			lastErr = bson.D{{Key: "n", Value: int32(0)}, {Key: "updatedExisting", Value: false}}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var v any
	if value != nil {
		if len(fields) > 0 {
			if value, err = mongokit.Project(value, doc(fields)); err != nil {
				return nil, errorf(codeBadValue, "fields: %v", err)
			}
		}
		v = *value
	}
	return bson.D{{Key: "lastErrorObject", Value: lastErr}, {Key: "value", Value: v}}, nil
}

func (s *Server) count(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	q, err := docField(r.cmd, "query")
	if err != nil {
		return nil, err
	}
	skip, _ := asInt(lookup(r.cmd, "skip"))
	limit, _ := asInt(lookup(r.cmd, "limit"))
	if limit < 0 {
		limit = -limit
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	res, err := txn.Find(h, query(q), nil, int(skip), int(limit))
	if err != nil {
		return nil, s.engineError(err, h, nil)
	}
	return bson.D{{Key: "n", Value: int32(len(res.Matched))}}, nil
}

func (s *Server) distinct(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	key, ok := lookup(r.cmd, "key").(string)
	if !ok || key == "" {
		return nil, errorf(codeFailedToParse, "distinct needs key: a field path")
	}
	q, err := docField(r.cmd, "query")
	if err != nil {
		return nil, err
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	res, err := txn.Find(h, query(q), nil, 0, 0)
	if err != nil {
		return nil, s.engineError(err, h, nil)
	}
	return bson.D{{Key: "values", Value: mongokit.Distinct(res.Matched, key)}}, nil
}

// doc returns d as the engine's document type (an empty document for nil).
func doc(d bson.D) bsonkit.Doc {
	if d == nil {
		d = bson.D{}
	}
	return &d
}

func docOrNil(d bson.D) bsonkit.Doc {
	if len(d) == 0 {
		return nil
	}
	return &d
}

// idFirst returns d with _id as its first field, generated when missing,
// as a real server stores documents.
func idFirst(d bson.D) bson.D {
	for i, e := range d {
		if e.Key == "_id" {
			if i == 0 {
				return d
			}
			out := make(bson.D, 0, len(d))
			out = append(out, e)
			out = append(out, d[:i]...)
			return append(out, d[i+1:]...)
		}
	}
	return append(bson.D{{Key: "_id", Value: primitive.NewObjectID()}}, d...)
}
