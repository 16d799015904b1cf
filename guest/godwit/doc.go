// Package godwit is the Go SDK for godwit functions: WebAssembly guests
// built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared that follow the
// ABI in docs/abi.md. Importing it provides the ABI's exports; a function
// registers its handler in init:
//
//	package main
//
//	import "github.com/godwit-dev/godwit/guest/godwit"
//
//	func init() { godwit.Handle(handle) }
//
//	func handle(ev godwit.Event) error {
//		godwit.Log("got " + ev.OperationType())
//		return nil
//	}
//
//	func main() {}
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o fn.wasm .
// (scripts/build-guests.sh builds the examples.)
//
// # Caveats
//
//   - main is never run (the module is a reactor): register in init.
//   - Event.Raw points into a buffer the host overwrites with the next
//     event: copy what you keep across calls.
//   - Handlers run at least once per event (a failed attempt is retried):
//     make writes idempotent, for example by using the change event's _id
//     (its resume token) as the _id of what you insert, and treating
//     ErrDuplicateKey as success.
//   - There is no filesystem, network or environment.
package godwit
