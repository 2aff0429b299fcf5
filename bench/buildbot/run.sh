#!/usr/bin/env bash
# Buildbot half of the dispatch benchmark: how fast a stock Buildbot master hands a
# trivial build (one ShellCommand step, `true`) to one of two local workers.
#
#   1. latency from a force-scheduler trigger (REST, JSON-RPC "force") to the `true`
#      step starting and to the build finishing: p50/p95 over BENCH_RUNS builds run one
#      at a time (after one warm-up build that is not counted)
#   2. time to finish BENCH_BULK (200) builds forced back to back, two workers
#   3. the master's VmRSS at idle (settled, before any build) and after the bulk builds
#
# Usage: bench/buildbot/run.sh          (results on stdout as key=value lines,
#                                        progress on stderr; takes 1-3 minutes)
#
# Needs python3 (with venv; as root it apt-get installs python3-venv if that is
# missing) and PyPI. Buildbot is pip-installed once into BENCH_BUILDBOT_VENV and
# reused from then on. Master, workers and the SQLite db live in a fresh temporary
# directory; everything listens on 127.0.0.1 only, on free ports picked at start.
#
# Environment:
#   BENCH_RUNS=30          one-at-a-time builds for the percentiles
#   BENCH_BULK=200         builds forced back to back for the throughput figure
#   BENCH_MODE=sse         how the client stamps events: sse (the master's server-sent
#                          events) or poll (REST polling every 5 ms; loads the master)
#   BENCH_DIR=/var/tmp     parent of the temporary run directory
#   BENCH_KEEP=1           keep the run directory (logs, db) afterwards; it is also
#                          kept when the run fails
#   BENCH_BUILDBOT_VENV=/var/tmp/slipway-bench-buildbot-venv
#   BENCH_BUILDBOT_VERSION=  pin buildbot, buildbot-worker and buildbot-www to this
#                          version when the venv is created (default: latest)
#   BENCH_PYTHON=python3   interpreter the venv is made from
#   BB_MAX_BUILDS=1        builds one worker may run at once
#
# Exits 0 when every measurement ran; non-zero (with the logs' tails on stderr) if
# anything failed. Numbers depend on what else the machine is doing: the load average
# before and after the run is printed with them.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNS=${BENCH_RUNS:-30}
BULK=${BENCH_BULK:-200}
MODE=${BENCH_MODE:-sse}
VENV=${BENCH_BUILDBOT_VENV:-/var/tmp/slipway-bench-buildbot-venv}
PY=${BENCH_PYTHON:-python3}
PIN=${BENCH_BUILDBOT_VERSION:+==$BENCH_BUILDBOT_VERSION}
export BB_MAX_BUILDS=${BB_MAX_BUILDS:-1}
START_SECONDS=$EPOCHREALTIME

RUN='' MEASURE_PID='' MASTER_PID='' W1_PID='' W2_PID='' OK=0

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $1 }"; }

# stop PID: SIGTERM, then wait up to 20 s (in 0.1 s steps), then SIGKILL.
stop() {
	local pid=$1 i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid still running after 20 s, killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop "$MEASURE_PID"
	stop "$W1_PID"
	stop "$W2_PID"
	stop "$MASTER_PID"
	wait 2>/dev/null || true
	if [[ -n $RUN && -d $RUN ]]; then
		if ((OK == 0)); then
			local f
			for f in "$RUN"/master/twistd.log "$RUN"/master.out "$RUN"/w1/twistd.log "$RUN"/w2/twistd.log; do
				[[ -f $f ]] || continue
				log "---- tail of $f"
				tail -n 30 "$f" >&2
			done
			log "run directory kept: $RUN"
		elif [[ ${BENCH_KEEP:-0} == 1 ]]; then
			log "run directory kept: $RUN"
		else
			rm -rf "$RUN"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The marker is written only after a complete install, so an interrupted one is
# never taken for a finished one.
venv_ok() {
	[[ -f $VENV/.slipway-bench-complete && -x $VENV/bin/python ]] &&
		"$VENV/bin/python" -c 'import buildbot, buildbot_worker, buildbot_www' 2>/dev/null
}

setup_venv() {
	venv_ok && return 0
	log "setting up the Buildbot virtualenv in $VENV"
	if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
		command -v apt-get >/dev/null && ((EUID == 0)) ||
			die "$PY has no working venv module; install python3-venv"
		log "installing python3-venv"
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
	fi
	rm -rf "$VENV"
	"$PY" -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check \
		"buildbot$PIN" "buildbot-worker$PIN" "buildbot-www$PIN" >&2
	touch "$VENV/.slipway-bench-complete"
	venv_ok || die "buildbot not importable from $VENV after install"
}

alive() { kill -0 "$1" 2>/dev/null; }

main() {
	setup_venv
	local bb="$VENV/bin/buildbot" bbw="$VENV/bin/buildbot-worker" vpy="$VENV/bin/python"
	local version
	version=$("$vpy" -c 'import importlib.metadata as m; print(m.version("buildbot"))')

	local parent=${BENCH_DIR:-/var/tmp}
	RUN=$(mktemp -d "$parent/slipway-bench-buildbot.XXXXXX")
	log "run directory: $RUN"

	local ports
	ports=$("$vpy" -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')
	read -r BB_WWW_PORT BB_PB_PORT <<<"$ports"
	BB_WORKER_PASS=bench-$RANDOM$RANDOM$RANDOM
	export BB_WWW_PORT BB_PB_PORT BB_WORKER_PASS
	local url="http://127.0.0.1:$BB_WWW_PORT"

	"$bb" create-master -q "$RUN/master" >&2
	cp "$HERE/master.cfg" "$RUN/master/master.cfg"
	"$bbw" create-worker -q "$RUN/w1" "127.0.0.1:$BB_PB_PORT" bench-w1 "$BB_WORKER_PASS" >&2
	"$bbw" create-worker -q "$RUN/w2" "127.0.0.1:$BB_PB_PORT" bench-w2 "$BB_WORKER_PASS" >&2

	log "starting the master (www $BB_WWW_PORT, workers $BB_PB_PORT)"
	# --nodaemon: twistd runs in this very process, so $! is the master's pid.
	"$bb" start --nodaemon "$RUN/master" >"$RUN/master.out" 2>&1 &
	MASTER_PID=$!
	local i
	for ((i = 0; ; i++)); do
		alive "$MASTER_PID" || die "the master exited during start-up"
		((i < 1200)) || die "the master's REST API did not answer within 120 s"
		"$vpy" -c '
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/api/v2/builders", timeout=2).read()
except Exception:
    sys.exit(1)' "$url" && break
		sleep 0.1
	done

	log "starting two workers"
	"$bbw" start --nodaemon "$RUN/w1" >"$RUN/w1.out" 2>&1 &
	W1_PID=$!
	"$bbw" start --nodaemon "$RUN/w2" >"$RUN/w2.out" 2>&1 &
	W2_PID=$!
	for ((i = 0; ; i++)); do
		alive "$MASTER_PID" || die "the master exited"
		alive "$W1_PID" && alive "$W2_PID" || die "a worker exited during start-up"
		((i < 1200)) || die "the workers did not connect within 120 s"
		"$vpy" "$HERE/measure.py" ready --url "$url" && break
		sleep 0.1
	done
	log "master and both workers up after $(elapsed "$START_SECONDS") s"

	echo "buildbot_loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')"
	echo "buildbot_python=$("$vpy" -c 'import platform; print(platform.python_version())')"
	echo "buildbot_twisted=$("$vpy" -c 'import importlib.metadata as m; print(m.version("twisted"))')"
	# In the background and waited for, so that a signal to this script is acted on at once
	# (bash runs traps only after a foreground child has exited).
	"$vpy" "$HERE/measure.py" run --url "$url" --mode "$MODE" --runs "$RUNS" --bulk "$BULK" \
		--master-pid "$MASTER_PID" --worker-pids "$W1_PID,$W2_PID" --version "$version" &
	MEASURE_PID=$!
	wait "$MEASURE_PID"
	MEASURE_PID=''
	alive "$MASTER_PID" || die "the master died during the measurements"
	echo "buildbot_loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')"
	OK=1
}

main "$@"
stop "$W1_PID" && W1_PID=
stop "$W2_PID" && W2_PID=
stop "$MASTER_PID" && MASTER_PID=
echo "buildbot_total_seconds=$(elapsed "$START_SECONDS")"
