package devdb

import (
	"encoding/hex"
	"sort"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// Resume tokens look like a real server's, {_data: "<hex>"}, with the
// cluster time first (0x82, seconds, increment, big-endian) so tools that
// read a token's time from a real server's tokens read devdb's too; one
// more byte marks an invalidate event's token.
const (
	tokenEvent      = 0
	tokenInvalidate = 1
)

func encodeToken(ts primitive.Timestamp, kind byte) bson.D {
	b := []byte{0x82, byte(ts.T >> 24), byte(ts.T >> 16), byte(ts.T >> 8), byte(ts.T),
		byte(ts.I >> 24), byte(ts.I >> 16), byte(ts.I >> 8), byte(ts.I), kind}
	return bson.D{{Key: "_data", Value: hex.EncodeToString(b)}}
}

func decodeToken(v any) (primitive.Timestamp, byte, error) {
	d, ok := v.(bson.D)
	if !ok {
		return primitive.Timestamp{}, 0, errorf(codeFailedToParse, "a resume token must be a document")
	}
	s, _ := lookup(d, "_data").(string)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 10 || b[0] != 0x82 || b[9] > tokenInvalidate {
		return primitive.Timestamp{}, 0, errorf(codeInvalidResumeToken, "resume token %v was not issued by devdb", d)
	}
	ts := primitive.Timestamp{T: uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]),
		I: uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8])}
	return ts, b[9], nil
}

// changeStream is the state of one change-stream cursor: which namespaces
// it follows and how far it has read the oplog.
type changeStream struct {
	db, coll     string // "" = all databases / all collections
	pos          primitive.Timestamp
	stages       []stage
	fullDocument string
	done         bool // an invalidate was returned: the cursor is over
}

// stage is one pipeline stage evaluated on change events.
type stage func(ev bson.D) (bson.D, bool, error)

// systemDBs are never part of a deployment-wide change stream.
var systemDBs = map[string]bool{"admin": true, "config": true, "local": true}

func (s *Server) openChangeStream(r *request, opts bson.D, rest bson.A, bs int) (bson.D, error) {
	cs := &changeStream{db: r.db}
	if coll, ok := r.cmd[0].Value.(string); ok {
		cs.coll = coll
	}
	if asBool(lookup(opts, "allChangesForCluster")) {
		if r.db != "admin" || cs.coll != "" {
			return nil, errorf(codeBadValue, "allChangesForCluster needs aggregate: 1 on the admin database")
		}
		cs.db = ""
	} else if cs.coll == "" && (r.db == "admin" || r.db == "config" || r.db == "local") {
		return nil, errorf(codeInvalidNamespace, "a database change stream cannot watch %s; use allChangesForCluster on admin", r.db)
	}
	cs.fullDocument, _ = lookup(opts, "fullDocument").(string)
	switch cs.fullDocument {
	case "", "default", "updateLookup", "whenAvailable", "required":
	default:
		return nil, errorf(codeBadValue, "fullDocument %q is not one of default, updateLookup, whenAvailable, required", cs.fullDocument)
	}
	if fb, _ := lookup(opts, "fullDocumentBeforeChange").(string); fb == "required" {
		return nil, errorf(codeCommandNotSupported, "devdb keeps no pre-images: fullDocumentBeforeChange: required cannot be served (use whenAvailable or off)")
	}
	for _, v := range rest {
		st, err := compileStage(v)
		if err != nil {
			return nil, err
		}
		if st != nil {
			cs.stages = append(cs.stages, st)
		}
	}
	oplog := s.engine.Catalog()
	cs.pos = lastOplogTime(oplog)
	first := firstOplogTime(oplog)
	var startPoints int
	for _, key := range []string{"resumeAfter", "startAfter"} {
		v := lookup(opts, key)
		if v == nil {
			continue
		}
		startPoints++
		ts, kind, err := decodeToken(v)
		if err != nil {
			return nil, err
		}
		if kind == tokenInvalidate && key == "resumeAfter" {
			return nil, errorf(codeInvalidResumeToken, "cannot resume after an invalidate event with resumeAfter; use startAfter")
		}
		if lost(ts, first) {
			return nil, errorf(codeChangeStreamHistoryLost, "the resume point %d.%d is older than the oldest oplog entry %d.%d: the events in between are gone", ts.T, ts.I, first.T, first.I)
		}
		cs.pos = ts
	}
	if v := lookup(opts, "startAtOperationTime"); v != nil {
		startPoints++
		ts, ok := v.(primitive.Timestamp)
		if !ok {
			return nil, errorf(codeFailedToParse, "startAtOperationTime must be a timestamp")
		}
		if lost(prevTimestamp(ts), first) {
			return nil, errorf(codeChangeStreamHistoryLost, "startAtOperationTime %d.%d is older than the oldest oplog entry %d.%d", ts.T, ts.I, first.T, first.I)
		}
		cs.pos = prevTimestamp(ts)
	}
	if startPoints > 1 {
		return nil, errorf(codeBadValue, "only one of resumeAfter, startAfter and startAtOperationTime may be given")
	}
	ns := r.db + "." + cs.coll
	if cs.coll == "" {
		ns = r.db + ".$cmd.aggregate"
	}
	c := &cursor{ns: ns, stream: cs}
	s.addCursor(c)
	out, err := s.streamBatch(c, bs, 0, "firstBatch")
	if err != nil {
		s.killCursor(c.id)
	}
	return out, err
}

// lost reports whether entries after pos may have been dropped from an
// oplog whose oldest entry is at first: cluster times are discrete, so
// nothing is missing when pos is first's immediate predecessor or later.
func lost(pos, first primitive.Timestamp) bool {
	return pos.Before(prevTimestamp(first))
}

func prevTimestamp(ts primitive.Timestamp) primitive.Timestamp {
	if ts.I > 0 {
		return primitive.Timestamp{T: ts.T, I: ts.I - 1}
	}
	if ts.T == 0 {
		return ts
	}
	return primitive.Timestamp{T: ts.T - 1, I: ^uint32(0)}
}

// streamBatch returns up to n events after the stream's position, waiting
// up to wait for the first one. Every reply carries postBatchResumeToken:
// the position scanned so far, events filtered out included.
func (s *Server) streamBatch(c *cursor, n int, wait time.Duration, field string) (bson.D, error) {
	cs := c.stream
	deadline := time.Now().Add(wait)
	var events bson.A
	var pbrt bson.D
	for {
		woken := s.wake.wait()
		var err error
		events, pbrt, err = s.scan(cs, n)
		if err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if len(events) > 0 || cs.done || left <= 0 {
			break
		}
		timer := time.NewTimer(left)
		select {
		case <-woken:
			timer.Stop()
		case <-timer.C:
		case <-s.ctx.Done():
			timer.Stop()
			return nil, errorf(codeInternalError, "devdb is shutting down")
		}
	}
	id := c.id
	if cs.done {
		s.killCursor(c.id)
		id = 0
	}
	if events == nil {
		events = bson.A{}
	}
	return bson.D{{Key: "cursor", Value: bson.D{{Key: field, Value: events}, {Key: "postBatchResumeToken", Value: pbrt},
		{Key: "id", Value: id}, {Key: "ns", Value: c.ns}}}}, nil
}

func oplogTime(e bsonkit.Doc) primitive.Timestamp {
	ts, _ := bsonkit.Get(e, "clusterTime").(primitive.Timestamp)
	return ts
}

func (s *Server) scan(cs *changeStream, n int) (bson.A, bson.D, error) {
	list := s.engine.Catalog().Namespaces[lungo.Oplog].Documents.List()
	if len(list) > 0 && lost(cs.pos, oplogTime(list[0])) {
		first := oplogTime(list[0])
		return nil, nil, errorf(codeChangeStreamHistoryLost, "the change stream fell behind: its position %d.%d is older than the oldest oplog entry %d.%d; the events in between are gone", cs.pos.T, cs.pos.I, first.T, first.I)
	}
	i := sort.Search(len(list), func(i int) bool { return cs.pos.Before(oplogTime(list[i])) })
	var out bson.A
	size := 0
	pbrtKind := byte(tokenEvent)
	for ; i < len(list) && len(out) < n && size < maxBatchBytes && !cs.done; i++ {
		e := list[i]
		ts := oplogTime(e)
		cs.pos = ts
		db, _ := bsonkit.Get(e, "ns.db").(string)
		coll, _ := bsonkit.Get(e, "ns.coll").(string)
		op, _ := bsonkit.Get(e, "operationType").(string)
		// A rename shows on the streams of its target collection too: it
		// replaced what was there.
		target := op == "rename" && cs.coll != "" && bsonkit.Get(e, "to.db") == cs.db && bsonkit.Get(e, "to.coll") == cs.coll
		switch {
		case target:
		case cs.db == "" && systemDBs[db]:
			continue
		case cs.db != "" && db != cs.db:
			continue
		case cs.coll != "" && coll != cs.coll && op != "dropDatabase":
			continue
		case cs.coll != "" && op == "dropDatabase":
			// The collection's own drop event came first; this one only
			// invalidates.
			cs.done = true
		}
		evs := []bson.D{}
		if !cs.done {
			evs = append(evs, s.render(cs, e, ts))
		}
		if (cs.coll != "" && (op == "drop" || op == "rename")) || (cs.coll == "" && cs.db != "" && op == "dropDatabase") || cs.done {
			cs.done = true
			pbrtKind = tokenInvalidate
			evs = append(evs, bson.D{{Key: "_id", Value: encodeToken(ts, tokenInvalidate)}, {Key: "operationType", Value: "invalidate"},
				{Key: "clusterTime", Value: ts}, {Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Unix(int64(ts.T), 0))}})
		}
		for _, ev := range evs {
			keep := true
			var err error
			for _, st := range cs.stages {
				if ev, keep, err = st(ev); err != nil || !keep {
					break
				}
			}
			if err != nil {
				return nil, nil, err
			}
			if keep {
				raw, err := bson.Marshal(ev)
				if err != nil {
					return nil, nil, errorf(codeInternalError, "encoding a change event: %v", err)
				}
				size += len(raw)
				out = append(out, bson.Raw(raw))
			}
		}
	}
	return out, encodeToken(cs.pos, pbrtKind), nil
}

// render turns an oplog entry into the change event a real server sends.
func (s *Server) render(cs *changeStream, e bsonkit.Doc, ts primitive.Timestamp) bson.D {
	op, _ := bsonkit.Get(e, "operationType").(string)
	ev := bson.D{{Key: "_id", Value: encodeToken(ts, tokenEvent)}, {Key: "operationType", Value: op},
		{Key: "clusterTime", Value: ts}, {Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Unix(int64(ts.T), 0))}}
	if fd, ok := bsonkit.Get(e, "fullDocument").(bson.D); ok {
		if op != "update" || cs.fullDocument == "updateLookup" || cs.fullDocument == "whenAvailable" || cs.fullDocument == "required" {
			ev = append(ev, bson.E{Key: "fullDocument", Value: fd})
		}
	}
	if ns, ok := bsonkit.Get(e, "ns").(bson.D); ok {
		ev = append(ev, bson.E{Key: "ns", Value: ns})
	}
	if to, ok := bsonkit.Get(e, "to").(bson.D); ok {
		ev = append(ev, bson.E{Key: "to", Value: to})
	}
	if dk, ok := bsonkit.Get(e, "documentKey").(bson.D); ok {
		ev = append(ev, bson.E{Key: "documentKey", Value: dk})
	}
	if ud, ok := bsonkit.Get(e, "updateDescription").(bson.D); ok {
		ev = append(ev, bson.E{Key: "updateDescription", Value: ud})
	}
	if lsid, ok := bsonkit.Get(e, "lsid").(bson.D); ok {
		ev = append(ev, bson.E{Key: "lsid", Value: lsid}, bson.E{Key: "txnNumber", Value: bsonkit.Get(e, "txnNumber")})
	}
	return ev
}

// compileStage compiles one stage after $changeStream. Stages devdb cannot
// evaluate are refused when the stream opens.
func compileStage(v any) (stage, error) {
	d, ok := v.(bson.D)
	if !ok || len(d) != 1 {
		return nil, errorf(codeFailedToParse, "a pipeline stage must be a document with one field")
	}
	name, arg := d[0].Key, d[0].Value
	switch name {
	case "$match":
		q, ok := arg.(bson.D)
		if !ok {
			return nil, errorf(codeFailedToParse, "$match needs a document")
		}
		q = prepareQuery(q)
		return func(ev bson.D) (bson.D, bool, error) {
			ok, err := mongokit.Match(&ev, &q)
			if err != nil {
				return nil, false, errorf(codeBadValue, "$match: %v", err)
			}
			return ev, ok, nil
		}, nil
	case "$project", "$unset":
		var proj bson.D
		switch a := arg.(type) {
		case bson.D:
			if name == "$unset" {
				return nil, errorf(codeFailedToParse, "$unset needs a field name or an array of them")
			}
			proj = a
		case string:
			proj = bson.D{{Key: a, Value: int32(0)}}
		case bson.A:
			for _, f := range a {
				if fs, ok := f.(string); ok {
					proj = append(proj, bson.E{Key: fs, Value: int32(0)})
				}
			}
		default:
			return nil, errorf(codeFailedToParse, "%s needs a document", name)
		}
		return func(ev bson.D) (bson.D, bool, error) {
			out, err := mongokit.Project(&ev, &proj)
			if err != nil {
				return nil, false, errorf(codeBadValue, "%s: %v", name, err)
			}
			if bsonkit.Compare(lookup(*out, "_id"), lookup(ev, "_id")) != 0 {
				return nil, false, errorf(codeChangeStreamFatal, "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point.")
			}
			return *out, true, nil
		}, nil
	case "$changeStreamSplitLargeEvent":
		// Events here are never larger than the documents they carry, which
		// the engine keeps under 16 MiB: nothing to split.
		return nil, nil
	default:
		return nil, errorf(codeUnrecognizedStage, "devdb does not evaluate %s after $changeStream (it serves $match, $project, $unset, $changeStreamSplitLargeEvent)", name)
	}
}
