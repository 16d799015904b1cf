// Package wasm runs godwit functions: WebAssembly modules that follow the
// guest ABI of docs/abi.md, executed by wazero.
//
// # Basics
//
// A Runtime owns one wazero runtime (with an optional on-disk compilation
// cache) and the host module "godwit" that guests import. Compile validates
// a module against the ABI and compiles it once; the returned Module keeps a
// pool of instantiated copies, so that compiling (about half a second for a
// Go guest) and instantiating (tens of milliseconds) happen once per module
// and pool slot, never per event. Module.Call writes the event into a
// buffer the guest allocated, calls its handler and returns what it did.
//
// # Sandbox
//
// Guests get WASI with no preopened directories, no environment, no
// arguments and no sockets; clocks and randomness are real. Memory is
// capped per instance (Config.MemoryLimit) and for all instances together
// (Config.MemoryBudget: reserved before an instance gets it, idle pooled
// instances closed to make room, memory.grow past it refused), and every
// call has a deadline, as has the instantiation Compile validates with:
// the runtime is built with WithCloseOnContextDone, so a guest looping
// forever is stopped at its next loop header or call.
//
// # Caveats
//
//   - An instance whose call trapped, exited or ran out of time is closed and
//     replaced by a fresh one on a later call: guest state (Go globals) is
//     not preserved across such failures, and between healthy calls only
//     within one pool slot.
//   - Calls on one Module run in parallel up to Config.PoolSize; more wait.
//   - Host writes are performed during the call: a call that fails after a
//     write leaves the write in place. Functions are run at least once per
//     event and must be idempotent.
//   - What a guest hands the host is checked before anyone trusts it: results
//     and written documents must be well-formed BSON nested at most MaxDepth
//     levels (CheckDocument), results at most Config.MaxResultBytes; logs are
//     cut at Config.MaxLogBytes per call and at a per-module rate
//     (Config.LogLinesPerSecond, Config.LogBytesPerSecond), the excess
//     counted in Module.LogStats.
package wasm
