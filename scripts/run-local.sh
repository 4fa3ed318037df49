#!/usr/bin/env bash
# Runs `outflow serve` against the throwaway PostgreSQL and Kafka that
# `scripts/testenv.sh run` started (see `make run`): migrates, creates an API
# key for tenant "demo", prints it, and serves until interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUTFLOW_TEST_DATABASE_URL:?run me through scripts/testenv.sh run -- $0}"
export OUTFLOW_DATABASE_URL=$OUTFLOW_TEST_DATABASE_URL
mkdir -p .cache/bin
go build -o .cache/bin/outflow ./cmd/outflow
outflow=.cache/bin/outflow
"$outflow" migrate
key=$("$outflow" apikey create --tenant demo --name local 2>/dev/null)
# A throwaway key for the throwaway database's webhook secrets.
export OUTFLOW_SECRET_KEYS=${OUTFLOW_SECRET_KEYS:-$("$outflow" secrets generate-key --id local)}
http=${OUTFLOW_HTTP_ADDR:-127.0.0.1:8080}
cat >&2 <<MSG

  Outflow is starting: REST on http://$http, gRPC on ${OUTFLOW_GRPC_ADDR:-127.0.0.1:9090}.
  API key (tenant "demo"): $key

  curl -H "Authorization: Bearer $key" http://$http/v1/subscriptions
  Ctrl-C stops it and removes the throwaway database.

MSG
exec "$outflow" serve --http-addr "$http" --grpc-addr "${OUTFLOW_GRPC_ADDR:-127.0.0.1:9090}" --log-format text
