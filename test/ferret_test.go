package test

import (
	"testing"

	"github.com/godwit-dev/godwit/internal/ferrettest"
)

// TestDemo_ReplicaURI replicates the demo into a real MongoDB-wire server
// (FerretDB, which has no transactions) and checks the replica there.
func TestDemo_ReplicaURI(t *testing.T) {
	srv := ferrettest.Start(t)
	s, _ := runDemo(t, "--ops", "300", "--data", t.TempDir(), "--replica-uri", srv.URI)
	if !s.Verified || s.Replicated != 300 || s.Captured != 300 {
		t.Fatalf("summary = %+v, want 300 events replicated into FerretDB and verified there", s)
	}
}
