package wasm

// SetWaitHook makes r call f whenever an instantiation starts waiting for
// room in the memory budget, so tests can wait for that event instead of
// for time to pass. Call it before the runtime is used.
func SetWaitHook(r *Runtime, f func()) { r.onWait = f }
