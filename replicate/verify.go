package replicate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
)

// VerifyOptions says what Verify compares.
type VerifyOptions struct {
	// Include, Ignore and Mapping are a pipeline's (Config fields of the
	// same names).
	Include, Ignore []string
	Mapping         map[string]string
	// MetadataDB is godwit's metadata database, never compared. Default
	// "godwit".
	MetadataDB string
	// IgnoreFieldOrder compares documents as sets of fields (recursively):
	// {a: 1, b: 2} equals {b: 2, a: 1}. Default false: documents must be
	// byte-identical.
	IgnoreFieldOrder bool
	// MaxDiffs is how many differing _ids are listed per namespace.
	// Default 10.
	MaxDiffs int
	// Out receives one line per namespace and one per listed difference
	// (nil: nothing is printed).
	Out io.Writer
}

// VerifyConfig returns the options that compare a pipeline's namespaces.
func VerifyConfig(cfg Config, metadataDB string, out io.Writer) VerifyOptions {
	return VerifyOptions{Include: cfg.Include, Ignore: cfg.Ignore, Mapping: cfg.Mapping, MetadataDB: metadataDB, Out: out}
}

// Report is the result of Verify.
type Report struct {
	Namespaces []NSReport `json:"namespaces"`
	// Equal is true when no namespace differs.
	Equal bool `json:"equal"`
}

// NSReport compares one source namespace with its target.
type NSReport struct {
	Source      string `json:"source"`
	Target      string `json:"target"`
	SourceCount int64  `json:"source_count"`
	TargetCount int64  `json:"target_count"`
	// Missing counts documents only on the source, Extra only on the
	// target, Differ documents whose contents differ.
	Missing int64  `json:"missing"`
	Extra   int64  `json:"extra"`
	Differ  int64  `json:"differ"`
	First   []Diff `json:"first,omitempty"`
}

// Equal reports whether the namespace is the same on both sides.
func (r NSReport) Equal() bool {
	return r.Missing == 0 && r.Extra == 0 && r.Differ == 0 && r.SourceCount == r.TargetCount
}

// Diff is one differing document.
type Diff struct {
	// ID is the _id in relaxed Extended JSON.
	ID string `json:"_id"`
	// Kind is "missing" (only on the source), "extra" (only on the
	// target) or "differs".
	Kind string `json:"kind"`
}

// Verify compares the included namespaces of source with their mapped
// namespaces on target: document counts, then both sides streamed in _id
// order and compared document by document (a SHA-256 of each document's
// BSON: same fields, same order, same types). Nothing is held in memory
// beyond one document per side.
func Verify(ctx context.Context, source, target lungo.IClient, opts VerifyOptions) (Report, error) {
	if opts.MetadataDB == "" {
		opts.MetadataDB = "godwit"
	}
	if opts.MaxDiffs <= 0 {
		opts.MaxDiffs = 10
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	cfg := Config{Include: opts.Include, Ignore: opts.Ignore, Mapping: opts.Mapping}
	filter := cfg.Filter(opts.MetadataDB)
	mp, err := newMapper(opts.Mapping)
	if err != nil {
		return Report{}, fmt.Errorf("mapping: %w", err)
	}
	// The namespaces of both sides: a target namespace whose source is
	// gone still has to be empty.
	set := map[change.Namespace]bool{}
	srcNS, err := listNamespaces(ctx, source)
	if err != nil {
		return Report{}, fmt.Errorf("source: %w", err)
	}
	for _, ns := range srcNS {
		if replicated(filter, ns) {
			set[ns] = true
		}
	}
	dstNS, err := listNamespaces(ctx, target)
	if err != nil {
		return Report{}, fmt.Errorf("target: %w", err)
	}
	for _, ns := range dstNS {
		if src := mp.Inverse(ns); src.DB != "" && src.DB != opts.MetadataDB && replicated(filter, src) {
			set[src] = true
		}
	}
	var all []change.Namespace
	for ns := range set {
		all = append(all, ns)
	}
	slices.SortFunc(all, func(a, b change.Namespace) int { return strings.Compare(a.String(), b.String()) })

	rep := Report{Equal: true}
	for _, ns := range all {
		dst := mp.Map(ns)
		r, err := verifyNS(ctx, source.Database(ns.DB).Collection(ns.Coll), target.Database(dst.DB).Collection(dst.Coll), opts)
		if err != nil {
			return rep, fmt.Errorf("verify %s: %w", ns, err)
		}
		r.Source, r.Target = ns.String(), dst.String()
		rep.Namespaces = append(rep.Namespaces, r)
		name := r.Source
		if r.Target != r.Source {
			name += " → " + r.Target
		}
		if r.Equal() {
			fmt.Fprintf(opts.Out, "%s: %d documents, equal\n", name, r.SourceCount)
			continue
		}
		rep.Equal = false
		fmt.Fprintf(opts.Out, "%s: DIFFERENT: source %d documents, target %d; %d missing on the target, %d extra, %d differ\n",
			name, r.SourceCount, r.TargetCount, r.Missing, r.Extra, r.Differ)
		for _, d := range r.First {
			fmt.Fprintf(opts.Out, "  %-8s _id %s\n", d.Kind, d.ID)
		}
	}
	return rep, nil
}

func listNamespaces(ctx context.Context, c lungo.IClient) ([]change.Namespace, error) {
	dbs, err := c.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	var out []change.Namespace
	for _, db := range dbs {
		if slices.Contains(systemDBs, db) {
			continue
		}
		colls, err := c.Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			return nil, err
		}
		for _, coll := range colls {
			out = append(out, change.Namespace{DB: db, Coll: coll})
		}
	}
	return out, nil
}

// side streams one collection in _id order.
type side struct {
	cur  lungo.ICursor
	ctx  context.Context
	doc  bson.Raw
	id   any // the _id as bsonkit compares it
	done bool
}

func (s *side) next() error {
	if !s.cur.Next(s.ctx) {
		s.done = true
		return s.cur.Err()
	}
	var d bson.Raw
	if err := s.cur.Decode(&d); err != nil {
		return err
	}
	s.doc = append(s.doc[:0], d...)
	iddoc, err := bsonkit.Transform(bson.D{{Key: "_id", Value: s.doc.Lookup("_id")}})
	if err != nil {
		return err
	}
	s.id = bsonkit.Get(iddoc, "_id")
	return nil
}

func verifyNS(ctx context.Context, a, b lungo.ICollection, opts VerifyOptions) (NSReport, error) {
	var r NSReport
	var err error
	if r.SourceCount, err = a.CountDocuments(ctx, bson.D{}); err != nil {
		return r, err
	}
	if r.TargetCount, err = b.CountDocuments(ctx, bson.D{}); err != nil {
		return r, err
	}
	ca, err := binaryOrder(ctx, a)
	if err != nil {
		return r, err
	}
	defer ca.Close(context.WithoutCancel(ctx))
	cb, err := binaryOrder(ctx, b)
	if err != nil {
		return r, err
	}
	defer cb.Close(context.WithoutCancel(ctx))
	sa, sb := &side{cur: ca, ctx: ctx}, &side{cur: cb, ctx: ctx}
	if err := sa.next(); err != nil {
		return r, err
	}
	if err := sb.next(); err != nil {
		return r, err
	}
	diff := func(kind string, doc bson.Raw) {
		if len(r.First) < opts.MaxDiffs {
			r.First = append(r.First, Diff{ID: idString(doc.Lookup("_id")), Kind: kind})
		}
	}
	for !sa.done || !sb.done {
		c := 0
		switch {
		case sa.done:
			c = 1
		case sb.done:
			c = -1
		default:
			c = bsonkit.Compare(sa.id, sb.id)
		}
		switch {
		case c < 0:
			r.Missing++
			diff("missing", sa.doc)
			if err := sa.next(); err != nil {
				return r, err
			}
		case c > 0:
			r.Extra++
			diff("extra", sb.doc)
			if err := sb.next(); err != nil {
				return r, err
			}
		default:
			if !bytes.Equal(docHash(sa.doc, opts.IgnoreFieldOrder), docHash(sb.doc, opts.IgnoreFieldOrder)) {
				r.Differ++
				diff("differs", sa.doc)
			}
			if err := sa.next(); err != nil {
				return r, err
			}
			if err := sb.next(); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// binaryOrder streams a collection sorted by _id in BSON binary order, the
// order bsonkit.Compare merges in. A server sorts by the collection's
// default collation unless the query names one, so a collection with a
// non-simple collation (string _ids "a" < "B" under a case-insensitive one)
// is read with the simple collation; that sort cannot use the collated _id
// index, so the server sorts (on disk when large: allowDiskUse).
func binaryOrder(ctx context.Context, c lungo.ICollection) (lungo.ICursor, error) {
	sorted := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(1000)
	collated, err := hasCollation(ctx, c)
	if err != nil {
		return nil, err
	}
	if collated {
		sorted.SetCollation(&options.Collation{Locale: "simple"}).SetAllowDiskUse(true)
	}
	return c.Find(ctx, bson.D{}, sorted)
}

// hasCollation reports whether a collection has a default collation other
// than simple (the embedded engine has none).
func hasCollation(ctx context.Context, c lungo.ICollection) (bool, error) {
	cur, err := c.Database().ListCollections(ctx, bson.D{{Key: "name", Value: c.Name()}})
	if err != nil {
		return false, fmt.Errorf("read the options of %s: %w", c.Name(), err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		var info struct {
			Options struct {
				Collation struct {
					Locale string `bson:"locale"`
				} `bson:"collation"`
			} `bson:"options"`
		}
		if err := cur.Decode(&info); err != nil {
			return false, err
		}
		if l := info.Options.Collation.Locale; l != "" && l != "simple" {
			return true, nil
		}
	}
	return false, cur.Err()
}

// docHash is the SHA-256 of a document's BSON, or of a canonical form with
// the fields of every embedded document sorted by name.
func docHash(doc bson.Raw, unordered bool) []byte {
	h := sha256.New()
	if !unordered {
		h.Write(doc)
		return h.Sum(nil)
	}
	var walk func(v bson.RawValue)
	walk = func(v bson.RawValue) {
		h.Write([]byte{byte(v.Type)})
		switch v.Type {
		case bsontype.EmbeddedDocument:
			elems, _ := v.Document().Elements()
			slices.SortFunc(elems, func(a, b bson.RawElement) int { return strings.Compare(a.Key(), b.Key()) })
			for _, e := range elems {
				h.Write([]byte(e.Key()))
				h.Write([]byte{0})
				walk(e.Value())
			}
			h.Write([]byte{0xff})
		case bsontype.Array:
			vals, _ := v.Array().Values()
			for _, x := range vals {
				walk(x)
			}
			h.Write([]byte{0xff})
		default:
			h.Write(v.Value)
		}
	}
	walk(bson.RawValue{Type: bsontype.EmbeddedDocument, Value: doc})
	return h.Sum(nil)
}
