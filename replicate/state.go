package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/256dpi/lungo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/change"
)

// position orders a source's events: cluster time, then the resume token's
// _data (events of one real-server transaction share a cluster time; their
// tokens' hex strings sort in stream order). The embedded engine gives every
// event its own cluster time and no _data.
type position struct {
	T primitive.Timestamp `bson:"t"`
	K string              `bson:"k"`
}

func eventPosition(ev *change.Event) position {
	p := position{T: ev.ClusterTime}
	if ev.Token != nil {
		p.K, _ = ev.Token.Lookup("_data").StringValueOK()
	}
	return p
}

func (p position) after(q position) bool {
	if p.T != q.T {
		return p.T.After(q.T)
	}
	return p.K > q.K
}

func (p position) zero() bool { return p.T.T == 0 && p.T.I == 0 && p.K == "" }

// State documents in <metadata>.replicate_state, keyed by pipeline id:
//
//	{_id: "<id>/initial"}            initial-sync progress (initialState)
//	{_id: "<id>/applied/<worker>"}   the last applied position of a worker
//	{_id: "<id>/halted"}             why the pipeline halted
type initialState struct {
	ID         string     `bson:"_id"`
	Phase      string     `bson:"phase"`
	Started    time.Time  `bson:"started"`
	Finished   time.Time  `bson:"finished,omitempty"`
	Total      int64      `bson:"total"`
	Namespaces []copiedNS `bson:"namespaces"`
	Updated    time.Time  `bson:"updated"`
}

// copiedNS is the copy progress of one collection.
type copiedNS struct {
	Source  string              `bson:"source"`
	Target  string              `bson:"target"`
	Started bool                `bson:"started"`
	Done    bool                `bson:"done"`
	Copied  int64               `bson:"copied"`
	Total   int64               `bson:"total"`
	At      primitive.Timestamp `bson:"at"` // the snapshot the copy read
	// UUID is the source collection's uuid when its copy began (real
	// deployments): a different one later means the name now holds
	// another collection (a rename onto it, or a drop and create).
	UUID []byte `bson:"uuid,omitempty"`
}

type appliedState struct {
	ID      string    `bson:"_id"`
	Pos     position  `bson:"pos"`
	Workers int       `bson:"workers"`
	Updated time.Time `bson:"updated"`
}

type haltedState struct {
	ID     string    `bson:"_id"`
	Reason string    `bson:"reason"`
	At     time.Time `bson:"at"`
}

// Phase is where a pipeline is: starting, copying, streaming or halted.
type Phase string

// Phases of a pipeline.
const (
	PhaseStarting  Phase = "starting"
	PhaseCopying   Phase = "copying"
	PhaseStreaming Phase = "streaming"
	PhaseHalted    Phase = "halted"
)

const phaseDone = "done"

func initialID(pipeline string) string        { return pipeline + "/initial" }
func appliedID(pipeline string, w int) string { return fmt.Sprintf("%s/applied/%d", pipeline, w) }
func haltedID(pipeline string) string         { return pipeline + "/halted" }

func stateColl(c lungo.IClient, metadataDB string) lungo.ICollection {
	return c.Database(metadataDB).Collection(StateCollection)
}

func loadInitial(ctx context.Context, c lungo.IClient, metadataDB, pipeline string) (*initialState, error) {
	var st initialState
	err := stateColl(c, metadataDB).FindOne(ctx, bson.D{{Key: "_id", Value: initialID(pipeline)}}).Decode(&st)
	if isNoDocuments(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read initial-sync state of pipeline %s: %w", pipeline, err)
	}
	return &st, nil
}

func saveInitial(ctx context.Context, c lungo.IClient, metadataDB string, st *initialState) error {
	st.Updated = time.Now().UTC()
	_, err := stateColl(c, metadataDB).ReplaceOne(ctx, bson.D{{Key: "_id", Value: st.ID}}, st, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("store initial-sync state: %w", err)
	}
	return nil
}

// loadApplied returns the applied position of each of workers partitions.
// When the number of workers changed since they were stored, the partition
// of a document changed too: every partition then starts from the lowest
// stored position, which all earlier workers had reached.
func loadApplied(ctx context.Context, c lungo.IClient, metadataDB, pipeline string, workers int) ([]position, error) {
	cur, err := stateColl(c, metadataDB).Find(ctx, appliedRange(pipeline))
	if err != nil {
		return nil, fmt.Errorf("read applied positions of pipeline %s: %w", pipeline, err)
	}
	var all []appliedState
	if err := cur.All(ctx, &all); err != nil {
		return nil, fmt.Errorf("read applied positions of pipeline %s: %w", pipeline, err)
	}
	marks := make([]position, workers)
	same := true
	for _, a := range all {
		if a.Workers != workers {
			same = false
		}
	}
	if same {
		for _, a := range all {
			var w int
			if _, err := fmt.Sscanf(a.ID[len(pipeline):], "/applied/%d", &w); err == nil && w >= 0 && w < workers {
				marks[w] = a.Pos
			}
		}
		return marks, nil
	}
	var floor position
	for i, a := range all {
		if i == 0 || floor.after(a.Pos) {
			floor = a.Pos
		}
	}
	for w := range marks {
		marks[w] = floor
	}
	// Rewrite the positions under the new partitioning before anything is
	// applied with it.
	if _, err := stateColl(c, metadataDB).DeleteMany(ctx, appliedRange(pipeline)); err != nil {
		return nil, err
	}
	for w := range marks {
		if err := saveApplied(ctx, stateColl(c, metadataDB), pipeline, w, workers, floor); err != nil {
			return nil, err
		}
	}
	return marks, nil
}

func saveApplied(ctx context.Context, coll lungo.ICollection, pipeline string, w, workers int, pos position) error {
	_, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: appliedID(pipeline, w)}},
		appliedState{ID: appliedID(pipeline, w), Pos: pos, Workers: workers, Updated: time.Now().UTC()},
		options.Replace().SetUpsert(true))
	return err
}

// appliedRange selects a pipeline's applied positions by _id prefix ('0'
// sorts right after '/').
func appliedRange(pipeline string) bson.D {
	return bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: pipeline + "/applied/"}, {Key: "$lt", Value: pipeline + "/applied0"}}}}
}

func isNoDocuments(err error) bool {
	return errors.Is(err, mongo.ErrNoDocuments) || err != nil && err.Error() == mongo.ErrNoDocuments.Error()
}

// Progress is a pipeline's durable state as stored in its target, for
// `godwit status` when the daemon is not reachable.
type Progress struct {
	Pipeline   string         `json:"pipeline"`
	Phase      Phase          `json:"phase"`
	Copied     int64          `json:"copied"`
	Total      int64          `json:"total"`
	Namespaces []NSProgress   `json:"namespaces,omitempty"`
	Applied    []AppliedUntil `json:"applied,omitempty"`
	Halted     string         `json:"halted,omitempty"`
}

// NSProgress is the copy progress of one collection.
type NSProgress struct {
	Source string `json:"source"`
	Target string `json:"target"`
	Copied int64  `json:"copied"`
	Total  int64  `json:"total"`
	Done   bool   `json:"done"`
}

// AppliedUntil is the source cluster time up to which a worker applied.
type AppliedUntil struct {
	Worker      int       `json:"worker"`
	ClusterTime time.Time `json:"cluster_time"`
}

// LoadProgress reads a pipeline's state from its target deployment.
func LoadProgress(ctx context.Context, target lungo.IClient, metadataDB, pipeline string) (Progress, error) {
	p := Progress{Pipeline: pipeline, Phase: PhaseStarting}
	st, err := loadInitial(ctx, target, metadataDB, pipeline)
	if err != nil {
		return p, err
	}
	if st != nil {
		p.Phase = PhaseCopying
		if st.Phase == phaseDone {
			p.Phase = PhaseStreaming
		}
		p.Total = st.Total
		for _, n := range st.Namespaces {
			p.Copied += n.Copied
			p.Namespaces = append(p.Namespaces, NSProgress{Source: n.Source, Target: n.Target, Copied: n.Copied, Total: n.Total, Done: n.Done})
		}
	}
	var h haltedState
	if err := stateColl(target, metadataDB).FindOne(ctx, bson.D{{Key: "_id", Value: haltedID(pipeline)}}).Decode(&h); err == nil {
		p.Phase, p.Halted = PhaseHalted, h.Reason
	} else if !isNoDocuments(err) {
		return p, err
	}
	cur, err := stateColl(target, metadataDB).Find(ctx, appliedRange(pipeline))
	if err != nil {
		return p, err
	}
	var all []appliedState
	if err := cur.All(ctx, &all); err != nil {
		return p, err
	}
	for _, a := range all {
		var w int
		fmt.Sscanf(a.ID[len(pipeline):], "/applied/%d", &w)
		p.Applied = append(p.Applied, AppliedUntil{Worker: w, ClusterTime: time.Unix(int64(a.Pos.T.T), 0).UTC()})
	}
	return p, nil
}

// Reset forgets a pipeline's stored state on its target: copy progress,
// applied positions and a halt. The next start runs a new initial sync,
// which refuses target namespaces that still hold documents: drop the
// pipeline's target namespaces first. Run it while the pipeline is stopped.
func Reset(ctx context.Context, target lungo.IClient, metadataDB, pipeline string) error {
	coll := stateColl(target, metadataDB)
	if _, err := coll.DeleteMany(ctx, appliedRange(pipeline)); err != nil {
		return fmt.Errorf("reset pipeline %s: %w", pipeline, err)
	}
	for _, id := range []string{initialID(pipeline), haltedID(pipeline)} {
		if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
			return fmt.Errorf("reset pipeline %s: %w", pipeline, err)
		}
	}
	return nil
}
