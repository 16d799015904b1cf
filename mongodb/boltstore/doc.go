// Package boltstore is a lungo.Store on bbolt: the storage of godwit's
// embedded engine (lungo:PATH URIs, the demo, devdb), whose cost per commit
// is proportional to what the commit changed, not to the size of the data.
//
// # Basics
//
// lungo calls Store with the whole new catalog after every commit. lungo's
// own FileStore encodes and rewrites all of it (every collection and the
// oplog) with an fsync each time. This store writes only what changed
// (crash-safe: a commit is either fully on disk or not at all, and Store
// returns only after the fsync).
//
// A commit that only inserted, replaced, updated or deleted documents of
// namespaces the file already has, without index changes (nearly every
// commit), is appended to a write-ahead log next to the file (PATH.wal) as
// its oplog entries, with one fdatasync; bbolt would sync twice and rewrite
// the pages on the path to every changed key. Every 512 records or 8 MiB of
// log, before any other kind of commit, and at Close, a checkpoint writes
// what changed since the last one into bbolt in one transaction. Load
// replays the log first. See wal.go for the record format and why a record
// that a checkpoint covered is never replayed.
//
// A checkpoint (and a commit that cannot go to the log) writes, in one bbolt
// transaction:
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
//	meta                      format → "1", walgen → log generation
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
//   - PATH.wal belongs to PATH: copy or move both (after Close the log holds
//     nothing the bbolt file lacks).
//   - One process per file: a second Open fails with [ErrLocked] after the
//     lock timeout. Within one process, open the store once and share the
//     engine (package mongodb does).
//   - Load reads the whole catalog into memory (lungo is an in-memory engine)
//     and rebuilds the indexes: opening is proportional to the data.
//   - lungo's engine (godwit's patched copy, third_party/lungo) clones a
//     namespace in O(1) per write and finds a document by a plain _id in
//     the _id index, so inserts and writes by _id cost about the same at
//     1,000 and 100,000 documents (BenchmarkEngine_InsertOne,
//     BenchmarkEngine_UpdateOneByID). Other queries scan the collection:
//     lungo uses no secondary index to find documents.
package boltstore
