#!/usr/bin/env bash
# Builds the Go guest examples (guest/examples/*) into wasm modules:
#   scripts/build-guests.sh [OUT_DIR]     (default: guest/examples/wasm)
# Tests do not need this: they build the guests from source in TestMain.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-guest/examples/wasm}"
mkdir -p "$out"
for dir in guest/examples/*/; do
  name="$(basename "$dir")"
  [ -f "$dir/main.go" ] || continue
  GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -o "$out/$name.wasm" "./$dir"
  echo "$out/$name.wasm $(wc -c <"$out/$name.wasm") bytes"
done
