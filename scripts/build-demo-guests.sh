#!/usr/bin/env bash
# Rebuilds the example functions embedded in `godwit demo` (demo/guests/),
# so the demo runs them without a Go toolchain at hand. Run it after changing
# guest/godwit or guest/examples/{cacheupdater,auditenricher,notifier}; the
# demo package's tests fail until you do (they compare SOURCES.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo/guests
names=(cacheupdater auditenricher notifier)
for name in "${names[@]}"; do
  GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath \
    -o "$out/$name.wasm" "./guest/examples/$name"
  gzip -9 -n -f "$out/$name.wasm"
  echo "$out/$name.wasm.gz $(wc -c <"$out/$name.wasm.gz") bytes"
done
go run ./demo/guests/sourcehash > "$out/SOURCES.sha256"
