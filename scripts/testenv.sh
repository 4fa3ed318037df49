#!/usr/bin/env bash
# testenv.sh starts the throwaway PostgreSQL cluster, single-node Apache Kafka
# broker (KRaft mode), Feast feature server and local Kinesis (kinesalite)
# that Outflow's tests run against, on free loopback ports, and tells the
# tests where they are through environment variables.
#
# Usage:
#   scripts/testenv.sh run -- <command...>  start both services, run the command
#                                           with the variables below exported,
#                                           stop both (also on failure, Ctrl-C
#                                           or SIGTERM) and exit with the
#                                           command's status. `make test` uses it.
#   scripts/testenv.sh start                start a long-lived pair for
#                                           interactive work (state in
#                                           .cache/testenv/dev)
#   scripts/testenv.sh env                  print `export ...` lines for the
#                                           started pair: eval "$(scripts/testenv.sh env)"
#   scripts/testenv.sh stop                 stop the started pair
#
# Exported to the tests (read by internal/testenv):
#   OUTFLOW_TEST_DATABASE_URL   superuser URL of the cluster's maintenance db
#   OUTFLOW_TEST_KAFKA_BROKERS  comma-separated bootstrap brokers
#   OUTFLOW_TEST_FEAST_URL      base URL of `feast serve` (SQLite online store)
#                               serving the feature repo of write_feast_repo
#   OUTFLOW_TEST_KINESIS_ENDPOINT  URL of the local Kinesis
#
# Missing pieces are installed on first use: Debian's postgresql package (as
# root, via apt-get) and the Kafka jars (via Maven, cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/outflow/kafka-<version>/libs). Java 17+ and
# Maven must already be present. Feast (FEAST_VERSION below) is installed from
# PyPI into a venv cached in ${XDG_CACHE_HOME:-$HOME/.cache}/outflow/feast-<version>
# (about 40 s the first time); Python 3.10+ with the venv module and curl must
# be present. kinesalite is installed from npm into .cache/kinesalite by
# scripts/kinesalite-deps.sh (node and npm must be present).
#
# Tunables (environment):
#   OUTFLOW_TESTENV_DIR            state root; default <repo>/.cache/testenv
#   OUTFLOW_TESTENV_START_TIMEOUT  seconds each service gets to become ready;
#                                  default 60
#   OUTFLOW_TESTENV_STOP_TIMEOUT   seconds a process gets between the polite
#                                  signal and SIGKILL; default 10
#   OUTFLOW_TESTENV_FEAST          0 to start no Feast server (its tests then
#                                  skip, or fail under CI=true); default 1
set -euo pipefail

# KAFKA_VERSION must match <kafka.version> in scripts/kafka/pom.xml; it names
# the jar cache directory.
readonly KAFKA_VERSION=3.9.1
# FEAST_VERSION is the feast package (PyPI) the Feast backend is tested
# against; it names the venv cache directory.
readonly FEAST_VERSION=0.67.0

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
readonly SCRIPT_DIR REPO_ROOT
readonly STATE_ROOT=${OUTFLOW_TESTENV_DIR:-$REPO_ROOT/.cache/testenv}
readonly KAFKA_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/outflow/kafka-$KAFKA_VERSION
readonly KAFKA_LIBS=$KAFKA_CACHE/libs
readonly FEAST_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/outflow/feast-$FEAST_VERSION
readonly WITH_FEAST=${OUTFLOW_TESTENV_FEAST:-1}
readonly START_TIMEOUT=${OUTFLOW_TESTENV_START_TIMEOUT:-60}
readonly STOP_TIMEOUT=${OUTFLOW_TESTENV_STOP_TIMEOUT:-10}
# The broker is a test fixture: a small heap, the serial collector and C1 only
# (-XX:TieredStopAtLevel=1) make it start fast on 2 cores, and it never sees
# enough load for C2 to matter. JVM_FLAGS is also part of the CDS archive's
# cache key (see ensure_java).
readonly JVM_FLAGS=(-Xms256m -Xmx768m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
	-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)
readonly JAVA_OPTS=("${JVM_FLAGS[@]}" "-Dlog4j.configuration=file:$SCRIPT_DIR/kafka/log4j.properties")

# Ports are picked from this range: below Linux's default ephemeral range
# (32768-60999), so an outgoing connection cannot take a port between our
# check and the server's bind, and clear of the well-known defaults (5432,
# 9092, 9093) the brief forbids.
readonly PORT_MIN=15000 PORT_MAX=32000
USED_PORTS=" "

log() { printf 'testenv: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# now_ms prints wall-clock milliseconds (bash 5 $EPOCHREALTIME, no fork).
now_ms() {
	local t=${EPOCHREALTIME/[.,]/}
	printf '%s\n' "$((10#$t / 1000))"
}

# since prints the seconds elapsed since a now_ms value, e.g. "2.4s".
since() {
	local ms=$(($(now_ms) - $1))
	printf '%d.%ds\n' "$((ms / 1000))" "$((ms % 1000 / 100))"
}

# tail_log prints the end of a log file to stderr to explain a failure.
tail_log() {
	[[ -f $1 ]] || return 0
	log "last lines of $1:"
	tail -n 40 -- "$1" >&2 || true
}

# port_in_use succeeds if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
	(: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_port stores in the variable named $1 a random loopback port that
# nothing listens on and that this script has not handed out yet (it assigns
# rather than prints because USED_PORTS must survive; $(...) is a subshell).
# Another process can still take the port before our server binds it; the
# start functions retry with a new port when that happens.
pick_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % (PORT_MAX - PORT_MIN)))
		[[ $USED_PORTS == *" $p "* ]] && continue
		port_in_use "$p" && continue
		USED_PORTS+="$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
	die "no free port found in $PORT_MIN-$PORT_MAX"
}

# wait_gone waits up to $2 seconds for process $1 to exit.
wait_gone() {
	local deadline=$(($(now_ms) + $2 * 1000))
	while kill -0 "$1" 2>/dev/null; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# stop_group sends $2 to process group $1 (falling back to the process alone if
# it does not lead a group), then SIGKILL if it outlives STOP_TIMEOUT, in which
# case it returns 1.
stop_group() {
	local pid=$1 sig=$2
	kill -0 "$pid" 2>/dev/null || return 0
	kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
	wait_gone "$pid" "$STOP_TIMEOUT" && return 0
	log "pid $pid ignored SIG$sig for ${STOP_TIMEOUT}s, killing it"
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$pid" 5 || true
	return 1
}

# ---------------------------------------------------------------- PostgreSQL --

PG_BIN=""

# find_pg_bin sets PG_BIN to the directory holding initdb and pg_ctl: from PATH
# first, else the newest /usr/lib/postgresql/<version>/bin (where Debian puts
# them, outside PATH).
find_pg_bin() {
	local initdb dir
	if initdb=$(command -v initdb) && command -v pg_ctl >/dev/null; then
		PG_BIN=$(dirname -- "$initdb")
		return 0
	fi
	for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
		if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
			PG_BIN=$dir
			return 0
		fi
	done
	return 1
}

# ensure_postgres installs Debian's postgresql package if no server binaries
# are found. Debian's postinst would create and start a "main" cluster on the
# default port 5432; the createcluster.d drop-in stops it, since we only want
# the binaries.
ensure_postgres() {
	find_pg_bin && return 0
	((EUID == 0)) || die "PostgreSQL server binaries not found; install the postgresql package (as root: apt-get install postgresql)"
	command -v apt-get >/dev/null || die "PostgreSQL not found and apt-get unavailable; install a PostgreSQL server"
	local t0 logf=$STATE_ROOT/apt.log
	t0=$(now_ms)
	log "installing postgresql with apt-get (log: $logf)"
	mkdir -p /etc/postgresql-common/createcluster.d
	echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/outflow-testenv.conf
	if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } >"$logf" 2>&1; then
		tail_log "$logf"
		die "apt-get install postgresql failed"
	fi
	find_pg_bin || die "postgresql installed but initdb/pg_ctl still not found"
	log "installed postgresql in $(since "$t0")"
}

# as_pg runs a command as the postgres user when we are root (initdb and
# postgres refuse to run as root), else directly. It runs from / because the
# postgres user may not be allowed into the current directory.
as_pg() {
	if ((EUID == 0)); then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

# start_postgres creates a cluster in the scratch dir and starts it on a free
# port. Durability is switched off; the cluster is thrown away.
start_postgres() {
	local dir=$1 t0 pgdir attempt port logf=$1/postgres.log
	t0=$(now_ms)
	pgdir=$(<"$dir/scratch")/pg
	mkdir -m 700 "$pgdir"
	if ((EUID == 0)); then
		id postgres >/dev/null 2>&1 || die "running as root but there is no postgres user to run the server as"
		chown postgres: "$pgdir"
	fi
	# --no-locale: a fresh machine may have no UTF-8 locale generated.
	if ! as_pg "$PG_BIN/initdb" -D "$pgdir/data" -A trust -U outflow --no-sync -E UTF8 --no-locale >"$logf" 2>&1; then
		tail_log "$logf"
		die "initdb failed"
	fi
	for attempt in 1 2 3; do
		pick_port port
		# Without -l the server inherits pg_ctl's stdout, so the log file is
		# opened by us and need not be writable by the postgres user.
		if as_pg "$PG_BIN/pg_ctl" -D "$pgdir/data" -w -t "$START_TIMEOUT" -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" start >>"$logf" 2>&1; then
			printf '%s\n' "$port" >"$dir/pg.port"
			log "postgres $("$PG_BIN/pg_ctl" --version | awk '{print $3}') ready on 127.0.0.1:$port in $(since "$t0")"
			return 0
		fi
		grep -q 'could not bind' "$logf" && ((attempt < 3)) && {
			log "postgres port $port was taken, retrying"
			continue
		}
		break
	done
	tail_log "$logf"
	die "postgres did not start"
}

# stop_postgres stops the cluster without a checkpoint.
stop_postgres() {
	local dir=$1 pgdir
	[[ -f $dir/scratch ]] || return 0
	pgdir=$(<"$dir/scratch")/pg
	if [[ -f $pgdir/data/postmaster.pid ]]; then
		find_pg_bin || true
		if ! as_pg "$PG_BIN/pg_ctl" -D "$pgdir/data" -m immediate -w -t "$STOP_TIMEOUT" stop >>"$dir/postgres.log" 2>&1; then
			local pid
			pid=$(head -n 1 "$pgdir/data/postmaster.pid" 2>/dev/null || true)
			if [[ -n $pid ]]; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
	fi
}

# --------------------------------------------------------------------- Kafka --

# ensure_kafka_jars resolves the broker's jars with Maven once per pom content;
# the cache is rebuilt when scripts/kafka/pom.xml changes.
ensure_kafka_jars() {
	local pom=$SCRIPT_DIR/kafka/pom.xml sum tmp t0 logf=$KAFKA_CACHE/mvn.log
	sum=$(sha256sum <"$pom" | cut -d' ' -f1)
	[[ -f $KAFKA_LIBS/.complete && $(<"$KAFKA_LIBS/.complete") == "$sum" ]] && return 0
	command -v mvn >/dev/null || die "mvn not found; Maven is needed once to fetch the Kafka jars"
	t0=$(now_ms)
	log "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
	mkdir -p "$KAFKA_CACHE"
	tmp=$(mktemp -d "$KAFKA_CACHE/libs.tmp.XXXXXX")
	if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp" >"$logf" 2>&1; then
		rm -rf -- "$tmp"
		tail_log "$logf"
		die "mvn could not fetch the Kafka jars"
	fi
	printf '%s\n' "$sum" >"$tmp/.complete"
	rm -rf -- "$KAFKA_LIBS"
	# A concurrent run may have won the race; its copy is as good as ours.
	mv -T -- "$tmp" "$KAFKA_LIBS" 2>/dev/null || rm -rf -- "$tmp"
	log "fetched Kafka jars in $(since "$t0")"
}

JAVA=""
CDS_ARCHIVE=""

# ensure_java sets JAVA to the launcher ($JAVA_HOME/bin/java, else from PATH)
# and CDS_ARCHIVE to the class-data-sharing archive for this JVM build, jar set
# and JVM_FLAGS. With the archive, both JVM starts skip most class loading and
# verification: format 0.9 -> 0.5 s and broker 2.7 -> 1.4 s on 2 cores.
ensure_java() {
	local key
	JAVA=java
	[[ -n ${JAVA_HOME:-} ]] && JAVA=$JAVA_HOME/bin/java
	command -v "$JAVA" >/dev/null || die "java not found; a Java 17+ runtime is needed for the Kafka broker"
	key=$({ "$JAVA" -version 2>&1 && cat "$KAFKA_LIBS/.complete" && printf '%s\n' "${JVM_FLAGS[@]}"; } | sha256sum | cut -c1-16)
	CDS_ARCHIVE=$KAFKA_CACHE/cds-$key.jsa
}

# write_kafka_props writes a combined broker+controller config for one node.
# Internal topics get one partition: their default of 50 makes the first
# consumer-group lookup slow, and one broker gains nothing from more.
write_kafka_props() {
	local dir=$1 port=$2 cport=$3
	cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$(<"$dir/scratch")/kafka-logs
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
num.partitions=3
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=16777216
# Records up to 8 MiB, so tests can prove an oversized (5 MiB) record is
# kept as poison instead of stalling the consumer.
message.max.bytes=8388608
replica.fetch.max.bytes=8388608
EOF
}

# cluster_id prints a random 22-character base64url id (16 random bytes, as
# `kafka-storage.sh random-uuid` would) without paying for a JVM start. Ids
# starting with "-" are skipped: the storage tool would read them as a flag.
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		[[ $id == -* ]] || break
	done
	printf '%s\n' "$id"
}

# launch_kafka formats the storage and starts the broker in the background, in
# its own process group (set -m) whose id is saved in kafka.pid, so that
# stopping it also stops a still-running format step. Without a CDS archive
# yet, the broker is told to write one when it exits; stop_kafka moves it into
# place (kafka.cds holds the temporary and final paths).
launch_kafka() {
	local dir=$1 port cport cid cds=() broker_cds=()
	if [[ -f $CDS_ARCHIVE ]]; then
		cds=("-XX:SharedArchiveFile=$CDS_ARCHIVE")
		broker_cds=("${cds[@]}")
	else
		printf '%s\n' "$CDS_ARCHIVE.$$.tmp" "$CDS_ARCHIVE" >"$dir/kafka.cds"
		broker_cds=("-XX:ArchiveClassesAtExit=$CDS_ARCHIVE.$$.tmp")
	fi
	pick_port port
	pick_port cport
	cid=$(cluster_id)
	rm -rf -- "$(<"$dir/scratch")/kafka-logs"
	write_kafka_props "$dir" "$port" "$cport"
	printf '%s\n' "$port" >"$dir/kafka.port"
	set -m
	(
		"$JAVA" "${JAVA_OPTS[@]}" "${cds[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" || exit
		exec "$JAVA" "${JAVA_OPTS[@]}" "${broker_cds[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
	) >>"$dir/kafka.log" 2>&1 </dev/null &
	printf '%s\n' "$!" >"$dir/kafka.pid"
	# Not a job of ours any more: bash would otherwise print "Killed" when
	# stop_kafka has to SIGKILL it. It is still reaped, so kill -0 works.
	disown "$!"
	set +m
}

# await_kafka waits until the broker logs "Kafka Server started": in KRaft
# mode that line comes after the broker is registered and unfenced, whereas an
# open port only means the socket server is up. A broker that died on a port
# taken since pick_port is relaunched on new ports (3 attempts). If the line
# never appears but the port answers, a changed log4j.properties is the likely
# cause: warn and carry on.
await_kafka() {
	local dir=$1 t0=$2 attempt=1 pid port deadline
	pid=$(<"$dir/kafka.pid")
	deadline=$(($(now_ms) + START_TIMEOUT * 1000))
	while :; do
		port=$(<"$dir/kafka.port")
		if grep -q 'Kafka Server started' "$dir/kafka.log" 2>/dev/null; then
			log "kafka $KAFKA_VERSION ready on 127.0.0.1:$port in $(since "$t0")"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			if grep -q 'BindException\|Address already in use' "$dir/kafka.log" && ((attempt < 3)); then
				log "kafka ports were taken, retrying"
				attempt=$((attempt + 1))
				launch_kafka "$dir"
				pid=$(<"$dir/kafka.pid")
				continue
			fi
			tail_log "$dir/kafka.log"
			die "kafka exited before it was ready"
		fi
		if (($(now_ms) > deadline)); then
			if port_in_use "$port"; then
				log "warning: kafka port $port is open but the log has no 'Kafka Server started' line after ${START_TIMEOUT}s; continuing"
				return 0
			fi
			tail_log "$dir/kafka.log"
			die "kafka not ready after ${START_TIMEOUT}s"
		fi
		sleep 0.1
	done
}

# stop_kafka stops the broker with SIGTERM (a clean shutdown takes well under
# a second, plus about one more the first time, to write the CDS archive) and
# SIGKILL after STOP_TIMEOUT. With strict set, the pid is only trusted if its
# command line names this state dir: a pid file left by a dead run may point
# at an unrelated process by now.
stop_kafka() {
	local dir=$1 strict=${2:-} pid clean=1 cds
	[[ -f $dir/kafka.pid ]] || return 0
	pid=$(<"$dir/kafka.pid")
	if [[ -z $strict ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
		stop_group "$pid" TERM || clean=""
	fi
	rm -f -- "$dir/kafka.pid"
	if [[ -f $dir/kafka.cds ]]; then
		mapfile -t cds <"$dir/kafka.cds"
		# A JVM killed while writing leaves a truncated archive; drop it.
		if [[ -n $clean && -s ${cds[0]} ]]; then
			mv -f -- "${cds[0]}" "${cds[1]}"
		else
			rm -f -- "${cds[0]}"
		fi
		rm -f -- "$dir/kafka.cds"
	fi
}

# --------------------------------------------------------------------- Feast --

# ensure_feast installs the pinned feast into its venv once. A venv cannot be
# moved after creation, so it is built in place under a lock (flock), and
# .complete marks a finished install; a half-built venv is removed and rebuilt.
ensure_feast() {
	local python=${PYTHON:-python3} t0 logf
	[[ -f $FEAST_VENV/.complete ]] && return 0
	command -v "$python" >/dev/null || die "$python not found; Python 3.10+ is needed for the Feast feature server"
	"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$python is older than 3.10, which feast $FEAST_VERSION needs"
	mkdir -p "$(dirname -- "$FEAST_VENV")"
	exec 8>"$FEAST_VENV.lock"
	flock 8
	if [[ ! -f $FEAST_VENV/.complete ]]; then
		t0=$(now_ms)
		logf=$FEAST_VENV.log
		log "installing feast $FEAST_VERSION from PyPI into $FEAST_VENV (log: $logf)"
		rm -rf -- "$FEAST_VENV"
		if ! { "$python" -m venv "$FEAST_VENV" &&
			"$FEAST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "feast==$FEAST_VERSION"; } >"$logf" 2>&1; then
			exec 8>&-
			tail_log "$logf"
			rm -rf -- "$FEAST_VENV"
			die "installing feast $FEAST_VERSION failed"
		fi
		printf '%s\n' "$FEAST_VERSION" >"$FEAST_VENV/.complete"
		log "installed feast in $(since "$t0")"
	fi
	exec 8>&-
}

# write_feast_repo writes the feature repo the Feast tests use into $1:
#   project outflow_test, SQLite online store;
#   entity "user", join key user_id (STRING);
#   feature view user_stats (cart_count INT64, lifetime_value FLOAT64, no ttl)
#     fed by the push source user_stats_push, so tests write values with
#     POST /push {"push_source_name": "user_stats_push", "to": "online", ...};
#   feature service user_fs = user_stats.
# Tests share the server, so each uses user_id values of its own.
write_feast_repo() {
	local repo=$1
	mkdir -p "$repo/data"
	cat >"$repo/feature_store.yaml" <<'YAML'
project: outflow_test
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online_store.db
offline_store:
  type: file
entity_key_serialization_version: 3
YAML
	cat >"$repo/features.py" <<'PY'
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

# The batch source is never read: values arrive through the push source.
user_stats_batch = FileSource(
    name="user_stats_batch",
    path="data/user_stats.parquet",
    timestamp_field="event_timestamp",
)
user_stats_push = PushSource(name="user_stats_push", batch_source=user_stats_batch)

user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="cart_count", dtype=Int64),
        Field(name="lifetime_value", dtype=Float64),
    ],
    online=True,
    source=user_stats_push,
)

user_fs = FeatureService(name="user_fs", features=[user_stats])
PY
}

# launch_feast writes the repo into the scratch dir, then applies it and
# starts `feast serve` on a free loopback port in the background, in its own
# process group (pid in feast.pid), while the other services boot. Feast's
# usage telemetry is off: tests reach no network.
launch_feast() {
	local dir=$1 port repo
	repo=$(<"$dir/scratch")/feast-repo
	rm -rf -- "$repo"
	write_feast_repo "$repo"
	pick_port port
	printf '%s\n' "$port" >"$dir/feast.port"
	set -m
	(
		cd "$repo" || exit
		export FEAST_USAGE=False
		"$FEAST_VENV/bin/feast" apply || exit
		exec "$FEAST_VENV/bin/feast" serve --host 127.0.0.1 --port "$port" --workers 1 --no-access-log
	) >>"$dir/feast.log" 2>&1 </dev/null &
	printf '%s\n' "$!" >"$dir/feast.pid"
	disown "$!"
	set +m
}

# await_feast waits until the feature server answers /health. A server that
# died on a port taken since pick_port is relaunched (3 attempts).
await_feast() {
	local dir=$1 t0=$2 attempt=1 pid port deadline
	pid=$(<"$dir/feast.pid")
	deadline=$(($(now_ms) + START_TIMEOUT * 1000))
	while :; do
		port=$(<"$dir/feast.port")
		if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; then
			log "feast $FEAST_VERSION ready on 127.0.0.1:$port in $(since "$t0")"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			if grep -qi 'address already in use' "$dir/feast.log" && ((attempt < 3)); then
				log "feast port was taken, retrying"
				attempt=$((attempt + 1))
				launch_feast "$dir"
				pid=$(<"$dir/feast.pid")
				continue
			fi
			tail_log "$dir/feast.log"
			die "feast exited before it was ready"
		fi
		if (($(now_ms) > deadline)); then
			tail_log "$dir/feast.log"
			die "feast not ready after ${START_TIMEOUT}s"
		fi
		sleep 0.2
	done
}

# stop_feast stops the feature server's process group (SIGTERM, then SIGKILL
# after STOP_TIMEOUT). With strict set, as for stop_kafka, the pid is only
# trusted while its command line still names this feast venv.
stop_feast() {
	local dir=$1 strict=${2:-} pid
	[[ -f $dir/feast.pid ]] || return 0
	pid=$(<"$dir/feast.pid")
	if [[ -z $strict ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$FEAST_VENV/"; then
		stop_group "$pid" TERM || true
	fi
	rm -f -- "$dir/feast.pid"
}

# ------------------------------------------------------------------- Kinesis --

# start_kinesis starts kinesalite for state dir $1 on a free loopback port,
# through internal/kinesalite/kinesalite.js (kinesalite's own CLI binds every interface),
# in its own process group, and waits until it accepts connections.
start_kinesis() {
	local dir=$1 port attempt deadline
	"$SCRIPT_DIR/kinesalite-deps.sh"
	for ((attempt = 0; attempt < 5; attempt++)); do
		pick_port port
		NODE_PATH=${OUTFLOW_KINESALITE_DIR:-$REPO_ROOT/.cache/kinesalite}/node_modules setsid node "$REPO_ROOT/internal/kinesalite/kinesalite.js" "$port" \
			>"$dir/kinesis.out" 2>"$dir/kinesis.log" </dev/null &
		printf '%s\n' "$!" >"$dir/kinesis.pid"
		deadline=$(($(now_ms) + START_TIMEOUT * 1000))
		while ! port_in_use "$port"; do
			if ! kill -0 "$(<"$dir/kinesis.pid")" 2>/dev/null; then
				break
			fi
			(($(now_ms) < deadline)) || { tail_log "$dir/kinesis.log"; die "kinesalite did not start"; }
			sleep 0.1
		done
		if port_in_use "$port" && kill -0 "$(<"$dir/kinesis.pid")" 2>/dev/null; then
			printf '%s\n' "$port" >"$dir/kinesis.port"
			log "kinesalite ready on 127.0.0.1:$port"
			return 0
		fi
		log "kinesalite could not bind port $port; retrying"
	done
	tail_log "$dir/kinesis.log"
	die "kinesalite did not start"
}

# stop_kinesis stops the kinesalite of state dir $1, if any; with strict set
# the pid is trusted only if its command line is our launcher's.
stop_kinesis() {
	local dir=$1 strict=${2:-} pid
	[[ -f $dir/kinesis.pid ]] || return 0
	pid=$(<"$dir/kinesis.pid")
	if [[ -z $strict ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "kinesalite.js"; then
		stop_group "$pid" TERM || true
	fi
	rm -f -- "$dir/kinesis.pid"
}

# ------------------------------------------------------------------ The pair --

# make_scratch creates the directory that holds both services' data (and the
# PostgreSQL socket) and records it in $1/scratch. It is on /dev/shm (tmpfs)
# when that has room: on a CI VM's disk CREATE DATABASE took 0.4-5 s, on tmpfs
# 0.05 s. Docker gives /dev/shm 64 MiB by default, so below 1 GiB free it
# falls back to $TMPDIR. It is never in the repo: as root the postgres user
# must be able to reach it (a checkout may sit under a 0700 home), and socket
# paths are limited to ~100 bytes.
make_scratch() {
	local dir=$1 base=${TMPDIR:-/tmp} free scratch
	free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
	if [[ -w /dev/shm && ${free:-0} =~ ^[0-9]+$ ]] && ((free >= 1048576)); then
		base=/dev/shm
	fi
	scratch=$(mktemp -d "$base/outflow-testenv.XXXXXX")
	chmod 755 "$scratch"
	printf '%s\n' "$scratch" >"$dir/scratch"
}

# remove_scratch deletes the scratch dir once both services are stopped.
remove_scratch() {
	[[ -f $1/scratch ]] || return 0
	rm -rf -- "$(<"$1/scratch")" "$1/scratch"
}

# start_all starts the services for state dir $1 and writes $1/env. The
# broker's JVM and the feature server boot while PostgreSQL is initialised.
start_all() {
	local dir=$1 t0
	ensure_postgres
	ensure_kafka_jars
	ensure_java
	if [[ $WITH_FEAST == 1 ]]; then
		command -v curl >/dev/null || die "curl not found; it tells when Feast is ready"
		ensure_feast
	fi
	t0=$(now_ms)
	make_scratch "$dir"
	launch_kafka "$dir"
	if [[ $WITH_FEAST == 1 ]]; then
		launch_feast "$dir"
	fi
	start_postgres "$dir"
	start_kinesis "$dir"
	await_kafka "$dir" "$t0"
	if [[ $WITH_FEAST == 1 ]]; then
		await_feast "$dir" "$t0"
	fi
	cat >"$dir/env" <<EOF
export OUTFLOW_TEST_DATABASE_URL='postgres://outflow@127.0.0.1:$(<"$dir/pg.port")/postgres?sslmode=disable'
export OUTFLOW_TEST_KAFKA_BROKERS='127.0.0.1:$(<"$dir/kafka.port")'
export OUTFLOW_TEST_KINESIS_ENDPOINT='http://127.0.0.1:$(<"$dir/kinesis.port")'
EOF
	if [[ $WITH_FEAST == 1 ]]; then
		printf "export OUTFLOW_TEST_FEAST_URL='http://127.0.0.1:%s'\n" "$(<"$dir/feast.port")" >>"$dir/env"
	fi
}

# stop_all stops the services of state dir $1; safe to call more than once
# and on a partly started set.
stop_all() {
	stop_feast "$1" "${2:-}"
	stop_kinesis "$1" "${2:-}"
	stop_kafka "$1" "${2:-}"
	stop_postgres "$1"
	remove_scratch "$1"
	rm -f -- "$1/env"
}

# reap_stale stops the services of runs whose script was SIGKILLed (and so
# never ran its trap) and deletes their state.
reap_stale() {
	local d owner
	for d in "$STATE_ROOT"/run.*; do
		[[ -d $d ]] || continue
		owner=$(cat "$d/owner.pid" 2>/dev/null || true)
		[[ -n $owner ]] && kill -0 "$owner" 2>/dev/null && continue
		stop_all "$d" strict
		rm -rf -- "$d"
	done
}

# ------------------------------------------------------------------ Commands --

# DEV_DIR holds the state of the pair managed by start/env/stop.
readonly DEV_DIR=$STATE_ROOT/dev
# RUN_DIR is the state dir of this `run`; CHILD the pid (and process group) of
# its command while it runs.
RUN_DIR=""
CHILD=""

# on_exit is the EXIT trap of `run`: it stops the services and removes the
# run's state, keeping the logs when the run failed.
on_exit() {
	local rc=$?
	set +e
	trap '' INT TERM HUP
	if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
		stop_group "$CHILD" TERM
	fi
	stop_all "$RUN_DIR"
	if ((rc == 0)); then
		rm -rf -- "$RUN_DIR"
	else
		log "service logs kept in ${RUN_DIR#"$REPO_ROOT"/} (removed by the next run)"
	fi
	exit "$rc"
}

# on_signal forwards SIGINT/SIGTERM/SIGHUP to the command's process group,
# gives it STOP_TIMEOUT to finish (gotestsum prints its summary on SIGINT), and
# exits with the shell's 128+signal status; on_exit then stops the services.
# Further signals are ignored from here on: make passes its own SIGINT on to
# us right after the terminal's, and dying on it would skip the cleanup.
on_signal() {
	local sig=$1 code=$2
	trap '' INT TERM HUP
	log "got SIG$sig, stopping"
	if [[ -n $CHILD ]]; then
		stop_group "$CHILD" "$sig"
	fi
	exit "$code"
}

cmd_run() {
	[[ ${1:-} == -- ]] && shift
	(($# > 0)) || die "usage: $0 run -- <command...>"
	mkdir -p "$STATE_ROOT"
	reap_stale
	RUN_DIR=$(mktemp -d "$STATE_ROOT/run.XXXXXX")
	printf '%s\n' "$$" >"$RUN_DIR/owner.pid"
	trap on_exit EXIT
	trap 'on_signal INT 130' INT
	trap 'on_signal TERM 143' TERM
	trap 'on_signal HUP 129' HUP
	start_all "$RUN_DIR"
	# shellcheck source=/dev/null
	source "$RUN_DIR/env"
	# The command gets its own process group (set -m) so that, unlike a plain
	# background job, it does not ignore SIGINT and the whole tree (gotestsum,
	# go test, test binaries) can be signalled at once. `wait` returns as soon
	# as a trapped signal arrives, where a foreground command would delay the
	# trap until it finished by itself.
	set -m
	"$@" &
	CHILD=$!
	set +m
	local rc=0
	wait "$CHILD" || rc=$?
	CHILD=""
	return "$rc"
}

# on_start_exit is the EXIT trap of `start`: a pair that failed to start
# (or was interrupted) is stopped again; a started one is left running.
on_start_exit() {
	local rc=$?
	set +e
	trap '' INT TERM HUP
	((rc == 0)) || stop_all "$DEV_DIR"
	exit "$rc"
}

cmd_start() {
	mkdir -p "$STATE_ROOT"
	if [[ -f $DEV_DIR/env ]]; then
		log "already running; stop it with: $0 stop"
		return 0
	fi
	reap_stale
	rm -rf -- "$DEV_DIR"
	mkdir -p "$DEV_DIR"
	trap on_start_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	start_all "$DEV_DIR"
	log "started; use it with: eval \"\$($0 env)\""
}

cmd_stop() {
	if [[ ! -d $DEV_DIR ]]; then
		log "not running"
		return 0
	fi
	stop_all "$DEV_DIR" strict
	rm -rf -- "$DEV_DIR"
	log "stopped"
}

cmd_env() {
	[[ -f $DEV_DIR/env ]] || die "not running; start it with: $0 start"
	cat -- "$DEV_DIR/env"
}

main() {
	local cmd=${1:-}
	(($# > 0)) && shift
	case $cmd in
	run) cmd_run "$@" ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	env) cmd_env ;;
	*)
		sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
}

main "$@"
