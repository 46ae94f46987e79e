#!/usr/bin/env bash
# Generates the Go code of the Open Inference Protocol v2 gRPC service
# (inference-server/oipgrpc/proto/grpc_predict_v2.proto, kept as published) into OUT, by default
# inference-server/oipgrpc/inferencepb. protoc comes from Debian (scripts/deps.d/proto.txt); the
# two plugins are the versions pinned as tools in go.mod. The staleness test
# (inference-server/oipgrpc/inferencepb) runs this into a temporary folder and compares.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/inference-server/oipgrpc/inferencepb}"
pkg=github.com/countersign/countersign/inference-server/oipgrpc/inferencepb
command -v protoc >/dev/null || { echo "protoc not found: run make deps (Debian protobuf-compiler)" >&2; exit 1; }
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
cd "$root"
go build -trimpath -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
mkdir -p "$out"
# The published file has no go_package option; the M flags give the Go package instead, so the
# .proto stays byte for byte the one published.
protoc --proto_path=inference-server/oipgrpc/proto \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative --go_opt=Mgrpc_predict_v2.proto=$pkg \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative --go-grpc_opt=Mgrpc_predict_v2.proto=$pkg \
  grpc_predict_v2.proto
