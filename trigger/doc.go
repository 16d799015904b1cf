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
// …) take effect at once while Run is active.
//
// Each enabled database trigger drains its own outbox cursor,
// "trigger:<id>", through a sink.Runner: events whose source, namespace,
// operation type and match expression fit are projected and passed to the
// function; failures are retried with backoff and then parked in the
// trigger's dead letters. Scheduled triggers run on Config.Clock.
// Authentication triggers run when ReportAuthEvent is called.
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
//   - The outbox cannot unregister a cursor yet, so a trigger disabled in
//     this process keeps holding retention until godwit restarts (then its
//     cursor is not registered). A trigger whose cursor fell behind
//     retention halts or skips ahead per tolerate_resume_errors, audited.
//   - Authentication events are not stored: ReportAuthEvent runs the
//     matching functions and reports failures to its caller, who retries.
//   - Invocation counts in Status are since this process started.
//   - With the embedded engine's file store as metadata, every metadata
//     write rewrites the whole file, stored modules included: fine for the
//     demo, slow with many large functions. Use a real deployment there.
package trigger
