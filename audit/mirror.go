package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/godwit-dev/godwit/logging"
)

// WithMirror mirrors records into coll (for example a collection of the
// embedded engine), instead of connecting to Config.Mirror.URI.
func WithMirror(coll lungo.ICollection) Option {
	return func(o *openOptions) { o.mirrorColl = coll }
}

// mirror copies log records into a MongoDB collection, behind the log and
// without holding it up: the file is the record of truth, and the mirror
// catches up from it after any failure. Documents have _id = index, so a
// record copied twice is written once.
type mirror struct {
	coll   lungo.ICollection
	client lungo.IClient // set when the mirror connected itself
	path   string
	log    zerolog.Logger

	kickc  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // serialises sync; guards the fields below
	next   uint64     // index of the next record to copy; 0: not yet known
	offset int64      // where that record starts in the file
}

func startMirror(cfg Config, coll lungo.ICollection, log zerolog.Logger) (*mirror, error) {
	m := &mirror{coll: coll, path: cfg.Path, log: log.With().Str("component", "audit_mirror").Logger(),
		kickc: make(chan struct{}, 1), done: make(chan struct{})}
	if coll == nil {
		mc := cfg.Mirror
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client, err := lungo.Connect(ctx, options.Client().ApplyURI(mc.URI))
		if err != nil {
			return nil, fmt.Errorf("audit mirror %s: %s", logging.RedactURI(mc.URI), logging.RedactText(err.Error()))
		}
		m.client = client
		m.coll = client.Database(mc.Database).Collection(mc.Collection)
		m.log = m.log.With().Str("mirror", mc.Database+"."+mc.Collection).Logger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(ctx)
	m.kick()
	return m, nil
}

// kick asks the mirror to catch up.
func (m *mirror) kick() {
	select {
	case m.kickc <- struct{}{}:
	default:
	}
}

func (m *mirror) run(ctx context.Context) {
	defer close(m.done)
	const minRetry, maxRetry = time.Second, time.Minute
	retry := minRetry
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kickc:
		case <-timer:
		}
		timer = nil
		if err := m.sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn().Str("error", logging.RedactText(err.Error())).Dur("retry_in", retry).
				Msg("audit mirror behind the log; the log file is unaffected")
			timer = time.After(retry)
			retry = min(retry*2, maxRetry)
			continue
		}
		retry = minRetry
	}
}

// stop ends the loop and makes a last attempt to catch up within ctx.
func (m *mirror) stop(ctx context.Context) error {
	m.cancel()
	<-m.done
	err := m.sync(ctx)
	if err != nil {
		err = fmt.Errorf("audit mirror left behind the log (it catches up on the next start): %s", logging.RedactText(err.Error()))
	}
	if m.client != nil {
		if e := m.client.Disconnect(ctx); err == nil && e != nil {
			err = e
		}
	}
	return err
}

// sync copies every complete record the collection does not have yet.
func (m *mirror) sync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := os.Open(m.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if m.next == 0 {
		if err := m.locate(ctx, f); err != nil {
			return err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r := io.NewSectionReader(f, m.offset, fi.Size()-m.offset)
	br := newLineReader(r)
	for {
		line, err := br.next()
		if err == io.EOF {
			return nil // an incomplete last line is copied once it is complete
		}
		if err != nil {
			return err
		}
		rec, err := DecodeLine(line)
		if err != nil {
			return fmt.Errorf("record at byte %d: %w", m.offset, err)
		}
		if rec.Index != m.next {
			return fmt.Errorf("record at byte %d has index %d, expected %d: the log changed under the mirror", m.offset, rec.Index, m.next)
		}
		doc, err := mirrorDoc(rec)
		if err != nil {
			return err
		}
		filter := bson.D{{Key: "_id", Value: int64(rec.Index)}}
		_, err = m.coll.ReplaceOne(ctx, filter, doc, options.Replace().SetUpsert(true))
		if mongo.IsDuplicateKeyError(err) {
			// An upsert is not atomic on every server: FerretDB still runs
			// a copy whose client gave up (a cancelled sync), and both
			// inserted. The record is there now: replace it.
			_, err = m.coll.ReplaceOne(ctx, filter, doc, options.Replace().SetUpsert(true))
		}
		if err != nil {
			return fmt.Errorf("copy record %d: %w", rec.Index, err)
		}
		m.next++
		m.offset += int64(len(line)) + 1
	}
}

// locate finds the first record the collection lacks.
func (m *mirror) locate(ctx context.Context, f *os.File) error {
	var last struct {
		ID int64 `bson:"_id"`
	}
	err := m.coll.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}})).Decode(&last)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("find the last mirrored record: %w", err)
	}
	br := newLineReader(f)
	var offset int64
	for i := int64(0); i < last.ID; i++ {
		line, err := br.next()
		if err != nil {
			return fmt.Errorf("the mirror has record %d but the log has only %d complete records", last.ID, i)
		}
		offset += int64(len(line)) + 1
	}
	m.next, m.offset = uint64(last.ID)+1, offset
	return nil
}

// mirrorDoc is the document of a record: its fields as in the log (relaxed
// Extended JSON decoded to BSON), _id = index, and time and recorded_at as
// BSON dates so they can be queried by range.
func mirrorDoc(r Record) (bson.D, error) {
	var d bson.D
	if err := bson.UnmarshalExtJSON(r.Line(), false, &d); err != nil {
		return nil, fmt.Errorf("record %d as BSON: %w", r.Index, err)
	}
	for i := range d {
		switch d[i].Key {
		case "time":
			d[i].Value = primitive.NewDateTimeFromTime(r.Time)
		case "recorded_at":
			d[i].Value = primitive.NewDateTimeFromTime(r.RecordedAt)
		}
	}
	return append(bson.D{{Key: "_id", Value: int64(r.Index)}}, d...), nil
}
