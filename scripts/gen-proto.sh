#!/usr/bin/env bash
# Regenerates the Go code of proto/ (committed, so builds need no protoc).
#
# Needs protoc (Debian: apt-get install protobuf-compiler) and the Go plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@latest
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
find proto -name '*.pb.go' -delete
protoc --proto_path=proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  $(find proto -name '*.proto' | sort)
echo "generated: $(find proto -name '*.pb.go' | sort | tr '\n' ' ')"
