package replicate

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/mongodb"
)

// DDL policies.
const (
	DDLApply  = "apply"
	DDLIgnore = "ignore"
	DDLHalt   = "halt"
)

// Full-document fallback modes.
const (
	FallbackAmbiguous = "ambiguous"
	FallbackAlways    = "always"
)

// Defaults.
const (
	DefaultWorkers       = 4
	DefaultCopyBatchSize = 1000
)

// Config configures one pipeline. The zero value of every optional field
// takes the documented default; Validate names the first field of each
// problem.
type Config struct {
	// ID names the pipeline. It is the id of the sink entry that holds this
	// block (not a field of the block): it keys the pipeline's state in the
	// target's metadata database and is written into its origin markers.
	ID string `yaml:"-"`
	// Source is the id of the capture source whose events are applied.
	// Events of other sources in the outbox are acknowledged untouched.
	// Required.
	Source string `yaml:"source"`
	// Target is the target deployment: mongodb://…, mongodb+srv://…,
	// lungo:PATH or lungo:memory. Required.
	Target string `yaml:"target"`
	// Include keeps only source namespaces matching one of these globs
	// ("shop.*"). Default: every namespace. The admin, local and config
	// databases, godwit's metadata database and system.* collections are
	// never replicated.
	Include []string `yaml:"include"`
	// Ignore drops source namespaces matching any of these globs.
	Ignore []string `yaml:"ignore"`
	// Mapping renames namespaces on the target: "db" → "db" renames a
	// database, "db.coll" → "db.coll" one collection (it wins over its
	// database's entry). Default: same names.
	Mapping map[string]string `yaml:"mapping"`
	// DDL is what happens to drop, dropDatabase, rename, create,
	// createIndexes, dropIndexes, modify and unknown operation types:
	// "apply" (default), "ignore" (logged, skipped) or "halt" (the pipeline
	// stops at the event until a new initial sync).
	DDL string `yaml:"ddl"`
	// Workers applies document changes in parallel, partitioned by document
	// key so that each document's changes stay in order. Default 4.
	Workers int `yaml:"workers"`
	// FullDocumentFallback is when an update is applied as its post-image
	// instead of $set/$unset: "ambiguous" (default: dotted or numeric paths)
	// or "always".
	FullDocumentFallback string `yaml:"full_document_fallback"`
	// InitialSync copies the included namespaces before streaming when the
	// pipeline has not done so before. Default true.
	InitialSync *bool `yaml:"initial_sync"`
	// Bidirectional marks one half of a two-way pair (A→B and B→A over the
	// same namespaces): writes to the same document on both sides are
	// resolved by last writer wins, and updates are applied as post-images.
	// Set it on both pipelines. Default false.
	Bidirectional bool `yaml:"bidirectional"`
	// CopyBatchSize is the most documents per target transaction (or, without
	// transactions, per ordered bulk write) during the initial copy.
	// Default 1000.
	CopyBatchSize int `yaml:"copy_batch_size"`
	// Transactions is the apply mode: "auto" (default: transactions when
	// the target has them, learned at start), "required" (refuse to start
	// without them) or "off" (each change its own idempotent write).
	// Two-way pipelines need them.
	Transactions string `yaml:"transactions"`
}

var idRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every problem, one per line, each naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.ID != "" && !idRule.MatchString(c.ID) {
		bad("id", "%q: use 1 to 64 letters, digits, '_' or '-'", c.ID)
	}
	if c.Source == "" {
		bad("source", "required (the id of the source whose events are replicated)")
	}
	if c.Target == "" {
		bad("target", "required (mongodb://…, mongodb+srv://…, lungo:PATH or lungo:memory)")
	} else if _, _, err := mongodb.ParseURI(c.Target, ""); err != nil {
		bad("target", "%v", err)
	}
	for i, g := range c.Include {
		if _, err := change.ParseGlob(g); err != nil {
			bad(fmt.Sprintf("include[%d]", i), "%v", err)
		}
	}
	for i, g := range c.Ignore {
		if _, err := change.ParseGlob(g); err != nil {
			bad(fmt.Sprintf("ignore[%d]", i), "%v", err)
		}
	}
	if _, err := newMapper(c.Mapping); err != nil {
		bad("mapping", "%v", err)
	}
	switch c.DDL {
	case "", DDLApply, DDLIgnore, DDLHalt:
	default:
		bad("ddl", "%q: use %s, %s or %s", c.DDL, DDLApply, DDLIgnore, DDLHalt)
	}
	if c.Workers < 0 || c.Workers > 256 {
		bad("workers", "%d: use 1 to 256 (0 means the default, %d)", c.Workers, DefaultWorkers)
	}
	switch c.FullDocumentFallback {
	case "", FallbackAmbiguous, FallbackAlways:
	default:
		bad("full_document_fallback", "%q: use %s or %s", c.FullDocumentFallback, FallbackAmbiguous, FallbackAlways)
	}
	switch c.Transactions {
	case "", TransactionsAuto, TransactionsRequired, TransactionsOff:
	default:
		bad("transactions", "%q: use %s, %s or %s", c.Transactions, TransactionsAuto, TransactionsRequired, TransactionsOff)
	}
	if c.CopyBatchSize < 0 {
		bad("copy_batch_size", "must not be negative (0 means the default, %d)", DefaultCopyBatchSize)
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	if c.DDL == "" {
		c.DDL = DDLApply
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.FullDocumentFallback == "" {
		c.FullDocumentFallback = FallbackAmbiguous
	}
	if c.CopyBatchSize == 0 {
		c.CopyBatchSize = DefaultCopyBatchSize
	}
	if c.Transactions == "" {
		c.Transactions = TransactionsAuto
	}
}

// initialSync reports whether an initial sync is configured (default true).
func (c Config) initialSync() bool { return c.InitialSync == nil || *c.InitialSync }

// systemDBs are never replicated: they belong to the server.
var systemDBs = []string{"admin", "local", "config"}

// Filter returns the filter of the pipeline's source side: include and
// ignore globs, plus the namespaces never replicated (the metadata
// database, the server's admin, local and config databases, system.*
// collections).
func (c Config) Filter(metadataDB string) change.Filter {
	f := change.Filter{MetadataDB: metadataDB}
	for _, g := range c.Include {
		f.Include = append(f.Include, change.MustGlob(g))
	}
	for _, g := range c.Ignore {
		f.Ignore = append(f.Ignore, change.MustGlob(g))
	}
	for _, g := range append(systemDBs, "*.system.*") {
		f.Ignore = append(f.Ignore, change.MustGlob(g))
	}
	return f
}

// replicated reports whether a source namespace is replicated.
func replicated(f change.Filter, ns change.Namespace) bool {
	return f.Namespace(ns)
}

// mapper renames namespaces from the source to the target.
type mapper struct {
	dbs   map[string]string
	colls map[change.Namespace]change.Namespace
}

func newMapper(m map[string]string) (mapper, error) {
	mp := mapper{dbs: map[string]string{}, colls: map[change.Namespace]change.Namespace{}}
	targets := map[string]string{}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		from, err := parseMapNS(k)
		if err != nil {
			return mp, fmt.Errorf("key %q: %v", k, err)
		}
		to, err := parseMapNS(v)
		if err != nil {
			return mp, fmt.Errorf("%q: value %q: %v", k, v, err)
		}
		if (from.Coll == "") != (to.Coll == "") {
			return mp, fmt.Errorf("%q: %q: map a database to a database (shop: shop_copy) and a collection to a collection (shop.orders: shop_copy.orders_v2)", k, v)
		}
		if prev, ok := targets[to.String()]; ok {
			return mp, fmt.Errorf("%q and %q both map to %q: two source namespaces cannot share a target", prev, k, v)
		}
		targets[to.String()] = k
		if from.Coll == "" {
			mp.dbs[from.DB] = to.DB
		} else {
			mp.colls[from] = to
		}
	}
	// A collection entry whose target lies in a database that another
	// database entry (or the same name) also fills could collide with an
	// unmapped collection of that database.
	for from, to := range mp.colls {
		for sdb, tdb := range mp.dbs {
			if tdb == to.DB && sdb != from.DB {
				return mp, fmt.Errorf("%q maps into database %q, which %q also maps to: the collections could collide", from, to.DB, sdb)
			}
		}
	}
	return mp, nil
}

func parseMapNS(s string) (change.Namespace, error) {
	db, coll, _ := strings.Cut(s, ".")
	switch {
	case db == "":
		return change.Namespace{}, errors.New("empty database name")
	case strings.ContainsAny(db, "/\\ \"$*<>:|?"):
		return change.Namespace{}, fmt.Errorf("database name %q holds a character MongoDB does not allow", db)
	case strings.Contains(s, ".") && coll == "":
		return change.Namespace{}, errors.New("empty collection name")
	case strings.Contains(coll, "$"):
		return change.Namespace{}, fmt.Errorf("collection name %q holds '$'", coll)
	}
	return change.Namespace{DB: db, Coll: coll}, nil
}

// Map returns the target namespace of a source namespace.
func (m mapper) Map(ns change.Namespace) change.Namespace {
	if to, ok := m.colls[ns]; ok {
		return to
	}
	if db, ok := m.dbs[ns.DB]; ok {
		return change.Namespace{DB: db, Coll: ns.Coll}
	}
	return ns
}

// Inverse returns the source namespace a target namespace is filled from.
func (m mapper) Inverse(ns change.Namespace) change.Namespace {
	for from, to := range m.colls {
		if to == ns {
			return from
		}
	}
	for from, to := range m.dbs {
		if to == ns.DB {
			src := change.Namespace{DB: from, Coll: ns.Coll}
			if _, remapped := m.colls[src]; !remapped {
				return src
			}
			return change.Namespace{}
		}
	}
	if _, remapped := m.colls[ns]; remapped {
		return change.Namespace{} // the source of that name goes elsewhere
	}
	if _, remapped := m.dbs[ns.DB]; remapped {
		return change.Namespace{}
	}
	return ns
}

// Pipeline is one replicate sink of a configuration file, with what is
// needed to reach both of its deployments.
type Pipeline struct {
	Config Config
	// SourceURI is the URI of the capture source named by Config.Source.
	SourceURI string
	// MetadataDB is godwit's metadata database (metadata.database, default
	// "godwit").
	MetadataDB string
	// Dir is the configuration file's directory: relative lungo: paths
	// resolve against it.
	Dir string
}
