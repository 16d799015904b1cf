package devdb

import (
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// Version is the server version devdb reports; drivers pick features by
// maxWireVersion (21 is MongoDB 7.0).
const (
	Version        = "7.0.0"
	maxWireVersion = 21
)

type handler func(s *Server, r *request) (bson.D, error)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"hello":        (*Server).hello,
		"isMaster":     (*Server).hello,
		"ismaster":     (*Server).hello,
		"buildInfo":    (*Server).buildInfo,
		"buildinfo":    (*Server).buildInfo,
		"ping":         empty,
		"endSessions":  (*Server).endSessionsCmd,
		"killSessions": (*Server).endSessionsCmd,
		"getParameter": (*Server).getParameter,
		"getCmdLineOpts": func(*Server, *request) (bson.D, error) {
			return bson.D{{Key: "argv", Value: bson.A{}}, {Key: "parsed", Value: bson.D{}}}, nil
		},
		"getLog": func(*Server, *request) (bson.D, error) {
			return bson.D{{Key: "totalLinesWritten", Value: int32(0)}, {Key: "log", Value: bson.A{}}}, nil
		},
		"connectionStatus":  (*Server).connectionStatus,
		"whatsmyuri":        func(_ *Server, r *request) (bson.D, error) { return bson.D{{Key: "you", Value: r.conn.remote}}, nil },
		"hostInfo":          (*Server).hostInfo,
		"serverStatus":      (*Server).serverStatus,
		"replSetGetStatus":  (*Server).replSetGetStatus,
		"listDatabases":     (*Server).listDatabases,
		"dbStats":           (*Server).dbStats,
		"listCollections":   (*Server).listCollections,
		"listIndexes":       (*Server).listIndexes,
		"create":            (*Server).create,
		"drop":              (*Server).drop,
		"dropDatabase":      (*Server).dropDatabase,
		"renameCollection":  (*Server).renameCollection,
		"createIndexes":     (*Server).createIndexes,
		"dropIndexes":       (*Server).dropIndexes,
		"insert":            (*Server).insert,
		"update":            (*Server).update,
		"delete":            (*Server).delete,
		"find":              (*Server).find,
		"getMore":           (*Server).getMore,
		"killCursors":       (*Server).killCursors,
		"findAndModify":     (*Server).findAndModify,
		"findandmodify":     (*Server).findAndModify,
		"count":             (*Server).count,
		"distinct":          (*Server).distinct,
		"aggregate":         (*Server).aggregate,
		"commitTransaction": noTransaction,
		"abortTransaction":  noTransaction,
	}
}

// ddl are the commands a transaction refuses: their effects are not in the
// oplog a transaction's commit replays.
var ddl = map[string]bool{"create": true, "drop": true, "dropDatabase": true, "renameCollection": true, "createIndexes": true, "dropIndexes": true}

func (s *Server) dispatch(r *request) (bson.D, error) {
	h := handlers[r.name]
	if h == nil {
		return nil, errorf(codeCommandNotFound, "no such command: '%s' (devdb serves a subset of MongoDB's commands; see docs/devdb.md)", r.name)
	}
	if r.txn != nil && ddl[r.name] {
		return nil, errorf(codeNotInTransaction, "Cannot run '%s' in a multi-document transaction (devdb runs catalog commands outside transactions only)", r.name)
	}
	return h(s, r)
}

func empty(*Server, *request) (bson.D, error) { return bson.D{}, nil }

func noTransaction(_ *Server, r *request) (bson.D, error) {
	return nil, &cmdError{code: codeNoSuchTransaction, msg: r.name + " needs lsid, txnNumber and autocommit: false", labels: []string{labelTransient}}
}

// electionID is constant: devdb is always the primary of term 1.
var electionID = primitive.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}

func (s *Server) hello(r *request) (bson.D, error) {
	ts := s.operationTime()
	wall := time.Unix(int64(ts.T), 0)
	d := bson.D{}
	if r.name == "hello" {
		d = append(d, bson.E{Key: "isWritablePrimary", Value: true})
	} else {
		d = append(d, bson.E{Key: "ismaster", Value: true})
	}
	d = append(d,
		bson.E{Key: "helloOk", Value: true},
		bson.E{Key: "hosts", Value: bson.A{s.addr}},
		bson.E{Key: "setName", Value: s.cfg.ReplicaSet},
		bson.E{Key: "setVersion", Value: int32(1)},
		bson.E{Key: "secondary", Value: false},
		bson.E{Key: "primary", Value: s.addr},
		bson.E{Key: "me", Value: s.addr},
		bson.E{Key: "electionId", Value: electionID},
		bson.E{Key: "lastWrite", Value: bson.D{
			{Key: "opTime", Value: bson.D{{Key: "ts", Value: ts}, {Key: "t", Value: int64(1)}}},
			{Key: "lastWriteDate", Value: primitive.NewDateTimeFromTime(wall)},
			{Key: "majorityOpTime", Value: bson.D{{Key: "ts", Value: ts}, {Key: "t", Value: int64(1)}}},
			{Key: "majorityWriteDate", Value: primitive.NewDateTimeFromTime(wall)},
		}},
		bson.E{Key: "maxBsonObjectSize", Value: int32(maxBSONSize)},
		bson.E{Key: "maxMessageSizeBytes", Value: int32(MaxMessageSize)},
		bson.E{Key: "maxWriteBatchSize", Value: int32(100000)},
		bson.E{Key: "localTime", Value: primitive.NewDateTimeFromTime(time.Now())},
		bson.E{Key: "logicalSessionTimeoutMinutes", Value: int32(30)},
		bson.E{Key: "connectionId", Value: r.conn.id},
		bson.E{Key: "minWireVersion", Value: int32(0)},
		bson.E{Key: "maxWireVersion", Value: int32(maxWireVersion)},
		bson.E{Key: "readOnly", Value: false},
	)
	// No topologyVersion: drivers then poll hello instead of streaming it
	// with exhaust replies, which devdb does not send.
	return d, nil
}

func (s *Server) buildInfo(*request) (bson.D, error) {
	return bson.D{
		{Key: "version", Value: Version},
		{Key: "gitVersion", Value: "devdb"},
		{Key: "versionArray", Value: bson.A{int32(7), int32(0), int32(0), int32(0)}},
		{Key: "modules", Value: bson.A{}},
		{Key: "allocator", Value: "system"},
		{Key: "javascriptEngine", Value: "none"},
		{Key: "sysInfo", Value: "deprecated"},
		{Key: "bits", Value: int32(64)},
		{Key: "debug", Value: false},
		{Key: "maxBsonObjectSize", Value: int32(maxBSONSize)},
		{Key: "storageEngines", Value: bson.A{"lungo"}},
		{Key: "openssl", Value: bson.D{{Key: "running", Value: "disabled"}}},
		{Key: "buildEnvironment", Value: bson.D{{Key: "target_os", Value: runtime.GOOS}, {Key: "target_arch", Value: runtime.GOARCH}}},
	}, nil
}

func (s *Server) getParameter(r *request) (bson.D, error) {
	out := bson.D{}
	all := lookup(r.cmd, "getParameter") == "*"
	if all || lookup(r.cmd, "featureCompatibilityVersion") != nil {
		out = append(out, bson.E{Key: "featureCompatibilityVersion", Value: bson.D{{Key: "version", Value: "7.0"}}})
	}
	if all || lookup(r.cmd, "transactionLifetimeLimitSeconds") != nil {
		out = append(out, bson.E{Key: "transactionLifetimeLimitSeconds", Value: int32(s.cfg.TransactionLifetime / time.Second)})
	}
	return out, nil
}

func (s *Server) endSessionsCmd(r *request) (bson.D, error) {
	ids, _ := r.cmd[0].Value.(bson.A)
	s.endSessions(ids)
	return bson.D{}, nil
}

func (s *Server) connectionStatus(*request) (bson.D, error) {
	return bson.D{{Key: "authInfo", Value: bson.D{{Key: "authenticatedUsers", Value: bson.A{}}, {Key: "authenticatedUserRoles", Value: bson.A{}}}}}, nil
}

func (s *Server) hostInfo(*request) (bson.D, error) {
	host, _ := os.Hostname()
	return bson.D{{Key: "system", Value: bson.D{{Key: "hostname", Value: host}, {Key: "numCores", Value: int32(runtime.NumCPU())}}},
		{Key: "os", Value: bson.D{{Key: "type", Value: runtime.GOOS}}}}, nil
}

func (s *Server) serverStatus(*request) (bson.D, error) {
	s.connsMu.Lock()
	n := len(s.conns)
	s.connsMu.Unlock()
	return bson.D{{Key: "host", Value: s.addr}, {Key: "version", Value: Version}, {Key: "process", Value: "devdb"},
		{Key: "localTime", Value: primitive.NewDateTimeFromTime(time.Now())},
		{Key: "connections", Value: bson.D{{Key: "current", Value: int32(n)}}}}, nil
}

func (s *Server) replSetGetStatus(*request) (bson.D, error) {
	ts := s.operationTime()
	return bson.D{{Key: "set", Value: s.cfg.ReplicaSet}, {Key: "myState", Value: int32(1)},
		{Key: "members", Value: bson.A{bson.D{{Key: "_id", Value: int32(0)}, {Key: "name", Value: s.addr}, {Key: "health", Value: 1.0},
			{Key: "state", Value: int32(1)}, {Key: "stateStr", Value: "PRIMARY"}, {Key: "self", Value: true},
			{Key: "optime", Value: bson.D{{Key: "ts", Value: ts}, {Key: "t", Value: int64(1)}}}}}}}, nil
}

func (s *Server) listDatabases(r *request) (bson.D, error) {
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	filter, err := docField(r.cmd, "filter")
	if err != nil {
		return nil, err
	}
	list, err := txn.ListDatabases(query(filter))
	if err != nil {
		return nil, s.engineError(err, lungo.Handle{}, nil)
	}
	dbs := bson.A{}
	names := asBool(lookup(r.cmd, "nameOnly"))
	for _, d := range list {
		if names {
			dbs = append(dbs, bson.D{{Key: "name", Value: bsonkit.Get(d, "name")}})
		} else {
			dbs = append(dbs, *d)
		}
	}
	return bson.D{{Key: "databases", Value: dbs}, {Key: "totalSize", Value: int64(0)}}, nil
}

func (s *Server) dbStats(r *request) (bson.D, error) {
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	var colls, objects, indexes int
	for h, ns := range txn.Catalog().Namespaces {
		if h[0] == r.db {
			colls++
			objects += ns.Documents.Len()
			indexes += len(ns.Indexes)
		}
	}
	return bson.D{{Key: "db", Value: r.db}, {Key: "collections", Value: int32(colls)}, {Key: "views", Value: int32(0)},
		{Key: "objects", Value: int64(objects)}, {Key: "indexes", Value: int32(indexes)}, {Key: "scaleFactor", Value: int32(1)}}, nil
}

func (s *Server) listCollections(r *request) (bson.D, error) {
	if r.db == "" {
		return nil, errorf(codeInvalidNamespace, "listCollections: no database ($db) given")
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	filter, err := docField(r.cmd, "filter")
	if err != nil {
		return nil, err
	}
	list, err := txn.ListCollections(lungo.Handle{r.db, ""}, query(filter))
	if err != nil {
		return nil, s.engineError(err, lungo.Handle{}, nil)
	}
	names := asBool(lookup(r.cmd, "nameOnly"))
	var out bsonkit.List
	for _, d := range list {
		if names {
			out = append(out, &bson.D{{Key: "name", Value: bsonkit.Get(d, "name")}, {Key: "type", Value: "collection"}})
		} else {
			out = append(out, d)
		}
	}
	docs, err := marshalList(out)
	if err != nil {
		return nil, err
	}
	cur, _ := docField(r.cmd, "cursor")
	bs, err := batchSizeOf(cur, -1)
	if err != nil {
		return nil, err
	}
	return s.cursorReply(r.db+".$cmd.listCollections", docs, bs, false), nil
}

func (s *Server) listIndexes(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	if txn.Catalog().Namespaces[h] == nil {
		return nil, errorf(codeNamespaceNotFound, "ns does not exist: %s", h.String())
	}
	list, err := txn.ListIndexes(h)
	if err != nil {
		return nil, s.engineError(err, h, nil)
	}
	docs, err := marshalList(list)
	if err != nil {
		return nil, err
	}
	cur, _ := docField(r.cmd, "cursor")
	bs, err := batchSizeOf(cur, -1)
	if err != nil {
		return nil, err
	}
	return s.cursorReply(h.String(), docs, bs, false), nil
}

func (s *Server) create(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	for _, opt := range []string{"viewOn", "capped", "timeseries", "clusteredIndex"} {
		if v := lookup(r.cmd, opt); v != nil && v != false {
			return nil, errorf(codeCommandNotSupported, "devdb does not support %s collections", opt)
		}
	}
	return bson.D{}, s.write(r, func(txn *lungo.Transaction) error {
		if txn.Catalog().Namespaces[h] != nil {
			return errorf(codeNamespaceExists, "Collection %s already exists.", h.String())
		}
		if err := txn.Create(h); err != nil {
			return s.engineError(err, h, nil)
		}
		return nil
	})
}

func (s *Server) drop(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	return bson.D{{Key: "ns", Value: h.String()}}, s.write(r, func(txn *lungo.Transaction) error {
		if txn.Catalog().Namespaces[h] == nil {
			return errorf(codeNamespaceNotFound, "ns not found: %s", h.String())
		}
		if err := txn.Drop(h); err != nil {
			return s.engineError(err, h, nil)
		}
		return nil
	})
}

func (s *Server) dropDatabase(r *request) (bson.D, error) {
	if r.db == "" || r.db == "local" || r.db == "admin" || r.db == "config" {
		return nil, errorf(codeBadValue, "dropDatabase: cannot drop database %q", r.db)
	}
	return bson.D{{Key: "dropped", Value: r.db}}, s.write(r, func(txn *lungo.Transaction) error {
		if err := txn.Drop(lungo.Handle{r.db, ""}); err != nil {
			return s.engineError(err, lungo.Handle{r.db, ""}, nil)
		}
		return nil
	})
}

// renameCollection moves a collection with its documents and indexes,
// within a database or to another one; the change stream shows one rename
// event ({ns, to}), which invalidates streams on either collection.
func (s *Server) renameCollection(r *request) (bson.D, error) {
	if r.db != "admin" {
		return nil, errorf(codeUnauthorized, "renameCollection may only be run against the admin database.")
	}
	from, err := namespaceArg(r.cmd, "renameCollection")
	if err != nil {
		return nil, err
	}
	to, err := namespaceArg(r.cmd, "to")
	if err != nil {
		return nil, err
	}
	dropTarget := false
	if v := lookup(r.cmd, "dropTarget"); v != nil {
		b, ok := v.(bool)
		if !ok {
			return nil, errorf(codeTypeMismatch, "renameCollection: dropTarget must be a boolean, not %T", v)
		}
		dropTarget = b
	}
	return bson.D{}, s.write(r, func(txn *lungo.Transaction) error {
		if err := txn.Rename(from, to, dropTarget); err != nil {
			return s.engineError(err, from, nil)
		}
		return nil
	})
}

// namespaceArg reads a "db.collection" argument of a command.
func namespaceArg(cmd bson.D, field string) (lungo.Handle, error) {
	v := lookup(cmd, field)
	ns, ok := v.(string)
	if !ok {
		if v == nil {
			return lungo.Handle{}, errorf(codeFailedToParse, "renameCollection: %s is missing; it names a collection as \"db.collection\"", field)
		}
		return lungo.Handle{}, errorf(codeTypeMismatch, "renameCollection: %s must be a string \"db.collection\", not %T", field, v)
	}
	db, coll, ok := strings.Cut(ns, ".")
	if !ok || db == "" || coll == "" || strings.ContainsRune(ns, 0) || strings.HasPrefix(coll, "$") {
		return lungo.Handle{}, errorf(codeInvalidNamespace, "renameCollection: invalid %s namespace %q; want \"db.collection\"", field, ns)
	}
	return lungo.Handle{db, coll}, nil
}

func (s *Server) createIndexes(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	specs, ok := lookup(r.cmd, "indexes").(bson.A)
	if !ok || len(specs) == 0 {
		return nil, errorf(codeFailedToParse, "createIndexes needs indexes: a non-empty array")
	}
	var before, after int
	var created bool
	err = s.write(r, func(txn *lungo.Transaction) error {
		created = txn.Catalog().Namespaces[h] == nil
		if !created {
			before = len(txn.Catalog().Namespaces[h].Indexes)
		} else {
			before = 1
		}
		for _, v := range specs {
			spec, _ := v.(bson.D)
			key, ok := lookup(spec, "key").(bson.D)
			if !ok || len(key) == 0 {
				return errorf(codeFailedToParse, "index spec %v needs key: a non-empty document", spec)
			}
			name, _ := lookup(spec, "name").(string)
			cfg := mongokit.IndexConfig{Key: &key, Unique: asBool(lookup(spec, "unique"))}
			if p, ok := lookup(spec, "partialFilterExpression").(bson.D); ok {
				cfg.Partial = &p
			}
			if v := lookup(spec, "expireAfterSeconds"); v != nil {
				secs, ok := asInt(v)
				if !ok || secs < 0 || secs > math.MaxInt32 {
					return errorf(codeCannotCreateIndex, "index %q: TTL index 'expireAfterSeconds' option must be a number of seconds from 0 to 2147483647, got %v", name, v)
				}
				// The engine's zero means "no TTL"; the server's 0 means
				// "expire at the date in the field".
				cfg.Expiry = max(time.Duration(secs)*time.Second, time.Nanosecond)
			}
			if _, err := txn.CreateIndex(h, name, cfg); err != nil {
				return s.engineError(err, h, nil)
			}
		}
		after = len(txn.Catalog().Namespaces[h].Indexes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return bson.D{{Key: "numIndexesBefore", Value: int32(before)}, {Key: "numIndexesAfter", Value: int32(after)},
		{Key: "createdCollectionAutomatically", Value: created}}, nil
}

func (s *Server) dropIndexes(r *request) (bson.D, error) {
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	var before int
	err = s.write(r, func(txn *lungo.Transaction) error {
		ns := txn.Catalog().Namespaces[h]
		if ns == nil {
			return errorf(codeNamespaceNotFound, "ns not found: %s", h.String())
		}
		before = len(ns.Indexes)
		var names []string
		switch v := lookup(r.cmd, "index").(type) {
		case string:
			if v == "*" {
				for n := range ns.Indexes {
					if n != "_id_" {
						names = append(names, n)
					}
				}
				sort.Strings(names)
			} else {
				names = []string{v}
			}
		case bson.A:
			for _, x := range v {
				if n, ok := x.(string); ok {
					names = append(names, n)
				}
			}
		case bson.D:
			if err := txn.DropIndexByKey(h, &v); err != nil {
				return errorf(codeIndexNotFound, "can't find index with key: %v", v)
			}
			return nil
		default:
			return errorf(codeFailedToParse, "dropIndexes needs index: a name, an array of names, a key or \"*\"")
		}
		for _, n := range names {
			if n == "_id_" {
				return errorf(codeBadValue, "cannot drop _id index")
			}
			if err := txn.DropIndex(h, n); err != nil {
				if strings.Contains(err.Error(), "missing index") {
					return errorf(codeIndexNotFound, "index not found with name [%s]", n)
				}
				return s.engineError(err, h, nil)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return bson.D{{Key: "nIndexesWas", Value: int32(before)}}, nil
}

// query returns a filter for the engine, with $regex made evaluable.
func query(d bson.D) bsonkit.Doc { return doc(prepareQuery(d)) }
