package devdb_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// nodeModules is where the test looks for the npm package "mongodb":
// $GODWIT_TEST_NODE_MODULES, else <user cache dir>/godwit/npm/node_modules
// (filled by `npm install --prefix ~/.cache/godwit/npm mongodb@6`).
func nodeModules() string {
	if dir := os.Getenv("GODWIT_TEST_NODE_MODULES"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "godwit", "npm", "node_modules")
}

// TestServer_NodeDriver drives devdb with the official Node.js driver:
// CRUD, transactions, and a change stream resumed with its token from a
// new connection.
func TestServer_NodeDriver(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed (apt-get install -y nodejs npm)")
	}
	modules := nodeModules()
	if _, err := os.Stat(filepath.Join(modules, "mongodb", "package.json")); err != nil {
		t.Skipf("npm package mongodb not in %s (npm install --prefix %s mongodb@6)", modules, filepath.Dir(modules))
	}
	_, srv, _ := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "node_driver.js"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, node, script, srv.URI())
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	t.Logf("node:\n%s", out)
	if err != nil {
		t.Fatalf("the Node.js driver script failed: %v", err)
	}
}
