package lungo

import (
	"context"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readconcern"
	"go.mongodb.org/mongo-driver/mongo/readpref"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"

	"github.com/256dpi/lungo/bsonkit"
)

var _ IDatabase = &Database{}

// Database wraps an Engine to be mongo compatible.
type Database struct {
	engine *Engine
	name   string
}

// Aggregate implements the IDatabase.Aggregate method.
func (d *Database) Aggregate(context.Context, interface{}, ...*options.AggregateOptions) (ICursor, error) {
	panic("lungo: not implemented")
}

// Client implements the IDatabase.Client method.
func (d *Database) Client() IClient {
	return &Client{
		engine: d.engine,
	}
}

// Collection implements the IDatabase.Collection method.
func (d *Database) Collection(name string, opts ...*options.CollectionOptions) ICollection {
	// merge options
	opt := options.MergeCollectionOptions(opts...)

	// assert supported options
	assertOptions(opt, map[string]string{
		"ReadConcern":    ignored,
		"WriteConcern":   ignored,
		"ReadPreference": ignored,
	})

	return &Collection{
		engine: d.engine,
		handle: Handle{d.name, name},
	}
}

// CreateCollection implements the IDatabase.CreateCollection method.
func (d *Database) CreateCollection(ctx context.Context, name string, opts ...*options.CreateCollectionOptions) error {
	// merge options
	opt := options.MergeCreateCollectionOptions(opts...)

	// assert supported options
	assertOptions(opt, map[string]string{})

	// begin transaction
	txn, err := d.engine.Begin(ctx, true)
	if err != nil {
		return err
	}

	// ensure abortion
	defer d.engine.Abort(txn)

	// create collection
	err = txn.Create(Handle{d.name, name})
	if err != nil {
		return err
	}

	// commit transaction
	err = d.engine.Commit(txn)
	if err != nil {
		return err
	}

	return nil
}

// CreateView implements the IDatabase.CreateView method.
func (d *Database) CreateView(_ context.Context, _, _ string, _ interface{}, _ ...*options.CreateViewOptions) error {
	panic("lungo: not implemented")
}

// Drop implements the IDatabase.Drop method.
func (d *Database) Drop(ctx context.Context) error {
	// begin transaction
	txn, err := d.engine.Begin(ctx, true)
	if err != nil {
		return err
	}

	// ensure abortion
	defer d.engine.Abort(txn)

	// drop all namespaces with database prefix
	err = txn.Drop(Handle{d.name, ""})
	if err != nil {
		return err
	}

	// commit transaction
	err = d.engine.Commit(txn)
	if err != nil {
		return err
	}

	return nil
}

// ListCollectionNames implements the IDatabase.ListCollectionNames method.
func (d *Database) ListCollectionNames(ctx context.Context, filter interface{}, opts ...*options.ListCollectionsOptions) ([]string, error) {
	// list collections
	res, err := d.ListCollections(ctx, filter, opts...)
	if err != nil {
		return nil, err
	}

	// convert cursor
	csr := res.(*Cursor)

	// collect names
	names := make([]string, 0)
	for _, doc := range csr.list {
		names = append(names, bsonkit.Get(doc, "name").(string))
	}

	return names, nil
}

// ListCollectionSpecifications implements the
// IDatabase.ListCollectionSpecifications method.
func (d *Database) ListCollectionSpecifications(context.Context, interface{}, ...*options.ListCollectionsOptions) ([]*mongo.CollectionSpecification, error) {
	panic("lungo: not implemented")
}

// ListCollections implements the IDatabase.ListCollections method.
func (d *Database) ListCollections(ctx context.Context, filter interface{}, opts ...*options.ListCollectionsOptions) (ICursor, error) {
	// merge options
	opt := options.MergeListCollectionsOptions(opts...)

	// assert supported options
	assertOptions(opt, map[string]string{})

	// transform filter
	query, err := bsonkit.Transform(filter)
	if err != nil {
		return nil, err
	}

	// list collections (route through useTransaction so session-bound
	// transactions are honored)
	res, err := useTransaction(ctx, d.engine, false, func(txn *Transaction) (interface{}, error) {
		return txn.ListCollections(Handle{d.name}, query)
	})
	if err != nil {
		return nil, err
	}

	return &Cursor{list: res.(bsonkit.List)}, nil
}

// Name implements the IDatabase.Name method.
func (d *Database) Name() string {
	return d.name
}

// ReadConcern implements the IDatabase.ReadConcern method.
func (d *Database) ReadConcern() *readconcern.ReadConcern {
	return readconcern.New()
}

// ReadPreference implements the IDatabase.ReadPreference method.
func (d *Database) ReadPreference() *readpref.ReadPref {
	return readpref.Primary()
}

// RunCommand implements the IDatabase.RunCommand method. The one command
// supported is renameCollection (on the admin database, as on a server):
//
//	{renameCollection: "db.from", to: "db.to", dropTarget: bool}
//
// Any other command returns an error.
func (d *Database) RunCommand(ctx context.Context, command interface{}, opts ...*options.RunCmdOptions) ISingleResult {
	// assert supported options
	assertOptions(options.MergeRunCmdOptions(opts...), map[string]string{
		"ReadPreference": ignored,
	})

	// convert command
	cmd, err := bsonkit.Convert(command)
	if err != nil {
		return &SingleResult{err: err}
	}
	if len(*cmd) == 0 {
		return &SingleResult{err: fmt.Errorf("lungo: empty command")}
	}
	if name := (*cmd)[0].Key; name != "renameCollection" {
		return &SingleResult{err: fmt.Errorf("lungo: command %q is not supported (only renameCollection is)", name)}
	}

	// run rename
	err = d.renameCollection(ctx, cmd)
	if err != nil {
		return &SingleResult{err: err}
	}

	return &SingleResult{doc: bsonkit.MustConvert(bson.M{"ok": 1.0})}
}

func (d *Database) renameCollection(ctx context.Context, cmd bsonkit.Doc) error {
	// check database
	if d.name != "admin" {
		return commandError(13, "Unauthorized", "renameCollection may only be run against the admin database.")
	}

	// get arguments
	var from, to Handle
	dropTarget := false
	for _, e := range *cmd {
		var err error
		switch e.Key {
		case "renameCollection":
			from, err = parseNamespace(e.Key, e.Value)
		case "to":
			to, err = parseNamespace(e.Key, e.Value)
		case "dropTarget":
			b, ok := e.Value.(bool)
			if !ok {
				err = commandError(14, "TypeMismatch", "dropTarget must be a boolean")
			}
			dropTarget = b
		case "writeConcern", "comment", "stayTemp":
		default:
			err = commandError(40415, "Location40415", "BSON field 'renameCollection.%s' is an unknown field.", e.Key)
		}
		if err != nil {
			return err
		}
	}
	if to[0] == "" {
		return commandError(40414, "Location40414", "BSON field 'renameCollection.to' is missing but a required field")
	}

	// begin transaction
	txn, err := d.engine.Begin(ctx, true)
	if err != nil {
		return err
	}

	// ensure abortion
	defer d.engine.Abort(txn)

	// rename namespace
	err = txn.Rename(from, to, dropTarget)
	if err != nil {
		return err
	}

	// commit transaction
	return d.engine.Commit(txn)
}

// parseNamespace parses a "db.coll" argument of a command.
func parseNamespace(field string, v interface{}) (Handle, error) {
	s, ok := v.(string)
	if !ok {
		return Handle{}, commandError(14, "TypeMismatch", "%s must be a string of the form \"db.collection\"", field)
	}
	db, coll, ok := strings.Cut(s, ".")
	if !ok || db == "" || coll == "" {
		return Handle{}, commandError(73, "InvalidNamespace", "invalid namespace %q for %s: want \"db.collection\"", s, field)
	}
	return Handle{db, coll}, nil
}

// RunCommandCursor implements the IDatabase.RunCommandCursor method.
func (d *Database) RunCommandCursor(context.Context, interface{}, ...*options.RunCmdOptions) (ICursor, error) {
	panic("lungo: not implemented")
}

// Watch implements the IDatabase.Watch method.
func (d *Database) Watch(_ context.Context, pipeline interface{}, opts ...*options.ChangeStreamOptions) (IChangeStream, error) {
	// merge options
	opt := options.MergeChangeStreamOptions(opts...)

	// assert supported options
	assertOptions(opt, map[string]string{
		"BatchSize":            ignored,
		"Comment":              ignored,
		"FullDocument":         ignored,
		"MaxAwaitTime":         ignored,
		"ResumeAfter":          supported,
		"StartAtOperationTime": supported,
		"StartAfter":           supported,
	})

	// transform pipeline
	filter, err := bsonkit.TransformList(pipeline)
	if err != nil {
		return nil, err
	}

	// reject non-empty pipelines
	if len(filter) > 0 {
		panic("lungo: change stream pipelines are not supported")
	}

	// get resume after
	var resumeAfter bsonkit.Doc
	if opt.ResumeAfter != nil {
		resumeAfter, err = bsonkit.Transform(opt.ResumeAfter)
		if err != nil {
			return nil, err
		}
	}

	// get start after
	var startAfter bsonkit.Doc
	if opt.StartAfter != nil {
		startAfter, err = bsonkit.Transform(opt.StartAfter)
		if err != nil {
			return nil, err
		}
	}

	// open stream
	stream, err := d.engine.Watch(Handle{d.name}, filter, resumeAfter, startAfter, opt.StartAtOperationTime)
	if err != nil {
		return nil, err
	}

	return stream, nil
}

// WriteConcern implements the IDatabase.WriteConcern method.
func (d *Database) WriteConcern() *writeconcern.WriteConcern {
	return nil
}
