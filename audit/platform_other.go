//go:build !unix

package audit

import "os"

// lockFile does nothing where flock is not available: one writer per log is
// then the operator's job.
func lockFile(*os.File) error { return nil }

// syncDir does nothing: directories cannot be fsync'd here; the rename is
// as durable as the platform makes it.
func syncDir(string) error { return nil }
