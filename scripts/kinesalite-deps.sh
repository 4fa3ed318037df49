#!/usr/bin/env bash
# kinesalite-deps.sh installs kinesalite, the local Kinesis the Kinesis tests
# run against, into ${OUTFLOW_KINESALITE_DIR:-.cache/kinesalite}, from the npm
# registry, pinned. scripts/testenv.sh and `outflow dev --source kinesis` run it through
# internal/kinesalite/kinesalite.js.
# Safe to run again: an installed pin is left alone.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
readonly PIN=kinesalite@3.3.3
dir=${OUTFLOW_KINESALITE_DIR:-.cache/kinesalite}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "kinesalite-deps: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
if [ "$(cd "$dir" && node -p 'require("kinesalite/package.json").version' 2>/dev/null)" != "${PIN#*@}" ]; then
  [ -f "$dir/package.json" ] || printf '{"private": true}\n' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$PIN"
fi
echo "kinesalite-deps: ready, $PIN" >&2
