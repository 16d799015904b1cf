package guests_test

import (
	"testing"

	"github.com/godwit-dev/godwit/demo/guests"
)

func TestEmbeddedFunctionsAreCurrent(t *testing.T) {
	sum, err := guests.SourceHash("../..")
	if err != nil {
		t.Fatal(err)
	}
	if sum != guests.RecordedSourceHash() {
		t.Fatalf("guest sources changed since the demo's functions were built: run scripts/build-demo-guests.sh")
	}
	for _, n := range guests.Names {
		b, err := guests.Wasm(n)
		if err != nil || len(b) < 8 || string(b[:4]) != "\x00asm" {
			t.Errorf("%s: not a wasm module (%v)", n, err)
		}
	}
}
