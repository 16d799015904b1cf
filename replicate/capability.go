package replicate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/godwit-dev/godwit/mongodb"
	"github.com/godwit-dev/godwit/sink"
)

// Apply modes (Config.Transactions).
const (
	// TransactionsAuto uses transactions when the target has them.
	TransactionsAuto = "auto"
	// TransactionsRequired refuses to start without them.
	TransactionsRequired = "required"
	// TransactionsOff never uses them.
	TransactionsOff = "off"
)

// Capabilities is what a target deployment supports, learned when a
// pipeline opens.
type Capabilities struct {
	// Topology is "embedded", "standalone", "replica set" or "sharded".
	Topology string `json:"topology"`
	// Transactions reports multi-document transactions.
	Transactions bool `json:"transactions"`
	// NoTransactions says why Transactions is false, in plain words.
	NoTransactions string `json:"no_transactions,omitempty"`
}

// Server error codes meaning "this server does not do that": retrying does
// not help.
var unsupportedCodes = []int{
	9,   // FailedToParse: FerretDB answers an unknown field or option so
	20,  // IllegalOperation: "Transaction numbers are only allowed on a replica set member or mongos"
	59,  // CommandNotFound
	115, // CommandNotSupported
	238, // NotImplemented
	263, // OperationNotSupportedInTransaction
}

// unsupportedCode reports a server error that says the server lacks a
// feature rather than that something went wrong this time.
func unsupportedCode(err error) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range unsupportedCodes {
		if se.HasErrorCode(c) {
			return true
		}
	}
	return false
}

// detectCapabilities asks the target what it is (hello) and, on a replica
// set or sharded cluster, whether a transaction really runs there (some
// MongoDB-compatible services say replica set and refuse transactions).
// The probe transaction inserts into the pipeline's state collection and is
// aborted: it leaves nothing behind. A network error is returned as an
// error; a server that refuses the probe has no transactions.
func detectCapabilities(ctx context.Context, target *mongodb.Conn, metadataDB, pipeline string) (Capabilities, error) {
	if target.Engine != nil || target.Embedded {
		return Capabilities{Topology: "embedded", Transactions: true}, nil
	}
	var hello bson.M
	if err := target.Client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return Capabilities{}, fmt.Errorf("ask target %s what it supports (hello): %w", target.Redacted, err)
	}
	c := Capabilities{Topology: "standalone"}
	switch {
	case hello["msg"] == "isdbgrid":
		c.Topology = "sharded"
	case hello["setName"] != nil:
		c.Topology = "replica set"
	default:
		c.NoTransactions = "it is a standalone server (hello names no replica set and no mongos); multi-document transactions need a replica set or a sharded cluster"
		return c, nil
	}
	err := target.Client.UseSession(ctx, func(sc lungo.ISessionContext) error {
		if err := sc.StartTransaction(txnOptions); err != nil {
			return err
		}
		_, err := stateColl(target.Client, metadataDB).InsertOne(sc, bson.D{{Key: "_id", Value: pipeline + "/probe"}})
		if aerr := sc.AbortTransaction(context.WithoutCancel(ctx)); err == nil {
			err = aerr
		}
		return err
	})
	switch {
	case err == nil:
		c.Transactions = true
	case unsupportedCode(err):
		c.NoTransactions = fmt.Sprintf("it says %s, but it refused a probe transaction: %v", c.Topology, err)
	default:
		return c, fmt.Errorf("probe transaction on target %s: %w", target.Redacted, err)
	}
	return c, nil
}

// chooseMode decides from the configured mode and the target's
// capabilities whether the pipeline applies in transactions; it refuses
// what cannot work with a message that names the pipeline, the target and
// the missing capability.
func chooseMode(cfg Config, target string, c Capabilities) (bool, error) {
	if cfg.Transactions == TransactionsOff {
		if cfg.Bidirectional {
			return false, fmt.Errorf("%w: pipeline %s: two-way replication (bidirectional: true) needs transactions on target %s for its origin markers, but transactions: off; remove transactions: off or make the pipeline one-way",
				ErrUnsupported, cfg.ID, target)
		}
		return false, nil
	}
	if c.Transactions {
		return true, nil
	}
	switch {
	case cfg.Bidirectional:
		return false, fmt.Errorf("%w: pipeline %s: two-way replication (bidirectional: true) needs multi-document transactions on target %s for its origin markers, and %s; use a replica set or sharded cluster as the target, or make the pipeline one-way",
			ErrUnsupported, cfg.ID, target, c.NoTransactions)
	case cfg.Transactions == TransactionsRequired:
		return false, fmt.Errorf("%w: pipeline %s: transactions: required, but target %s has no multi-document transactions: %s; use a replica set or sharded cluster, or set transactions: auto to apply without them",
			ErrUnsupported, cfg.ID, target, c.NoTransactions)
	}
	return false, nil
}

// unsupported turns a server's "I cannot do that" into one message naming
// the pipeline, the target and what it lacks, as a permanent error (the
// runner parks or halts instead of retrying what will never work). Other
// errors are returned as they are.
func (s *Sink) unsupported(what string, err error) error {
	if err == nil || !unsupportedCode(err) {
		return err
	}
	return sink.Permanent(fmt.Errorf("%w: pipeline %s: target %s does not support %s; the server said: %w",
		ErrUnsupported, s.cfg.ID, s.target.Redacted, what, err))
}

// targetPrivileges is what a pipeline's target user needs: reading and
// writing the replicated databases (those include globs name literally; all
// of them when a glob or a mapping leaves that open), DDL on them unless
// ddl is not apply, and the same on godwit's metadata database.
func targetPrivileges(cfg Config, metadataDB string) []mongodb.Privilege {
	dbs := map[string]bool{}
	for _, g := range cfg.Include {
		db, _, _ := strings.Cut(g, ".")
		if len(cfg.Mapping) > 0 || strings.ContainsAny(db, `*?[\`) {
			dbs = map[string]bool{"": true}
			break
		}
		dbs[db] = true
	}
	if len(cfg.Include) == 0 {
		dbs[""] = true
	}
	actions := []string{"find", "insert", "update", "remove"}
	if cfg.DDL == DDLApply {
		actions = append(actions, "createCollection", "createIndex", "dropCollection", "dropIndex")
	}
	var want []mongodb.Privilege
	names := make([]string, 0, len(dbs))
	for db := range dbs {
		names = append(names, db)
	}
	sort.Strings(names)
	for _, db := range append(names, metadataDB) {
		for _, a := range actions {
			want = append(want, mongodb.Privilege{DB: db, Action: a})
		}
	}
	return want
}
