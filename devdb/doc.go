// Package devdb serves an embedded lungo engine over the MongoDB wire
// protocol, so mongosh, any driver and several godwit processes can share
// one development deployment, and godwit's real mongodb:// path (the
// official driver's change streams, resume, sessions, transactions) runs
// end to end in tests.
//
// # Basics
//
// Open(engine, Config{Addr: "127.0.0.1:27017"}) listens and serves until
// Close; URI returns the connection string. devdb presents itself as the
// primary of a one-member replica set (maxWireVersion 21, MongoDB 7.0) so
// drivers allow sessions, transactions and change streams. It speaks
// OP_MSG, and OP_QUERY for the legacy hello/isMaster handshake. The engine
// stays the caller's: other users of it in the same process see devdb's
// writes and devdb's change streams see theirs.
//
// Change streams are read from the engine's oplog by devdb itself: resume
// tokens are {_data: hex} with the cluster time first, every batch carries
// postBatchResumeToken (advancing over filtered-out entries), getMore waits
// up to maxTimeMS for a commit, and $match/$project/$unset after
// $changeStream are evaluated here. Events of a transaction committed
// through devdb carry lsid and txnNumber.
//
// # Caveats
//
// devdb is for trying godwit, tests and local development, never for
// production data:
//   - transactions read and write a snapshot taken at their first command
//     and hold no lock until commit; commit replays their oplog entries
//     under the engine's write lock and fails with WriteConflict
//     (TransientTransactionError, so drivers retry) when a document they
//     wrote changed since the snapshot. Phantoms (documents a multi-update
//     would now match) are not detected. Catalog commands are refused
//     inside transactions. Transactions idle longer than
//     Config.TransactionLifetime are aborted.
//   - snapshot reads (readConcern snapshot) report atClusterTime; there is
//     no history, so a read at an older time gets SnapshotTooOld.
//   - no authentication, no TLS, no compression, no exhaust cursors.
//   - a subset of commands and aggregation stages (see docs/devdb.md);
//     anything else is answered with CommandNotFound (59) or an
//     unrecognized-stage error, never served wrongly.
//   - no pre-images; an update event's fullDocument (updateLookup) is the
//     document as the update left it, not as it is when read.
//   - retryable writes are not deduplicated: a write retried after a lost
//     reply may apply twice.
//   - the oplog is the engine's: capped by size and age; a stream whose
//     position fell out of it fails with ChangeStreamHistoryLost (286).
//   - $regex in queries uses Go's RE2 syntax (devdb adds $regex to lungo's
//     matcher, process-wide).
package devdb
