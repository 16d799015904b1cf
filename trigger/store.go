package trigger

import (
	"context"
	"errors"
	"fmt"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Collections in the metadata database.
const (
	collTriggers  = "triggers"
	collFunctions = "functions"
	collChunks    = "function_chunks"
)

// chunkSize keeps each stored piece of a module far below MongoDB's 16 MiB
// document limit, like GridFS does.
const chunkSize = 1 << 20

// store keeps triggers and functions in the metadata database. Mutations
// are serialised by the Manager, which makes the name checks race-free in
// one daemon.
type store struct {
	triggers, functions, chunks lungo.ICollection
}

func newStore(client lungo.IClient, database string) *store {
	db := client.Database(database)
	return &store{triggers: db.Collection(collTriggers), functions: db.Collection(collFunctions), chunks: db.Collection(collChunks)}
}

func newID() string { return primitive.NewObjectID().Hex() }

func (s *store) getTrigger(ctx context.Context, id string) (Trigger, error) {
	return s.findTrigger(ctx, id, bson.M{"_id": id})
}

// getTriggerOf reads trigger id if owner owns it. Another owner's trigger
// and an id that does not exist run the same query, find nothing and
// return the same error, so neither the answer nor the work behind it
// tells them apart.
func (s *store) getTriggerOf(ctx context.Context, id, owner string) (Trigger, error) {
	return s.findTrigger(ctx, id, bson.M{"_id": id, "user_id": owner})
}

func (s *store) findTrigger(ctx context.Context, id string, filter bson.M) (Trigger, error) {
	var t Trigger
	err := s.triggers.FindOne(ctx, filter).Decode(&t)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return t, fmt.Errorf("trigger %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("read trigger %s: %w", id, err)
	}
	return t, nil
}

func (s *store) findTriggers(ctx context.Context, filter bson.M) ([]Trigger, error) {
	cur, err := s.triggers.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "user_id", Value: 1}, {Key: "name", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("query triggers: %w", err)
	}
	var out []Trigger
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("query triggers: %w", err)
	}
	return out, nil
}

func (s *store) putTrigger(ctx context.Context, t Trigger) error {
	_, err := s.triggers.ReplaceOne(ctx, bson.M{"_id": t.ID}, t, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("write trigger %s: %w", t.ID, err)
	}
	return nil
}

func (s *store) deleteTrigger(ctx context.Context, id string) error {
	_, err := s.triggers.DeleteOne(ctx, bson.M{"_id": id})
	return err
}

// nameTaken reports whether another document of the user has the name.
func nameTaken(ctx context.Context, c lungo.ICollection, user, name, id string) (bool, error) {
	n, err := c.CountDocuments(ctx, bson.M{"user_id": user, "name": name, "_id": bson.M{"$ne": id}})
	return n > 0, err
}

func (s *store) getFunction(ctx context.Context, id string, withWasm bool) (Function, error) {
	return s.findFunction(ctx, id, bson.M{"_id": id}, withWasm)
}

// getFunctionOf reads function id if owner owns it: like getTriggerOf, one
// query for another owner's function and for an unknown id.
func (s *store) getFunctionOf(ctx context.Context, id, owner string, withWasm bool) (Function, error) {
	return s.findFunction(ctx, id, bson.M{"_id": id, "user_id": owner}, withWasm)
}

func (s *store) findFunction(ctx context.Context, id string, filter bson.M, withWasm bool) (Function, error) {
	var f Function
	err := s.functions.FindOne(ctx, filter).Decode(&f)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return f, fmt.Errorf("function %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return f, fmt.Errorf("read function %s: %w", id, err)
	}
	if withWasm {
		if f.Wasm, err = s.getModule(ctx, f.ModuleID, f.Size); err != nil {
			return f, fmt.Errorf("read module of function %s: %w", id, err)
		}
	}
	return f, nil
}

func (s *store) findFunctions(ctx context.Context, filter bson.M) ([]Function, error) {
	cur, err := s.functions.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "user_id", Value: 1}, {Key: "name", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("query functions: %w", err)
	}
	var out []Function
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("query functions: %w", err)
	}
	return out, nil
}

func (s *store) putFunction(ctx context.Context, f Function) error {
	_, err := s.functions.ReplaceOne(ctx, bson.M{"_id": f.ID}, f, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("write function %s: %w", f.ID, err)
	}
	return nil
}

func (s *store) deleteFunction(ctx context.Context, id string) error {
	_, err := s.functions.DeleteOne(ctx, bson.M{"_id": id})
	return err
}

type chunk struct {
	ID     string `bson:"_id"`
	Module string `bson:"module_id"`
	N      int    `bson:"n"`
	Data   []byte `bson:"data"`
}

// putModule stores a module's bytes under a new module id. The function
// document is switched to it afterwards, so a crash in between leaves only
// orphaned chunks, never a function pointing at a partial module.
func (s *store) putModule(ctx context.Context, wasm []byte) (string, error) {
	id := newID()
	var docs []any
	for n, off := 0, 0; off < len(wasm) || n == 0; n, off = n+1, off+chunkSize {
		end := min(off+chunkSize, len(wasm))
		docs = append(docs, chunk{ID: fmt.Sprintf("%s:%d", id, n), Module: id, N: n, Data: wasm[off:end]})
	}
	for _, d := range docs {
		// One insert per chunk keeps every request below the 48 MB
		// message limit of a real server.
		if _, err := s.chunks.InsertOne(ctx, d); err != nil {
			_ = s.deleteModule(ctx, id)
			return "", fmt.Errorf("store module: %w", err)
		}
	}
	return id, nil
}

func (s *store) getModule(ctx context.Context, id string, size int64) ([]byte, error) {
	cur, err := s.chunks.Find(ctx, bson.M{"module_id": id}, options.Find().SetSort(bson.M{"n": 1}))
	if err != nil {
		return nil, err
	}
	var chunks []chunk
	if err := cur.All(ctx, &chunks); err != nil {
		return nil, err
	}
	out := make([]byte, 0, size)
	for i, c := range chunks {
		if c.N != i {
			return nil, fmt.Errorf("module %s: chunk %d missing", id, i)
		}
		out = append(out, c.Data...)
	}
	if int64(len(out)) != size {
		return nil, fmt.Errorf("module %s: %d bytes stored, %d expected", id, len(out), size)
	}
	return out, nil
}

func (s *store) deleteModule(ctx context.Context, id string) error {
	_, err := s.chunks.DeleteMany(ctx, bson.M{"module_id": id})
	return err
}
