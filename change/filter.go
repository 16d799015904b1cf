package change

import "slices"

// DefaultMetadataDB is godwit's metadata database when none is configured.
const DefaultMetadataDB = "godwit"

// Filter answers "does this event concern what I watch?" for every part of
// godwit that asks it: capture (what is stored), replicate (what is
// applied), subscriptions (what is sent) and database triggers (what a
// function runs on). change/filtertest holds the table of cases that each of
// them runs against its own entry point.
//
// The rules, in order:
//
//  1. Operation type. Operations empty: every type passes. Otherwise an
//     event passes when its type is listed; a type godwit does not know (not
//     in KnownOperationTypes) passes too when KeepUnknown is set, so that a
//     stage that stores events (capture) never drops what a later stage may
//     understand.
//  2. No namespace. An event without ns.db (an invalidate, an operation type
//     godwit does not know) names no namespace the globs could judge: it
//     passes the namespace rules. Only rule 1 can drop it.
//  3. The metadata database. An event whose ns is in MetadataDB (default
//     DefaultMetadataDB) is godwit's own write: it never passes, whatever
//     its `to`. A namespace in MetadataDB never passes rule 4 either.
//  4. Namespaces. A namespace passes when it is outside MetadataDB, matches
//     an Include glob (or Include is empty) and matches no Ignore glob. An
//     Ignore glob with a collection part never drops a database-level
//     namespace (ignoring "shop.logs" does not ignore dropDatabase shop);
//     an Include glob matches a database-level namespace when its database
//     part does (dropping a database drops the collections it names).
//  5. Two namespaces. An event that names a second namespace in `to` (a
//     rename) passes when either namespace passes rule 4: a collection
//     moving into or out of what is watched changes what is watched. So a
//     rename from an ignored namespace into an included one passes, and a
//     rename from an unwatched namespace into an ignored one does not.
//
// The zero Filter passes every event outside DefaultMetadataDB.
type Filter struct {
	// Include keeps only namespaces matching one of these globs; empty:
	// every namespace.
	Include []Glob
	// Ignore drops namespaces matching any of these globs.
	Ignore []Glob
	// Operations keeps only these operation types; empty: every type.
	Operations []string
	// KeepUnknown lets operation types godwit does not know through a
	// non-empty Operations.
	KeepUnknown bool
	// MetadataDB is godwit's own database, never passed. Default
	// DefaultMetadataDB.
	MetadataDB string
}

func (f Filter) metadataDB() string {
	if f.MetadataDB == "" {
		return DefaultMetadataDB
	}
	return f.MetadataDB
}

// Match reports whether ev passes the filter (rules 1 to 5).
func (f Filter) Match(ev *Event) bool {
	if !f.Operation(ev.OperationType) {
		return false
	}
	if ev.NS.DB == "" {
		return true
	}
	if ev.NS.DB == f.metadataDB() {
		return false
	}
	return f.Namespace(ev.NS) || ev.To.DB != "" && f.Namespace(ev.To)
}

// Operation reports whether an event of operation type op passes rule 1.
func (f Filter) Operation(op string) bool {
	if len(f.Operations) == 0 || slices.Contains(f.Operations, op) {
		return true
	}
	return f.KeepUnknown && !Known(op)
}

// Namespace reports whether ns passes rule 4: outside the metadata
// database, included and not ignored.
func (f Filter) Namespace(ns Namespace) bool {
	if ns.DB == f.metadataDB() {
		return false
	}
	for _, g := range f.Ignore {
		if g.Match(ns) && !(ns.Coll == "" && g.hasColl) {
			return false
		}
	}
	if len(f.Include) == 0 {
		return true
	}
	for _, g := range f.Include {
		if g.Match(ns) {
			return true
		}
	}
	return false
}

// Unfiltered reports whether the filter has no include, ignore or
// operation rule (only the metadata database is dropped).
func (f Filter) Unfiltered() bool {
	return len(f.Include) == 0 && len(f.Ignore) == 0 && len(f.Operations) == 0
}
