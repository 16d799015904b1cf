// Package mongodb opens connections to MongoDB deployments behind lungo's
// generic driver interfaces, so the same code runs on a real cluster and on
// the embedded engine.
//
// URIs:
//
//	mongodb://… and mongodb+srv://…   a real deployment, via the official driver
//	lungo:memory                      an embedded engine in memory (lost at exit)
//	lungo:PATH                        an embedded engine persisted to the file PATH
//
// lungo:PATH files are stored by package boltstore: each commit writes only
// what it changed. A file written by lungo's FileStore (godwit before the
// store) is converted on first open; the original is kept as
// PATH.filestore.bak (Conn.Migrated).
//
// # Caveats
//
// An embedded engine lives inside this process: two URIs naming the same file
// share one engine (a file cannot be opened twice), and a second process
// opening the same file fails with boltstore.ErrLocked. The embedded engine panics on
// change-stream pipelines, so callers filter client-side when Embedded is
// true. Its oplog is capped (EmbeddedOplogSize).
package mongodb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/256dpi/lungo"
	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/mongo/driver/connstring"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb/boltstore"
)

// Kind is the kind of deployment a URI names.
type Kind int

// Kinds of deployment.
const (
	Real Kind = iota + 1
	EmbeddedMemory
	EmbeddedFile
)

// ErrScheme is returned by ParseURI for URIs that are neither mongodb://,
// mongodb+srv:// nor lungo:.
var ErrScheme = errors.New("unknown URI scheme")

// ParseURI checks uri and returns its kind and, for embedded files, the path
// (relative paths are resolved against base).
//
// It remembers the credentials uri carries (logging.RememberSecrets) before
// anything else reads it, so that no message quoting one, from the driver
// or elsewhere, prints it.
func ParseURI(uri, base string) (Kind, string, error) {
	logging.RememberSecrets(uri)
	switch {
	case strings.HasPrefix(uri, "mongodb://"), strings.HasPrefix(uri, "mongodb+srv://"):
		if err := checkPassword(uri); err != nil {
			return 0, "", err
		}
		if strings.HasPrefix(uri, "mongodb://") {
			// Validate without DNS lookups (+srv needs them).
			if _, err := connstring.Parse(uri); err != nil {
				return 0, "", errors.New(logging.RedactText(err.Error()))
			}
		}
		return Real, "", nil
	case uri == "lungo:memory":
		return EmbeddedMemory, "", nil
	case strings.HasPrefix(uri, "lungo:"):
		p := strings.TrimPrefix(strings.TrimPrefix(uri, "lungo:"), "//")
		if p == "" {
			return 0, "", errors.New("lungo: URI needs a file path or 'memory' (lungo:memory, lungo:/var/lib/godwit/source.bson)")
		}
		if !filepath.IsAbs(p) && base != "" {
			p = filepath.Join(base, p)
		}
		return EmbeddedFile, filepath.Clean(p), nil
	default:
		scheme, _, ok := strings.Cut(uri, ":")
		if !ok || strings.ContainsAny(scheme, "/@ ") {
			scheme = logging.RedactURI(uri)
		}
		return 0, "", fmt.Errorf("%w %q: use mongodb://, mongodb+srv:// or lungo:", ErrScheme, scheme)
	}
}

// checkPassword refuses a password with a broken %-escape before the
// driver does: the driver's message quotes the broken part of it.
func checkPassword(uri string) error {
	_, rest, _ := strings.Cut(uri, "://")
	at := strings.IndexByte(rest, '@')
	if at < 0 {
		return nil
	}
	if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
		if _, err := url.PathUnescape(pw); err != nil {
			return fmt.Errorf("%s: the password has a broken %%-escape: percent-encode '%%' as %%25 (and ':', '/', '@' as %%3A, %%2F, %%40)",
				logging.RedactURI(uri))
		}
	}
	return nil
}

// EmbeddedOplogSize is the oplog capacity of embedded engines opened here.
// lungo's default is 1000; a little more headroom lets a source survive short
// pauses of capture (back-pressure) without losing its position.
var EmbeddedOplogSize = 4000

// EmbeddedMinOplogAge is how long embedded oplog entries are kept even past
// EmbeddedOplogSize. Zero means lungo's default (5 minutes). Tests lower it
// to make "history lost" reachable.
var EmbeddedMinOplogAge time.Duration

// Conn is an open connection.
type Conn struct {
	Client   lungo.IClient
	Embedded bool
	// Engine is the embedded engine (nil for real deployments).
	Engine *lungo.Engine
	// Redacted is the URI with every credential masked
	// (logging.RedactURI), for logs, errors and status.
	Redacted string
	// Migrated is the backup of a lungo FileStore file that this Open
	// converted to the embedded store ("" otherwise), for a log line.
	Migrated string

	release func(context.Context) error
}

// Close releases the connection (an embedded engine is closed when its last
// user releases it).
func (c *Conn) Close(ctx context.Context) error { return c.release(ctx) }

type engineRef struct {
	client lungo.IClient
	engine *lungo.Engine
	store  *boltstore.Store
	refs   int
}

var (
	enginesMu sync.Mutex
	engines   = map[string]*engineRef{}
)

// Open connects to uri. Relative lungo: paths resolve against base.
func Open(ctx context.Context, uri, base string) (*Conn, error) {
	kind, path, err := ParseURI(uri, base)
	redacted := logging.RedactURI(uri)
	if err != nil {
		return nil, err
	}
	switch kind {
	case Real:
		opts := options.Client().ApplyURI(uri).SetAppName("godwit")
		client, err := lungo.Connect(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("connect %s: %s", redacted, logging.RedactText(err.Error()))
		}
		return &Conn{Client: client, Redacted: redacted, release: client.Disconnect}, nil
	case EmbeddedMemory:
		client, engine, err := lungo.Open(ctx, embeddedOptions(lungo.NewMemoryStore()))
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", uri, err)
		}
		return &Conn{Client: client, Embedded: true, Engine: engine, Redacted: uri,
			release: func(context.Context) error { engine.Close(); return nil }}, nil
	default:
		enginesMu.Lock()
		defer enginesMu.Unlock()
		ref := engines[path]
		migrated := ""
		if ref == nil {
			store, err := boltstore.Open(path, boltstore.Options{})
			if err != nil {
				return nil, err
			}
			client, engine, err := lungo.Open(ctx, embeddedOptions(store))
			if err != nil {
				_ = store.Close()
				return nil, fmt.Errorf("open embedded engine %s: %w", path, err)
			}
			if err := advanceClock(ctx, engine); err != nil {
				engine.Close()
				_ = store.Close()
				return nil, err
			}
			ref = &engineRef{client: client, engine: engine, store: store}
			engines[path] = ref
			migrated = store.Migrated()
		}
		ref.refs++
		var once sync.Once
		return &Conn{Client: ref.client, Embedded: true, Engine: ref.engine, Redacted: uri, Migrated: migrated,
			release: func(context.Context) error {
				var err error
				once.Do(func() {
					enginesMu.Lock()
					defer enginesMu.Unlock()
					if ref.refs--; ref.refs == 0 {
						ref.engine.Close()
						err = ref.store.Close()
						delete(engines, path)
					}
				})
				return err
			}}, nil
	}
}

func embeddedOptions(store lungo.Store) lungo.Options {
	return lungo.Options{Store: store, MaxOplogSize: EmbeddedOplogSize, MinOplogSize: 100,
		MinOplogAge: EmbeddedMinOplogAge, ExpireErrors: func(error) {}}
}

// LastOplogTime returns the cluster time of the newest entry in an embedded
// engine's oplog (false for real deployments or an empty oplog).
func (c *Conn) LastOplogTime() (primitive.Timestamp, bool) {
	if c.Engine == nil {
		return primitive.Timestamp{}, false
	}
	oplog := c.Engine.Catalog().Namespaces[lungo.Oplog]
	if oplog == nil || oplog.Documents.Len() == 0 {
		return primitive.Timestamp{}, false
	}
	ts, ok := bsonkit.Get(oplog.Documents.List()[oplog.Documents.Len()-1], "clusterTime").(primitive.Timestamp)
	return ts, ok
}

// advanceClock makes sure the engine's next cluster time is after the last
// one in its stored oplog. lungo's timestamps are (unix second, counter in
// this process); a process restarted within the same second would otherwise
// reuse timestamps, and oplog entry ids (the resume tokens) would collide.
func advanceClock(ctx context.Context, engine *lungo.Engine) error {
	oplog := engine.Catalog().Namespaces[lungo.Oplog]
	if oplog == nil || oplog.Documents.Len() == 0 {
		return nil
	}
	v := bsonkit.Get(oplog.Documents.List()[oplog.Documents.Len()-1], "clusterTime")
	last, ok := v.(primitive.Timestamp)
	if !ok {
		return nil
	}
	for {
		now := bsonkit.Now()
		if now.After(last) {
			return nil
		}
		if now.T < last.T {
			// The wall clock is behind the stored oplog: wait for it.
			select {
			case <-time.After(time.Duration(last.T-now.T) * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
