// Package runtime runs a configured godwit: it wires the configuration
// into components — the data path (outbox, capture, initial syncs, sink
// runners) and the control plane (metadata store, trigger manager, event
// subscriptions, the HTTP and gRPC listeners) — and runs them as one
// supervised group. `godwit serve` and `godwit demo` call [Open], then
// [Godwit.Run] and [Godwit.Close]; [Godwit.Status] is the snapshot the
// control plane reads (package status holds its types, so that admin,
// metrics and httpapi, which runtime imports, need not import runtime).
//
// # Basics
//
// Open opens the outbox, the connections, the sinks (through the sink
// registry, registering every sink cursor so that retention holds from the
// start), the metadata store and the trigger manager, and binds the
// listeners; nothing runs until Run. Components and their dependencies, in
// start order (they close in the reverse):
//
//	outbox
//	source ID                    ready once its change stream is open
//	sync ID       -> source SRC  replicate pipelines: ready once the initial sync is done
//	sink ID       (-> sync ID)   the runner; a pipeline's waits for its sync
//	metadata                     the metadata store's connection
//	triggers      -> metadata    the trigger manager (isolated: its failure stops only itself)
//	events                       subscriptions (open even without gRPC: durable cursors hold retention)
//	audit-api                    ends audit follow streams when godwit stops
//	http                         /metrics, /healthz, /readyz (unless api.http_addr is off)
//	grpc                         the gRPC API (unless api.grpc_addr is off)
//	admin-health  -> grpc        the gRPC health service, from status
//
// Connections are found by source id, never by position.
//
// The supervision is generic (group.go, func.go: no domain imports).
// Everything that runs until godwit stops — a source's capture, a sink's
// runner, the trigger manager, the events engine, the listeners — is a
// [Component]: a name, Run(ctx) and Close(ctx). Optional abilities are
// separate interfaces: [Readier] (a channel closed once dependents may
// start), [Dependent] (the names of components that must be ready first) and
// [Reporter] (a status snapshot).
//
// A [Group] holds components in the order they were opened. Run starts each
// one as soon as the components it depends on are ready, and supervises them
// together: the first component whose Run fails is logged with its name and
// stops the rest (their context is cancelled), and Run returns that error.
// A component whose Run returns nil has simply finished; the others go on,
// as they do when an [Isolated] component fails.
// Close closes every component in the reverse of the start order and joins
// every error.
//
// # Caveats
//
//   - A component that stops without becoming ready never lets its dependents
//     start: they are skipped (State "blocked"), not failed. A halted source
//     is such a component: its pipelines wait, the rest of godwit runs.
//   - Run checks the dependencies before starting anything: an unknown name
//     or a cycle is an error and nothing runs.
//   - Close must be called after Run returned (or instead of it); it closes
//     components that never started too, since they were opened.
//   - Run must return soon after its context ends: the group waits for every
//     Run before it returns.
//   - A halted source or sink, or a pipeline whose initial sync failed, stops
//     alone (its Run returns nil): godwit goes on, status shows the halt.
package runtime
