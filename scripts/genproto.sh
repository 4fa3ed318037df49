#!/usr/bin/env bash
# Regenerates the Go code and the OpenAPI document from proto/ with buf and
# the local plugins pinned in tools/go.mod. The two google/api protos the HTTP
# annotations need are copied from grpc-gateway v1.16.0's module (its
# third_party/googleapis), and the two protoc-gen-openapiv2 options protos
# from the grpc-gateway/v2 module of go.mod, into the ignored
# .cache/googleapis.
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
  # The OpenAPI annotations (id patterns, page_size bounds, each operation's
  # answers) come from the grpc-gateway v2 module the Go code already uses,
  # so the generated Go imports a package that is in go.mod.
  local v2dir
  v2dir=$(go mod download -json github.com/grpc-ecosystem/grpc-gateway/v2 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$v2dir" ] || { echo "genproto: could not download grpc-gateway/v2" >&2; exit 1; }
  mkdir -p .cache/googleapis/protoc-gen-openapiv2/options
  for f in annotations.proto openapiv2.proto; do
    install -m 0644 "$v2dir/protoc-gen-openapiv2/options/$f" ".cache/googleapis/protoc-gen-openapiv2/options/$f"
  done
}

generate() {
  fetch_googleapis
  rm -f proto/outflow/v1/*.pb.go proto/outflow/v1/*.pb.gw.go proto/openapi/*.swagger.json
  buf generate
  bound_query_parameters proto/openapi/outflow.swagger.json
}

# bound_query_parameters turns the x-minimum and x-maximum extensions of query
# parameters into the minimum and maximum OpenAPI declares: protoc-gen-openapiv2
# keeps a field's bounds only in body schemas, so page_size's bounds ride in
# extensions (see subscription_service.proto). Key order is kept.
bound_query_parameters() {
  python3 - "$1" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    doc = json.load(f)
for ops in doc.get("paths", {}).values():
    for op in ops.values():
        for p in op.get("parameters", []):
            for bound in ("minimum", "maximum"):
                if "x-" + bound in p:
                    p[bound] = p.pop("x-" + bound)
with open(path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
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
