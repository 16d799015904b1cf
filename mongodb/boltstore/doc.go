// Package boltstore is a lungo.Store on bbolt: the storage of godwit's
// embedded engine (lungo:PATH URIs, the demo, devdb), whose cost per commit
// is proportional to what the commit changed, not to the size of the data.
//
// # Basics
//
// lungo calls Store with the whole new catalog after every commit. lungo's
// own FileStore encodes and rewrites all of it (every collection and the
// oplog) with an fsync each time. This store writes only what changed, in one
// bbolt transaction (crash-safe: a commit is either fully on disk or not at
// all, and Store returns only after the fsync):
//
//   - the documents the commit inserted, replaced, updated or deleted,
//   - the index definitions it created or dropped,
//   - the oplog entries it appended, and the ones lungo trimmed from the head.
//
// What changed is found without comparing contents. lungo's catalog is
// copy-on-write: a commit clones only the namespaces it touches, so an
// unchanged namespace keeps its pointer, and every document write appends an
// oplog entry (with the document key and the full document). The store
// remembers the last oplog entry it wrote; the entries after it in the new
// catalog are the commit's changes, replayed in order. When that anchor is
// gone (the first commit into a new file, or a single commit that appended
// more entries than lungo keeps) the namespaces whose pointer changed are
// compared with the stored ones by document pointer (a map lookup per
// document, still writing only the differences); a namespace with no stored
// state, or whose replay does not add up, is rewritten whole. The result is
// always the catalog lungo committed.
//
// Indexes are stored as definitions and rebuilt from the documents on Load,
// as lungo's FileStore does; they cannot disagree with the documents.
//
// # Layout
//
//	meta                      format → "1"
//	ns/<db>\x00<coll>/docs    big-endian uint64 position → document BSON
//	ns/<db>\x00<coll>/ids     encoded _id → position
//	ns/<db>\x00<coll>/indexes index name → definition BSON (key, unique, partial, expiry)
//	oplog                     big-endian uint64 sequence → oplog entry BSON
//
// Positions keep lungo's natural order (insertion order, replacements in
// place), so queries without a sort return documents in the same order as
// with lungo's FileStore.
//
// # Migration
//
// Open detects a file written by lungo's FileStore (a single BSON document),
// converts it once, and keeps the original next to it as PATH.filestore.bak
// (see Migrated). The conversion is atomic: the new file replaces the old one
// by rename only after it is complete and synced.
//
// # Caveats
//
//   - One process per file: a second Open fails with [ErrLocked] after the
//     lock timeout. Within one process, open the store once and share the
//     engine (package mongodb does).
//   - Load reads the whole catalog into memory (lungo is an in-memory engine)
//     and rebuilds the indexes: opening is proportional to the data.
//   - The store makes commits cheap; lungo's engine itself still clones a
//     namespace's document set on every write and scans documents for
//     queries, so a write to a large collection costs time proportional to
//     that collection in memory (see BenchmarkEngine_InsertOne).
package boltstore
