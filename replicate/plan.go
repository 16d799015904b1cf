package replicate

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
)

// opKind is what a document change does on the target.
type opKind int

const (
	opUpsert opKind = iota // replace the whole document, inserting if missing
	opUpdate               // $set/$unset/$push of an update event
	opDelete               // delete by document key
	opNone                 // nothing to write (see skip)
)

// op is one document change to apply to the target.
type op struct {
	idx  int // record index in the batch (-1 for copied documents)
	seq  uint64
	ev   *change.Event
	src  change.Namespace
	dst  change.Namespace
	id   bson.RawValue
	key  bson.Raw // document key: the filter of every write
	pos  position
	part int
	kind opKind
	doc  bson.Raw // opUpsert: the replacement
	upd  bson.D   // opUpdate: the update document
	// skip says why an op writes nothing (opNone): its effect is already on
	// the target or will be by a later event.
	skip string
	// vers is the version the write gives the document (two-way).
	vers Version
}

// model returns the driver write model of a writing op.
func (o *op) model() mongo.WriteModel {
	switch o.kind {
	case opUpsert:
		return mongo.NewReplaceOneModel().SetFilter(o.key).SetReplacement(o.doc).SetUpsert(true)
	case opUpdate:
		return mongo.NewUpdateOneModel().SetFilter(o.key).SetUpdate(o.upd)
	case opDelete:
		return mongo.NewDeleteOneModel().SetFilter(o.key)
	}
	return nil
}

// partition maps a document to a worker. Every change of one document goes
// to the same worker, so per-document order holds.
func partition(ns change.Namespace, id bson.RawValue, workers int) int {
	if workers <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(ns.DB))
	h.Write([]byte{0})
	h.Write([]byte(ns.Coll))
	h.Write([]byte{0, byte(id.Type)})
	h.Write(id.Value)
	return int(h.Sum32() % uint32(workers))
}

// errMalformedDML marks a document change that cannot be applied at all.
var errMalformedDML = errors.New("malformed document change")

// planDML turns a document change event into an op. always forces
// post-images for updates (full_document_fallback: always, and two-way
// pipelines).
func planDML(ev *change.Event, dst change.Namespace, always bool) (*op, error) {
	if len(ev.DocumentKey) == 0 {
		return nil, fmt.Errorf("%w: %s event on %s without documentKey", errMalformedDML, ev.OperationType, ev.NS)
	}
	id, ok := ev.DocumentID()
	if !ok {
		return nil, fmt.Errorf("%w: %s event on %s: documentKey without _id", errMalformedDML, ev.OperationType, ev.NS)
	}
	o := &op{ev: ev, src: ev.NS, dst: dst, id: id, key: ev.DocumentKey, pos: eventPosition(ev)}
	switch ev.OperationType {
	case change.OpInsert, change.OpReplace:
		if ev.FullDocument == nil {
			return nil, fmt.Errorf("%w: %s event on %s without fullDocument", errMalformedDML, ev.OperationType, ev.NS)
		}
		o.kind, o.doc = opUpsert, ev.FullDocument
	case change.OpDelete:
		o.kind = opDelete
	case change.OpUpdate:
		if err := planUpdate(o, always); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %q is not a document change", errMalformedDML, ev.OperationType)
	}
	return o, nil
}

// postImage reports the update's fullDocument: the document, or gone (the
// field is null: the document no longer existed when the server looked it
// up), or neither (the field is absent: the source was captured without
// updateLookup).
func postImage(ev *change.Event) (doc bson.Raw, gone bool) {
	if ev.FullDocument != nil {
		return ev.FullDocument, false
	}
	v, err := ev.Raw.LookupErr("fullDocument")
	return nil, err == nil && v.Type == bsontype.Null
}

func planUpdate(o *op, always bool) error {
	ev := o.ev
	u := ev.UpdateDescription
	post, gone := postImage(ev)
	if u == nil && post == nil && !gone {
		return fmt.Errorf("%w: update event on %s without updateDescription", errMalformedDML, ev.NS)
	}
	why := ""
	switch {
	case always:
		why = "full-document mode"
	case u == nil:
		why = "no updateDescription"
	default:
		why = ambiguity(u, post)
	}
	if why == "" {
		o.kind, o.upd = opUpdate, updateDoc(u, post)
		if len(o.upd) == 0 {
			o.kind, o.skip = opNone, "empty update"
		}
		return nil
	}
	switch {
	case post != nil:
		o.kind, o.doc = opUpsert, post
	case gone:
		// The document was deleted after this update; its delete event
		// follows in the stream and leaves the target the same.
		o.kind, o.skip = opNone, "post-image gone (document deleted later)"
	default:
		return fmt.Errorf("%w: update of %s _id %s needs its post-image (%s), but the event has no fullDocument: capture the source with full_document: updateLookup",
			ErrNoPostImage, ev.NS, idString(o.id), why)
	}
	return nil
}

// ambiguity returns why an update's paths cannot be applied as $set/$unset,
// or "" when they can. A numeric path component may name an array index or
// a field ("tags.0" on a missing field creates {tags: {"0": …}}, not an
// array); a component may itself contain a dot, which $set cannot express;
// and a truncation cannot be combined with updates inside the same array.
func ambiguity(u *change.UpdateDescription, post bson.Raw) string {
	if len(u.DisambiguatedPaths) > 0 {
		return "the server disambiguated its paths"
	}
	var paths []string
	if u.UpdatedFields != nil {
		elems, err := u.UpdatedFields.Elements()
		if err != nil {
			return "unreadable updatedFields"
		}
		for _, e := range elems {
			paths = append(paths, e.Key())
		}
	}
	updated := len(paths)
	paths = append(paths, u.RemovedFields...)
	for i, p := range paths {
		for _, c := range strings.Split(p, ".") {
			if c == "" || c[0] == '$' || numeric(c) {
				return fmt.Sprintf("path %q", p)
			}
		}
		if post != nil && strings.Contains(p, ".") {
			// The parent of a nested path must be a document in the
			// post-image; otherwise the key itself holds a dot.
			parent := p[:strings.LastIndexByte(p, '.')]
			v, err := post.LookupErr(strings.Split(parent, ".")...)
			if err != nil || v.Type != bsontype.EmbeddedDocument {
				return fmt.Sprintf("path %q", p)
			}
			comps := strings.Split(p, ".")
			_, err = post.LookupErr(comps...)
			switch {
			case i < updated && err != nil:
				return fmt.Sprintf("path %q", p)
			case i >= updated && err == nil:
				// Removed, yet the nested field is still there: the
				// removed field was a literal dotted key.
				return fmt.Sprintf("removed path %q", p)
			case dottedKeyOnPath(post, comps):
				// A literal "a.b" beside a nested a.b: $set {"a.b": …}
				// always writes the nested one.
				return fmt.Sprintf("path %q (a field name holds a dot)", p)
			}
		}
	}
	for _, t := range u.TruncatedArrays {
		for _, c := range strings.Split(t.Field, ".") {
			if c == "" || c[0] == '$' || numeric(c) {
				return fmt.Sprintf("truncated path %q", t.Field)
			}
		}
		for _, p := range paths {
			if p == t.Field || strings.HasPrefix(p, t.Field+".") || strings.HasPrefix(t.Field, p+".") {
				return fmt.Sprintf("truncation of %q with updates inside it", t.Field)
			}
		}
	}
	return ""
}

// dottedKeyOnPath reports whether a document along the path comps holds a
// key made of several of its components joined by dots.
func dottedKeyOnPath(doc bson.Raw, comps []string) bool {
	for len(comps) > 1 {
		for i := 2; i <= len(comps); i++ {
			if _, err := doc.LookupErr(strings.Join(comps[:i], ".")); err == nil {
				return true
			}
		}
		sub, ok := doc.Lookup(comps[0]).DocumentOK()
		if !ok {
			return false
		}
		doc, comps = sub, comps[1:]
	}
	return false
}

func numeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// updateDoc builds $set, $unset and $push ($each: [], $slice: n for
// truncations) from an unambiguous update description. The $set fields are
// ordered as in the post-image, so fields the update adds land in the same
// order as on the source.
func updateDoc(u *change.UpdateDescription, post bson.Raw) bson.D {
	var upd bson.D
	if u.UpdatedFields != nil {
		elems, _ := u.UpdatedFields.Elements()
		if len(elems) > 1 && post != nil {
			order := docOrder(post)
			sort.SliceStable(elems, func(i, j int) bool {
				return rank(order, elems[i].Key()) < rank(order, elems[j].Key())
			})
		}
		set := make(bson.D, 0, len(elems))
		for _, e := range elems {
			set = append(set, bson.E{Key: e.Key(), Value: e.Value()})
		}
		if len(set) > 0 {
			upd = append(upd, bson.E{Key: "$set", Value: set})
		}
	}
	if len(u.RemovedFields) > 0 {
		unset := make(bson.D, 0, len(u.RemovedFields))
		for _, f := range u.RemovedFields {
			unset = append(unset, bson.E{Key: f, Value: ""})
		}
		upd = append(upd, bson.E{Key: "$unset", Value: unset})
	}
	if len(u.TruncatedArrays) > 0 {
		push := make(bson.D, 0, len(u.TruncatedArrays))
		for _, t := range u.TruncatedArrays {
			push = append(push, bson.E{Key: t.Field, Value: bson.D{{Key: "$each", Value: bson.A{}}, {Key: "$slice", Value: t.NewSize}}})
		}
		upd = append(upd, bson.E{Key: "$push", Value: push})
	}
	return upd
}

// docOrder numbers the paths of a document depth first.
func docOrder(doc bson.Raw) map[string]int {
	order := map[string]int{}
	var walk func(prefix string, d bson.Raw)
	walk = func(prefix string, d bson.Raw) {
		elems, err := d.Elements()
		if err != nil {
			return
		}
		for _, e := range elems {
			p := prefix + e.Key()
			order[p] = len(order)
			if sub, ok := e.Value().DocumentOK(); ok {
				walk(p+".", sub)
			}
		}
	}
	walk("", doc)
	return order
}

func rank(order map[string]int, path string) int {
	if i, ok := order[path]; ok {
		return i
	}
	return len(order)
}

// idString renders a document id for logs and reports.
func idString(v bson.RawValue) string {
	if v.Type == 0 {
		return "<none>"
	}
	b, err := bson.MarshalExtJSON(bson.D{{Key: "_id", Value: v}}, false, false)
	if err != nil {
		return v.String()
	}
	s := string(b)
	s = strings.TrimPrefix(s, `{"_id":`)
	return strings.TrimSuffix(s, "}")
}

// txnKey identifies the source transaction of an event on a real server
// ("" outside transactions).
func txnKey(ev *change.Event) string {
	if !ev.HasTxn || len(ev.LSID) == 0 {
		return ""
	}
	return fmt.Sprintf("%x/%d", []byte(ev.LSID), ev.TxnNumber)
}

var replaceUpsert = options.Replace().SetUpsert(true)
