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
# extensions (see subscription_service.proto). It also closes object schemas
# (additionalProperties: false), which the plugin cannot. Key order is kept.
bound_query_parameters() {
  python3 - "$1" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    doc = json.load(f)
def closed(schema, message=False):
    """Declares additionalProperties false on every message's object schema
    that does not say what extra properties may hold: the gateway refuses
    unknown fields (a misspelt field is a 400), so the document must not
    allow them. A nested object without properties is a google.protobuf.Struct
    (any JSON object) and stays open."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "additionalProperties" not in schema
                and (message or "properties" in schema)):
            schema["additionalProperties"] = False
        for v in schema.values():
            closed(v)
    elif isinstance(schema, list):
        for v in schema:
            closed(v)

def stream_errors(op):
    """grpc-gateway writes a server stream's errors as {"error": Status}
    (those it answers before routing the call, 401 and 405, stay a plain
    Status): declare both forms for the stream's error answers."""
    ok = op.get("responses", {}).get("200", {}).get("schema", {})
    if not ok.get("title", "").startswith("Stream result of"):
        return
    status = {"$ref": "#/definitions/googleRpcStatus"}
    for code, resp in op["responses"].items():
        if code != "200" and "schema" in resp:
            resp["schema"] = {
                "type": "object",
                "properties": {
                    "error": status,
                    "code": {"type": "integer", "format": "int32"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"$ref": "#/definitions/protobufAny"}},
                },
                "title": "A google.rpc.Status, or one in error once the stream was routed",
            }

for name, schema in doc.get("definitions", {}).items():
    if name != "protobufAny":
        closed(schema, message=True)
for ops in doc.get("paths", {}).values():
    for op in ops.values():
        for p in op.get("parameters", []):
            for bound in ("minimum", "maximum"):
                if "x-" + bound in p:
                    p[bound] = p.pop("x-" + bound)
            if p.get("in") == "body":
                closed(p.get("schema"), message=True)
                # A custom method's body ("*": the request without its path
                # fields) may be left out; the gateway reads none as {}.
                if p.get("schema", {}).get("$ref", "").endswith("Body"):
                    p["required"] = False
        stream_errors(op)
        for resp in op.get("responses", {}).values():
            closed(resp.get("schema"))
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
