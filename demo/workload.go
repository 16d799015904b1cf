package demo

import (
	"fmt"
	"math/rand/v2"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
)

// Namespaces the workload writes to.
var Namespaces = []change.Namespace{
	{DB: "shop", Coll: "orders"},
	{DB: "shop", Coll: "customers"},
	{DB: "inventory", Coll: "items"},
}

// Fixed phases of every block of BlockOps operations: a burst of deletes in
// SessionsNS (a mass delete for the audit sink), a drop of DropNS and a
// rename of RenameNS onto RenamedNS. They sit at fixed positions so a
// continued workload always finds them where the model expects them.
const (
	BlockOps      = 500
	sessionsStart = 200 // inserts into SessionsNS
	sessionsN     = 30
	dropInsertAt  = 290 // one insert into DropNS, then its drop
	renameAt      = 292 // one insert into RenameNS, then its rename
)

// SessionsNS receives the mass-delete phase; DropNS is created and dropped;
// RenameNS is created and renamed onto RenamedNS (replacing the previous
// block's).
var (
	SessionsNS = change.Namespace{DB: "shop", Coll: "sessions"}
	DropNS     = change.Namespace{DB: "shop", Coll: "tmp_import"}
	RenameNS   = change.Namespace{DB: "shop", Coll: "tmp_staging"}
	RenamedNS  = change.Namespace{DB: "shop", Coll: "tmp_archive"}
)

// MassDeleteThreshold is the audit threshold the demo uses: the delete phase
// (SessionsN deletes) crosses it.
const MassDeleteThreshold = 20

// idSpace is how many distinct _ids each collection draws from, small enough
// that deleted _ids are inserted again.
const idSpace = 60

// Op is one workload operation and the change event it must produce.
type Op struct {
	Index int
	NS    change.Namespace
	// Kind is the operationType the write produces.
	Kind string
	// Variant says which update operator an update uses ($set, $inc,
	// $unset, $push). Kind "drop" drops the collection NS; kind "rename"
	// renames it to To, replacing what is there.
	Variant string
	To      change.Namespace
	ID      int32
	// Doc is the document for inserts and replaces; Update the update
	// document for updates.
	Doc    bson.D
	Update bson.D
}

// Workload generates a deterministic sequence of operations: the same seed
// always yields the same operations, and each operation depends only on the
// ones before it, so a workload can be regenerated up to any point and
// continued.
type Workload struct {
	rng  *rand.Rand
	next int
	// live holds the existing _ids per namespace in a deterministic order.
	live []idSet
}

type idSet struct {
	ids []int32
	pos map[int32]int
}

func (s *idSet) has(id int32) bool { _, ok := s.pos[id]; return ok }

func (s *idSet) add(id int32) {
	s.pos[id] = len(s.ids)
	s.ids = append(s.ids, id)
}

func (s *idSet) remove(id int32) {
	i := s.pos[id]
	last := s.ids[len(s.ids)-1]
	s.ids[i], s.pos[last] = last, i
	s.ids = s.ids[:len(s.ids)-1]
	delete(s.pos, id)
}

// NewWorkload returns a workload at operation 0.
func NewWorkload(seed uint64) *Workload {
	w := &Workload{rng: rand.New(rand.NewPCG(seed, 0x60d817))}
	for range Namespaces {
		w.live = append(w.live, idSet{pos: map[int32]int{}})
	}
	return w
}

// Next returns the next operation.
func (w *Workload) Next() Op {
	i := w.next
	w.next++
	switch p := i % BlockOps; {
	case p >= sessionsStart && p < sessionsStart+sessionsN:
		id := int32(p - sessionsStart)
		return Op{Index: i, NS: SessionsNS, Kind: change.OpInsert, ID: id,
			Doc: bson.D{{Key: "_id", Value: id}, {Key: "op", Value: int32(i)}, {Key: "user", Value: fmt.Sprintf("u%d", id)}}}
	case p >= sessionsStart+sessionsN && p < sessionsStart+2*sessionsN:
		return Op{Index: i, NS: SessionsNS, Kind: change.OpDelete, ID: int32(p - sessionsStart - sessionsN)}
	case p == dropInsertAt:
		return Op{Index: i, NS: DropNS, Kind: change.OpInsert, ID: 1, Doc: bson.D{{Key: "_id", Value: int32(1)}}}
	case p == dropInsertAt+1:
		return Op{Index: i, NS: DropNS, Kind: change.OpDrop}
	case p == renameAt:
		return Op{Index: i, NS: RenameNS, Kind: change.OpInsert, ID: 1, Doc: bson.D{{Key: "_id", Value: int32(1)}, {Key: "block", Value: int32(i / BlockOps)}}}
	case p == renameAt+1:
		return Op{Index: i, NS: RenameNS, Kind: change.OpRename, To: RenamedNS}
	}
	nsIdx := w.rng.IntN(len(Namespaces))
	live := &w.live[nsIdx]
	op := Op{Index: i, NS: Namespaces[nsIdx]}

	roll := w.rng.IntN(100)
	if len(live.ids) == 0 || (roll < 35 && len(live.ids) < idSpace) {
		// insert a free _id (possibly one deleted earlier)
		id := int32(w.rng.IntN(idSpace))
		for live.has(id) {
			id = (id + 1) % idSpace
		}
		live.add(id)
		op.Kind, op.ID = change.OpInsert, id
		op.Doc = bson.D{{Key: "_id", Value: id}, {Key: "op", Value: int32(i)},
			{Key: "qty", Value: int32(w.rng.IntN(10))}, {Key: "tags", Value: bson.A{"new"}},
			{Key: "note", Value: fmt.Sprintf("created by op %d", i)}}
		return op
	}
	id := live.ids[w.rng.IntN(len(live.ids))]
	op.ID = id
	switch {
	case roll < 70:
		op.Kind = change.OpUpdate
		switch w.rng.IntN(4) {
		case 0:
			op.Variant = "$set"
			op.Update = bson.D{{Key: "$set", Value: bson.D{{Key: "op", Value: int32(i)}, {Key: "status", Value: fmt.Sprintf("s%d", w.rng.IntN(5))}}}}
		case 1:
			op.Variant = "$inc"
			op.Update = bson.D{{Key: "$set", Value: bson.D{{Key: "op", Value: int32(i)}}}, {Key: "$inc", Value: bson.D{{Key: "qty", Value: int32(1 + w.rng.IntN(3))}}}}
		case 2:
			op.Variant = "$unset"
			op.Update = bson.D{{Key: "$set", Value: bson.D{{Key: "op", Value: int32(i)}}}, {Key: "$unset", Value: bson.D{{Key: "note", Value: ""}}}}
		default:
			op.Variant = "$push"
			op.Update = bson.D{{Key: "$set", Value: bson.D{{Key: "op", Value: int32(i)}}}, {Key: "$push", Value: bson.D{{Key: "tags", Value: fmt.Sprintf("t%d", i)}}}}
		}
	case roll < 82:
		op.Kind = change.OpReplace
		op.Doc = bson.D{{Key: "_id", Value: id}, {Key: "op", Value: int32(i)},
			{Key: "qty", Value: int32(w.rng.IntN(10))}, {Key: "replaced", Value: true}}
	default:
		op.Kind = change.OpDelete
		live.remove(id)
	}
	return op
}

// Ops returns operations [0, n) of the workload with this seed.
func Ops(seed uint64, n int) []Op {
	w := NewWorkload(seed)
	out := make([]Op, n)
	for i := range out {
		out[i] = w.Next()
	}
	return out
}
