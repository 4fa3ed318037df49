# Outflow's developer entry points. `make test` is what CI runs (with CI=true).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

# GOTESTSUM runs the gotestsum pinned in tools/go.mod.
GOTESTSUM := go tool -modfile=tools/go.mod gotestsum
# GOTEST_FLAGS is passed to go test after the fixed -race -count=1, e.g.
# `make test GOTEST_FLAGS='-run TestKafka -v'`. Empty by default.
GOTEST_FLAGS ?=
# PKGS selects the packages to test; all of them by default.
PKGS ?= ./...

.PHONY: test testenv-start testenv-stop python-deps node-deps browser-deps

# test starts a throwaway PostgreSQL and Kafka on free loopback ports, runs
# every test against them and stops both, whatever the outcome. The Python
# webhook receiver example's tests need a venv (python-deps), and the README's
# Node snippet the Standard Webhooks JavaScript library (node-deps), and the
# console's browser test Chromium, playwright-core and axe-core
# (browser-deps), first.
test: python-deps node-deps browser-deps
	scripts/testenv.sh run -- $(GOTESTSUM) --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 $(GOTEST_FLAGS) $(PKGS)

# python-deps creates .cache/pyvenv with the examples' pinned Python packages.
python-deps:
	scripts/python-deps.sh

# node-deps installs the pinned standardwebhooks npm package into .cache/node.
node-deps:
	scripts/node-deps.sh

# browser-deps installs Debian's chromium (apt-get, as root) and the pinned
# playwright-core and axe-core into .cache/browser for TestConsoleInBrowser.
browser-deps:
	scripts/browser-deps.sh

# testenv-start starts a long-lived pair for interactive work; then
# `eval "$$(scripts/testenv.sh env)"` and use go test directly.
testenv-start:
	scripts/testenv.sh start

testenv-stop:
	scripts/testenv.sh stop

.PHONY: bench

# bench runs the delivery benchmark (bench/, issue 10): the gateway and a
# receiver as their own processes on real Kafka and PostgreSQL, about 10
# minutes on 2 cores. It uses the test environment in OUTFLOW_TEST_* when
# set (e.g. after `eval "$$(scripts/testenv.sh env)"`), else starts a
# throwaway one. Results: bench/results/ and docs/benchmarks.md.
BENCH_FLAGS ?=
bench:
	if [[ -n "$${OUTFLOW_TEST_DATABASE_URL:-}" && -n "$${OUTFLOW_TEST_KAFKA_BROKERS:-}" ]]; then \
		go run ./bench $(BENCH_FLAGS); \
	else \
		scripts/testenv.sh run -- go run ./bench $(BENCH_FLAGS); \
	fi

.PHONY: build run dev proto proto-check lint check readme console-vendor console-check

# build compiles the binary into bin/.
build:
	go build -o bin/outflow ./cmd/outflow

# run starts a throwaway PostgreSQL and Kafka, migrates, prints a fresh API
# key and serves the API on 127.0.0.1:8080 (REST) and :9090 (gRPC) until
# Ctrl-C, which stops everything.
run:
	scripts/testenv.sh run -- scripts/run-local.sh

# dev runs everything in one process with no setup beyond Go (where no
# PostgreSQL server binaries are installed, it downloads a PostgreSQL build
# once into the user cache directory): an in-process Kafka broker, the reference
# feature server, a throwaway PostgreSQL, the gateway, a demo producer and a
# receiver that verifies signatures; it prints the commands to try. Ctrl-C
# stops it and removes what it created. Flags: `bin/outflow dev --help`. (Not
# `go run`: it exits 1 whenever it is interrupted, so Ctrl-C would look like
# a failure.)
.PHONY: dev
dev: build
	bin/outflow dev --receiver

# readme regenerates the README's configuration tables from the flags
# (TestReadmeConfigTable fails when they drift).
readme:
	go test ./cmd/outflow -run '^TestReadmeConfigTable$$' -count=1 -update-readme

# proto regenerates the Go code and the OpenAPI document from proto/.
proto:
	scripts/genproto.sh

# proto-check fails when the committed generated code is stale.
proto-check:
	scripts/genproto.sh check

# console-vendor copies the pinned Preact and htm from npm into
# console/assets/vendor/; console-check fails when the committed copies differ.
console-vendor:
	scripts/console-vendor.sh

console-check:
	scripts/console-vendor.sh check

# lint runs the static checks CI runs.
lint:
	go vet ./...
	go tool -modfile=tools/go.mod staticcheck ./...
	@files=$$(git ls-files '*.go' | grep -v '\.pb\(\.gw\)\?\.go$$' | xargs gofmt -l); \
	  if [ -n "$$files" ]; then echo "gofmt would change: $$files" >&2; exit 1; fi
	scripts/genproto.sh lint

# check is what CI runs: the static checks, the drift check and the tests.
check: lint proto-check console-check test
