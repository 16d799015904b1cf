// Package trigger owns godwit's triggers and functions: their storage in the
// metadata database, dispatch of captured change events to functions, the
// cron scheduler, and authentication events reported over the API. The
// wasm runtime lives in trigger/wasm, the gRPC services in trigger/api.
//
// # Basics
//
// Open a Manager with the outbox, the metadata deployment and the data
// sources (source id → deployment), call Run to start every enabled trigger,
// and Close to stop. Mutations (CreateTrigger, EnableTrigger, UpdateFunction,
// …) take effect at once while Run is active: they run one at a time and
// may read the metadata store, compile a module and wait for a stopping
// trigger's guest call; Status, WaitAcked, ReportAuthEvent and
// RetryDeadLetters never wait for them and see a trigger as running from
// when it started until a stop begins. Close stops every trigger and waits
// for every goroutine the Manager started.
//
// Each enabled trigger drains its own cursor, "trigger:<id>", through a
// sink.Runner: failures are retried with backoff and then parked in the
// trigger's dead letters (DeadLetters, RetryDeadLetters). Database
// triggers read the outbox: events whose source, namespace, operation type
// and match expression fit are projected and passed to the function. The
// others read the trigger queue (Config.QueuePath), a second outbox file:
// ReportAuthEvent appends reported authentication events to it, and each
// scheduled trigger appends its runs when they are due on Config.Clock.
//
// # Users
//
// Triggers and functions belong to a user (UserID). Deps.Allow bounds what
// a user's triggers may watch and write: checked when a trigger is stored
// (ErrNotAllowed) and again for every event and write while it runs. Every
// stored change is passed to Deps.Audit with the acting user from the
// context (auth.FromContext). Who may call what is the API's concern
// (trigger/api).
//
// # Caveats
//
//   - Delivery is at least once: a function's writes made before a failure
//     stay, and the event is tried again. Functions must be idempotent.
//   - A new database trigger starts at the last captured event, not at the
//     start of the retained history.
//   - A stopped trigger's cursor does not hold retention. A database
//     trigger whose cursor fell behind retention halts or skips ahead per
//     tolerate_resume_errors; the others skip ahead; audited either way.
//   - An authentication event is queued only for the triggers running
//     when it is reported.
//   - Invocation counts in Status are since this process started.
//   - With the embedded engine's file store as metadata, every metadata
//     write rewrites the whole file, stored modules included: fine for the
//     demo, slow with many large functions. Use a real deployment there.
package trigger
