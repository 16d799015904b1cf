// Package guestbuild compiles Go guests (GOOS=wasip1 GOARCH=wasm,
// -buildmode=c-shared) with the go command, for tests and tools. Tests build
// the example functions from source in TestMain rather than reading
// committed binaries, so what they exercise is never stale.
package guestbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
)

// Examples is the import path prefix of the example functions.
const Examples = "github.com/godwit-dev/godwit/guest/examples/"

// Build compiles each package (an import path) into dir and returns the
// module bytes by the package's last path element.
func Build(ctx context.Context, dir string, pkgs ...string) (map[string][]byte, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := make(map[string][]byte, len(pkgs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(pkgs))
	for i, pkg := range pkgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := path.Base(pkg)
			file := filepath.Join(dir, name+".wasm")
			cmd := exec.CommandContext(ctx, goCmd, "build", "-buildmode=c-shared", "-trimpath", "-o", file, pkg)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("build guest %s: %v\n%s", pkg, err, stderr.String())
				return
			}
			b, err := os.ReadFile(file)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			out[name] = b
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
