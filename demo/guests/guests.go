// Package guests embeds the example functions the demo registers as
// triggers: the Go guests of guest/examples, built for wasip1 and gzipped.
// scripts/build-demo-guests.sh rebuilds them; a test fails when the sources
// changed since (SOURCES.sha256).
package guests

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

//go:embed *.wasm.gz SOURCES.sha256
var files embed.FS

// Names are the embedded functions.
var Names = []string{"cacheupdater", "auditenricher", "notifier"}

// Wasm returns the module of the named function.
func Wasm(name string) ([]byte, error) {
	gz, err := files.ReadFile(name + ".wasm.gz")
	if err != nil {
		return nil, fmt.Errorf("no embedded function %q", name)
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// RecordedSourceHash is the source hash the embedded modules were built from.
func RecordedSourceHash() string {
	b, _ := files.ReadFile("SOURCES.sha256")
	return string(bytes.TrimSpace(b))
}

// SourceHash hashes the Go files the embedded modules are built from, under
// the module root dir: the guest SDK and the three examples.
func SourceHash(root string) (string, error) {
	var paths []string
	for _, pattern := range []string{"guest/godwit/*.go", "guest/examples/cacheupdater/*.go",
		"guest/examples/auditenricher/*.go", "guest/examples/notifier/*.go"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return "", err
		}
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
