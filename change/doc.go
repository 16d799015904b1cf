// Package change is godwit's view of a MongoDB change event: lenient parsing
// of the raw BSON a server (or the embedded engine) sends, namespaces and
// namespace globs, the one event Filter that capture, replicate, events and
// triggers share (its table of cases is change/filtertest), and reassembly
// of events split by $changeStreamSplitLargeEvent.
//
// # Caveats
//
// Parsing never rejects an event for a field it does not know or an
// operationType it has not seen: godwit stores every event it receives and
// decides later what a sink does with it. Parse fails only for bytes that are
// not a BSON document, or for known fields of the wrong BSON type.
package change
