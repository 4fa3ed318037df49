#!/usr/bin/env bash
# console-vendor.sh copies the console's two front-end libraries, Preact and
# htm, from their pinned npm packages into console/assets/vendor/, byte for
# byte, with their licences. The console has no build step: these ES modules
# are embedded in the binary as they are, so building Outflow needs no Node.
#
#   scripts/console-vendor.sh         install the pins and copy them
#   scripts/console-vendor.sh check   fail if the committed copies differ
#                                     from the pinned packages (CI)
#
# To upgrade: change a pin, run it, test (make test runs the browser tests),
# commit console/assets/vendor/ with the pin.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

readonly PINS=(preact@11.2.0 htm@3.1.1)
cache=${OUTFLOW_CONSOLE_VENDOR_DIR:-.cache/console-vendor}
out=console/assets/vendor

if ! command -v npm >/dev/null; then
  echo "console-vendor: npm is needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$cache"
[ -f "$cache/package.json" ] || printf '{"private": true}\n' >"$cache/package.json"
for pin in "${PINS[@]}"; do
  name=${pin%@*}
  if [ "$(cd "$cache" && node -p "require('./node_modules/$name/package.json').version" 2>/dev/null)" != "${pin#*@}" ]; then
    npm install --prefix "$cache" --no-audit --no-fund --loglevel=error "${PINS[@]}"
    break
  fi
done

# source in the package → name in the console (the import map in
# console/assets/index.html names these files).
declare -A files=(
  [preact/dist/preact.mjs]=preact.mjs
  [preact/hooks/dist/hooks.mjs]=preact-hooks.mjs
  [preact/LICENSE]=LICENSE-preact
  [htm/dist/htm.mjs]=htm.mjs
  [htm/LICENSE]=LICENSE-htm
)

case "${1:-copy}" in
  copy)
    mkdir -p "$out"
    for src in "${!files[@]}"; do
      install -m 0644 "$cache/node_modules/$src" "$out/${files[$src]}"
    done
    printf '%s\n' "${PINS[@]}" >"$out/PINS"
    echo "console-vendor: copied ${PINS[*]} into $out"
    ;;
  check)
    stale=0
    for src in "${!files[@]}"; do
      if ! cmp -s "$cache/node_modules/$src" "$out/${files[$src]}"; then
        echo "console-vendor: $out/${files[$src]} differs from $src of the pinned package" >&2
        stale=1
      fi
    done
    if [ "$(printf '%s\n' "${PINS[@]}")" != "$(cat "$out/PINS" 2>/dev/null)" ]; then
      echo "console-vendor: $out/PINS does not list ${PINS[*]}" >&2
      stale=1
    fi
    if [ "$stale" != 0 ]; then
      echo "console-vendor: run scripts/console-vendor.sh and commit $out" >&2
      exit 1
    fi
    echo "console-vendor: $out matches ${PINS[*]}"
    ;;
  *) echo "usage: $0 [check]" >&2; exit 2 ;;
esac
