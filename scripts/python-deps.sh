#!/usr/bin/env bash
# python-deps.sh creates the Python virtual environment the examples' tests
# use (examples/examples_test.go runs the Python webhook receiver's pytest
# suite with it) and installs the pinned requirements into it from PyPI:
# examples/webhook-receiver-python/requirements.txt (standardwebhooks) and
# requirements-test.txt (pytest), and scripts/requirements-schemathesis.txt
# (schemathesis, which cmd/outflow's TestSchemathesis runs against `outflow
# dev`). Safe to run again: an existing venv is
# reused and pip leaves satisfied pins alone.
#
# Usage: scripts/python-deps.sh
#
# Environment:
#   OUTFLOW_PY_VENV  venv directory, relative to the repository root unless
#                    absolute; default .cache/pyvenv (the Go test looks there)
#   PYTHON           interpreter that creates the venv; default python3
#                    (3.9 or newer, with the venv module)
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
venv=${OUTFLOW_PY_VENV:-.cache/pyvenv}
python=${PYTHON:-python3}
reqs=examples/webhook-receiver-python

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  echo "python-deps: $python is missing or older than 3.9" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "python-deps: creating $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$reqs/requirements.txt" -r "$reqs/requirements-test.txt" \
  -r scripts/requirements-schemathesis.txt
"$venv/bin/python" -c 'import standardwebhooks, pytest; print("python-deps: ready,", "pytest", pytest.__version__)'
"$venv/bin/schemathesis" --version
