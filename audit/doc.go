// Package audit owns godwit's tamper-evident audit log of high-risk
// operations: the rules that pick them out of the change stream, the
// hash-chained JSON-lines log they are written to, its verification, and
// queries over it.
//
// # Basics
//
// A Sink (opened with Open) is a sink.Sink: the runner hands it outbox
// batches; it records dropDatabase, drop, rename, dropIndexes and modify
// events, mass deletes (more than N deletes in one namespace within T, by
// event time), events matching user rules, and unreadable events. godwit's
// own events (capture gaps, resyncs, daemon start and stop, ...) are added
// with RecordSystem. Every record carries an index (1, 2, 3, ...) and the
// hash of the record before it; each record's hash is the SHA-256 of its own
// line without the hash member. Every record is also sealed (seal.go): an
// HMAC under a key that evolves by a one-way function after each record,
// whose initial value is written once to PATH.key for the auditor to keep
// offline. Verify and Check check a log's chain against itself and, given
// an exported Head, against a cut or rewritten tail; CheckSealed also
// checks every seal with the verification keys, which finds a record
// appended or rewritten by anyone without godwit's sealing key at that
// moment. Query and Follow read records back with a Filter. DecodeLine is
// strict: valid UTF-8, no member given twice, one record per line.
// docs/audit.md describes the format and the threat model.
//
// # Exactly once
//
// Records are fsync'd before Deliver returns, and a state file next to the
// log (Path + ".state", replaced atomically after the log is synced) holds
// the highest outbox sequence processed, the open mass-delete bursts and the
// log's head. Redelivered events at or below that sequence are skipped.
// Detection is a pure function of the events and the saved state, so when a
// crash falls between syncing the log and saving the state, the redelivered
// batch reproduces the same records; the ones already in the log (found
// after the saved head on open) are not written again. A torn last line is
// cut on open. The state file also holds the current sealing key; records
// after the saved state are adopted only if that key's seals verify and they
// belong to the outbox events they claim. Otherwise, and for any other
// evidence of tampering, Open returns a halted Sink (Halted) whose Deliver
// halts its runner: the daemon keeps serving and nothing is acknowledged.
//
// # Caveats
//
//   - Change streams do not say who made a change: records of change events
//     carry no user. Correlate with MongoDB's own audit log by time,
//     namespace and document keys (see docs/audit.md).
//   - The chain has no secret: someone who can write the file can rewrite it
//     from some record on and recompute every later hash. Without the keys,
//     Verify detects that only against a head exported (and kept elsewhere)
//     from before the rewrite; CheckSealed detects it with the keys. A cut
//     tail is detected only against a head (or the state file). Export
//     heads often; godwit also logs the head every Config.HeadEvery records.
//   - Whoever steals the current sealing key (state file or memory) can
//     append records that verify, though never alter earlier ones; rotate
//     the key (WithNewKey) after a suspected compromise.
//   - The state file is a secret (mode 0600). A sealed log whose state file
//     is lost halts until it is restored or the key is rotated.
//   - A burst still open when the sink is closed is recorded then, with
//     ended "close"; deletes that go on after a restart form a new burst. A
//     burst open at a crash stays in the state file and is recorded when a
//     later event of its source closes its window (or at the next Close).
//   - Open checks the tail against the state file, not the whole chain: run
//     CheckSealed (godwit audit verify --key) for that.
//   - Mirroring into MongoDB is best effort and behind the file; the file is
//     the record of truth.
package audit
