#!/usr/bin/env bash
# node-deps.sh installs the Standard Webhooks JavaScript library the README's
# Node verification snippet uses into ${OUTFLOW_NODE_DIR:-.cache/node}, from
# the npm registry, pinned. examples/node_test.go runs the snippet with it.
# Safe to run again: an installed pin is left alone.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
readonly PIN=standardwebhooks@1.1.1
dir=${OUTFLOW_NODE_DIR:-.cache/node}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node-deps: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
if [ "$(cd "$dir" && node -p 'require("standardwebhooks/package.json").version' 2>/dev/null)" != "${PIN#*@}" ]; then
  [ -f "$dir/package.json" ] || printf '{"private": true, "type": "module"}\n' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$PIN"
fi
echo "node-deps: ready, $PIN"
