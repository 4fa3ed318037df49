#!/usr/bin/env bash
# Regenerates the Go code and the OpenAPI document from proto/ with buf and
# the local plugins pinned in tools/go.mod. The two google/api protos the HTTP
# annotations need are copied from grpc-gateway v1.16.0's module (its
# third_party/googleapis) into the ignored .cache/googleapis.
#
#   scripts/genproto.sh          regenerate
#   scripts/genproto.sh check    regenerate, then fail if the committed output differs
#   scripts/genproto.sh lint     buf lint + buf format check
set -euo pipefail
cd "$(dirname "$0")/.."

buf() { go tool -modfile=tools/buf/go.mod buf "$@"; }

fetch_googleapis() {
  local dir
  dir=$(go mod download -json github.com/grpc-ecosystem/grpc-gateway@v1.16.0 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "genproto: could not download grpc-gateway v1.16.0" >&2; exit 1; }
  mkdir -p .cache/googleapis/google/api
  for f in annotations.proto http.proto; do
    install -m 0644 "$dir/third_party/googleapis/google/api/$f" ".cache/googleapis/google/api/$f"
  done
}

generate() {
  fetch_googleapis
  rm -f proto/outflow/v1/*.pb.go proto/outflow/v1/*.pb.gw.go proto/openapi/*.swagger.json
  buf generate
}

case "${1:-generate}" in
  generate) generate ;;
  check)
    generate
    if ! git diff --exit-code --stat -- proto || [ -n "$(git status --porcelain -- proto)" ]; then
      git status --porcelain -- proto >&2
      echo "genproto: generated code is stale; run 'make proto' and commit the result" >&2
      exit 1
    fi
    echo "genproto: generated code is up to date"
    ;;
  lint)
    fetch_googleapis
    buf lint
    buf format --diff --exit-code proto
    ;;
  *) echo "usage: $0 [generate|check|lint]" >&2; exit 2 ;;
esac
