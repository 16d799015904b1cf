#!/usr/bin/env bash
# Regenerates the Go code of proto/ (committed, so builds need no protoc).
#
# Every .proto under proto/ is compiled (godwit/trigger/v1, godwit/event/v1,
# godwit/admin/v1, godwit/audit/v1, ...): a new package needs no change here.
#
# Needs protoc (Debian: apt-get install protobuf-compiler; the committed code
# was made with 3.21.12) and the Go plugins, pinned so that regenerating
# unchanged files changes nothing:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
find proto -name '*.pb.go' -delete
protoc --proto_path=proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  $(find proto -name '*.proto' | sort)
echo "generated: $(find proto -name '*.pb.go' | sort | tr '\n' ' ')"
