#!/usr/bin/env bash
# browser-deps.sh installs what the console's browser test
# (console/browser_test.go) needs: Debian's Chromium, and the pinned npm
# packages playwright-core (drives it over the DevTools protocol; no browser
# download) and axe-core (accessibility checks) in ${OUTFLOW_BROWSER_DIR:-.cache/browser}.
# Safe to run again: what is installed is left alone.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
readonly PINS=(playwright-core@1.65.2 axe-core@4.14.1)
dir=${OUTFLOW_BROWSER_DIR:-.cache/browser}
chromium=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "browser-deps: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  else
    echo "browser-deps: $chromium is missing (Debian: sudo apt-get install chromium)" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser-deps: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
[ -f "$dir/package.json" ] || printf '{"private": true}\n' >"$dir/package.json"
for pin in "${PINS[@]}"; do
  name=${pin%@*}
  if [ "$(cd "$dir" && node -p "require('./node_modules/$name/package.json').version" 2>/dev/null)" != "${pin#*@}" ]; then
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "${PINS[@]}"
    break
  fi
done
echo "browser-deps: ready, $("$chromium" --version 2>/dev/null | head -n 1), ${PINS[*]}"
