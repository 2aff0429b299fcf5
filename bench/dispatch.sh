#!/usr/bin/env bash
# Dispatch benchmark: Slipway's pipelines vs Buildbot's builds, measured in one run on
# one machine, one after the other (Buildbot first, then Slipway; never concurrently).
#
# The same trivial work on both sides: one job/build whose only step runs `true`, two
# local runners/workers that each take BENCH_CAPACITY (default 1) at a time.
#
#   1. latency, BENCH_RUNS (30) pipelines one at a time after one warm-up: trigger ->
#      the step started, and trigger -> the pipeline finished (p50/p95)
#   2. throughput: BENCH_BULK (200) pipelines triggered as fast as the client can,
#      first trigger -> last one finished
#   3. the server's (Buildbot: the master's) VmRSS at idle and after the bulk run
#
# Buildbot: bench/buildbot/run.sh (a stock master, ShellCommand `true`, force
# scheduler over REST, times from its SSE events; see there). Slipway: the release
# binary, SQLite and files in a temporary dir, `slipway image bootstrap busybox`, a
# local git repository whose .slipway.yml has one job with one busybox step `true`,
# two `slipway runner`s; POST /api/v1/pipelines, times from the server's stamps
# (same clock as the client's), client in bench/dispatch_measure.py.
#
# Usage: bench/dispatch.sh        (as root; installs missing Debian packages; the
#                                  first run also pip-installs Buildbot into a venv)
#
# Environment:
#   BENCH_RUNS=30         one-at-a-time pipelines/builds for the percentiles
#   BENCH_BULK=200        pipelines/builds for the throughput figure
#   BENCH_CAPACITY=1      jobs each Slipway runner takes at once (--capacity); also
#                         Buildbot's max_builds per worker unless BB_MAX_BUILDS is set
#   BENCH_CLIENTS=8       client threads sending Slipway's BENCH_BULK triggers
#                         (Buildbot's run.sh sends its forces one after another)
#   BENCH_POLL_MS=20      how often the client polls a pipeline it waits for
#   BENCH_DIR=/var/tmp    parent of the temporary directory (everything of both halves)
#   BENCH_KEEP=1          keep the temporary directory (logs, data) afterwards; it is
#                         also kept when a measurement failed (not when interrupted)
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
#   BENCH_NOTE="..."      one-line note put under the summary in bench/RESULTS.md
#   SLIPWAY_LOG=warn      log filter of the server and the runners (logs/*.log)
#
# Targets (Slipway relative to Buildbot): p50 trigger-to-step-start ≤ 1/3; 200-pipeline
# throughput ≥ 5x; idle RSS ≤ 1/4. Exits 0 when every measurement ran, whether or not
# the targets were met; non-zero if anything failed to run (logs are printed then).
set -Eeuo pipefail
export LC_ALL=C         # EPOCHREALTIME and awk must use '.' as decimal separator
export RUST_BACKTRACE=0 # keep slipway's error output short in the logs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-30}
BULK=${BENCH_BULK:-200}
CAPACITY=${BENCH_CAPACITY:-1}
CLIENTS=${BENCH_CLIENTS:-8}
POLL_MS=${BENCH_POLL_MS:-20}
BB_MAX_BUILDS=${BB_MAX_BUILDS:-$CAPACITY}
LOGLEVEL=${SLIPWAY_LOG:-warn}
CMDLINE="$(printf '%s ' "BENCH_RUNS=$RUNS" "BENCH_BULK=$BULK" "BENCH_CAPACITY=$CAPACITY" "BENCH_CLIENTS=$CLIENTS" "BENCH_DIR=${BENCH_DIR:-/var/tmp}" bash bench/dispatch.sh "$@")"
CMDLINE=${CMDLINE% }
ADMIN_PW=bench-$RANDOM$RANDOM$RANDOM
SLIPWAY=$ROOT/target/release/slipway
MEASURE=$ROOT/bench/dispatch_measure.py
START=$EPOCHREALTIME

WORK= SERVER_PID= URL= PEER_PID= MEASURE_PID=
RUNNER_PIDS=()
declare -A R # results, key=value from both halves

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# verdict VALUE OP THRESHOLD -> PASS/FAIL
verdict() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo PASS; else echo FAIL; fi; }
alive() { kill -0 "$1" 2>/dev/null; }

trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" exited with status $?" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap cleanup EXIT

# stop PID [SECONDS]: SIGTERM, wait (default 20 s), then SIGKILL
stop() {
	local pid=$1 limit=$((${2:-20} * 10)) i
	[[ -n $pid ]] && alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < limit; i++)); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then
		echo "pid $pid still running after $((limit / 10)) s, killing it" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

cleanup() {
	local rc=$? f d id m pid
	set +e
	trap - ERR INT TERM
	# the peer's script cleans up after itself on SIGTERM
	stop "$MEASURE_PID" 5
	stop "$PEER_PID" 60
	# runners first (they finish or give back their jobs and exit), then the server
	for pid in "${RUNNER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${RUNNER_PIDS[@]}"; do stop "$pid" 30; done
	if [[ -n $SERVER_PID ]]; then
		((rc != 0)) && ! alive "$SERVER_PID" && echo "slipway server (pid $SERVER_PID) had already exited" >&2
		stop "$SERVER_PID" 20
	fi
	if [[ -n $WORK ]]; then
		# containers a killed runner's guard did not get to
		for d in "$WORK"/runner-*/engine/runc; do
			[[ -d $d ]] || continue
			for id in $(runc --root "$d" list -q 2>/dev/null); do runc --root "$d" delete -f "$id" >/dev/null 2>&1; done
		done
		# every mount still under $WORK, deepest first
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done < <(findmnt -rno TARGET | grep -F "$WORK/" | sort -r)
		if ((rc != 0)); then
			for f in "$WORK"/logs/*.log; do
				[[ -s $f ]] || continue
				echo "---- last lines of $(basename "$f") ----" >&2
				tail -n 20 "$f" | cut -c1-400 >&2
			done
		fi
		# kept when asked to, and when something failed (not when interrupted)
		if [[ ${BENCH_KEEP:-0} == 1 ]] || ((rc != 0 && rc != 130 && rc != 143)); then
			echo "kept $WORK" >&2
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

install_packages() {
	local missing=() pair pkg cmd
	for pair in runc:runc git:git python3:python3 curl:curl findmnt:util-linux; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || missing+=("$pkg")
	done
	dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
	((${#missing[@]} == 0)) && return
	log "installing missing packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$WORK/logs/apt.log" 2>&1 ||
		{ apt-get update >>"$WORK/logs/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$WORK/logs/apt.log" 2>&1; } ||
		die "apt-get install ${missing[*]} failed"
}

build_slipway() {
	log "building slipway (cargo build --release -p slipway-server)..."
	(cd "$ROOT" && cargo build --release -p slipway-server) >"$WORK/logs/cargo-build.log" 2>&1 ||
		die "cargo build --release -p slipway-server failed"
}

cpu_busy() { # percent of CPU time not idle over 1 s
	local a b
	read -ra a < <(head -n1 /proc/stat)
	sleep 1
	read -ra b < <(head -n1 /proc/stat)
	local ta=0 tb=0 i
	for ((i = 1; i < ${#a[@]}; i++)); do ta=$((ta + a[i])); tb=$((tb + b[i])); done
	calc "100 - 100 * ((${b[4]} + ${b[5]}) - (${a[4]} + ${a[5]})) / ($tb - $ta)" 0
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# read_results FILE: key=value lines into R
read_results() {
	local k v
	while IFS='=' read -r k v; do
		[[ $k =~ ^[a-z0-9_]+$ ]] && R[$k]=$v
	done <"$1"
}

# need KEY...: every key must have been reported
need() {
	local k
	for k in "$@"; do [[ -n ${R[$k]:-} ]] || die "no $k in the results (see the logs)"; done
}

# 1. Buildbot
run_buildbot() {
	log "Buildbot half: bench/buildbot/run.sh (BENCH_RUNS=$RUNS BENCH_BULK=$BULK BB_MAX_BUILDS=$BB_MAX_BUILDS)..."
	# In the background and waited for, so that a signal to this script is acted on at once.
	BENCH_RUNS=$RUNS BENCH_BULK=$BULK BB_MAX_BUILDS=$BB_MAX_BUILDS BENCH_DIR=$WORK \
		bash "$ROOT/bench/buildbot/run.sh" >"$WORK/buildbot.out" 2>"$WORK/logs/buildbot.log" &
	PEER_PID=$!
	if ! wait "$PEER_PID"; then
		PEER_PID=
		grep -m3 -B2 -A8 'Traceback\|^error' "$WORK/logs/buildbot.log" >&2 || true
		die "bench/buildbot/run.sh failed"
	fi
	PEER_PID=
	read_results "$WORK/buildbot.out"
	need buildbot_step_start_p50_ms buildbot_step_start_p95_ms buildbot_finish_p50_ms buildbot_finish_p95_ms \
		buildbot_200_seconds buildbot_200_builds_per_second buildbot_rss_idle_kb buildbot_rss_after_kb buildbot_version
	sed 's/^/  /' "$WORK/buildbot.out"
}

# 2. Slipway
start_server() {
	mkdir -p "$WORK/server"
	SLIPWAY_ADMIN_PASSWORD=$ADMIN_PW SLIPWAY_LOG=$LOGLEVEL \
		"$SLIPWAY" server --listen 127.0.0.1:0 --data-dir "$WORK/server" \
		>"$WORK/logs/server-stdout.log" 2>"$WORK/logs/server.log" &
	SERVER_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		URL=$(sed -n 's/^slipway listening on \(http:[^ ]*\).*/\1/p' "$WORK/logs/server-stdout.log" | head -n1) || true
		[[ -n $URL ]] && curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null && break
		alive "$SERVER_PID" || die "slipway server exited during startup"
		sleep 0.1
	done
	curl -fsS -o /dev/null "$URL/readyz" || die "slipway server not ready after 30 s"
	export SLIPWAY_SERVER=$URL SLIPWAY_USER=admin SLIPWAY_PASSWORD=$ADMIN_PW
	log "slipway server at $URL (pid $SERVER_PID)"
}

make_repo() {
	local r=$WORK/repo
	mkdir -p "$r"
	git -C "$r" init -q -b main
	cat >"$r/.slipway.yml" <<-'EOF'
		jobs:
		  bench:
		    steps:
		      - name: noop
		        image: busybox
		        commands: [true]
	EOF
	git -C "$r" add .slipway.yml
	git -C "$r" -c user.name=bench -c user.email=bench@localhost commit -q -m 'bench: one job, one step: true'
	"$SLIPWAY" repo add bench --url "$r" >"$WORK/logs/repo-add.log" 2>&1 || die "slipway repo add bench failed"
}

start_runners() {
	local token i d
	token=$("$SLIPWAY" runner-token create 2>>"$WORK/logs/runner-token.log") || die "slipway runner-token create failed"
	for i in 1 2; do
		d=$WORK/runner-$i
		mkdir -p "$d"
		chmod 711 "$d"
		SLIPWAY_LOG=$LOGLEVEL "$SLIPWAY" runner --server "$URL" --token "$token" --name "bench-r$i" \
			--capacity "$CAPACITY" --work-dir "$d" >"$WORK/logs/runner-$i.log" 2>&1 &
		RUNNER_PIDS+=($!)
	done
	for ((i = 0; ; i++)); do
		for d in "${RUNNER_PIDS[@]}"; do alive "$d" || die "a runner exited during start-up"; done
		((i < 300)) || die "the runners were not both online within 30 s"
		python3 "$MEASURE" runners --url "$URL" --count 2 && break
		sleep 0.1
	done
	log "two runners online (capacity $CAPACITY each)"
}

run_slipway() {
	log "Slipway half: server, busybox image, repository, two runners..."
	start_server
	R[slipway_rss_start_kb]=$(python3 "$MEASURE" rss --pid "$SERVER_PID")
	log "  server VmRSS after start-up, settled: ${R[slipway_rss_start_kb]} kB"
	"$SLIPWAY" image bootstrap busybox >"$WORK/logs/bootstrap.log" 2>&1 || die "slipway image bootstrap busybox failed"
	R[slipway_rss_bootstrap_kb]=$(python3 "$MEASURE" rss --pid "$SERVER_PID")
	log "  server VmRSS after the busybox push, settled: ${R[slipway_rss_bootstrap_kb]} kB"
	make_repo
	start_runners
	local runner_pids
	runner_pids=$(IFS=,; echo "${RUNNER_PIDS[*]}")
	python3 "$MEASURE" run --url "$URL" --server-pid "$SERVER_PID" --runner-pids "$runner_pids" \
		--runs "$RUNS" --bulk "$BULK" --clients "$CLIENTS" --poll-ms "$POLL_MS" \
		>"$WORK/slipway.out" 2>"$WORK/logs/measure.log" &
	MEASURE_PID=$!
	if ! wait "$MEASURE_PID"; then
		MEASURE_PID=
		die "bench/dispatch_measure.py failed"
	fi
	MEASURE_PID=
	alive "$SERVER_PID" || die "the server died during the measurements"
	read_results "$WORK/slipway.out"
	need slipway_step_start_p50_ms slipway_step_start_p95_ms slipway_finish_p50_ms slipway_finish_p95_ms \
		slipway_200_seconds slipway_200_pipelines_per_second slipway_rss_idle_kb slipway_rss_after_kb
	sed 's/^/  /' "$WORK/slipway.out"
	# warnings and errors the server and the runners logged, if any
	local f n
	for f in "$WORK"/logs/server-stdout.log "$WORK"/logs/server.log "$WORK"/logs/runner-?.log; do
		n=$(grep -c ' WARN \| ERROR ' "$f" 2>/dev/null) || true
		((${n:-0} == 0)) || log "  $(basename "$f"): $n warning/error lines, e.g. $(grep -m1 ' WARN \| ERROR ' "$f" | cut -c1-200)"
	done
}

summary() {
	local r_step r_fin r_rate r_rss r_rss_start v_step v_rate v_rss commit dirty bb_py bb_tw
	r_step=$(calc "${R[slipway_step_start_p50_ms]} / ${R[buildbot_step_start_p50_ms]}" 3)
	r_fin=$(calc "${R[slipway_finish_p50_ms]} / ${R[buildbot_finish_p50_ms]}" 3)
	r_rate=$(calc "${R[slipway_200_pipelines_per_second]} / ${R[buildbot_200_builds_per_second]}")
	r_rss=$(calc "${R[slipway_rss_idle_kb]} / ${R[buildbot_rss_idle_kb]}" 3)
	r_rss_start=$(calc "${R[slipway_rss_start_kb]} / ${R[buildbot_rss_idle_kb]}" 3)
	v_step=$(verdict "$r_step" '<=' 0.333)
	v_rate=$(verdict "$r_rate" '>=' 5)
	v_rss=$(verdict "$r_rss" '<=' 0.25)
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	# bench/ is left out: RESULTS.md changes with every run of this script
	dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null | grep -q . && echo " + uncommitted changes" || true)
	mib() { calc "$1 / 1024" 1; }
	pct() { printf '%s ms (p95 %s)' "${R[${1}_p50_ms]}" "${R[${1}_p95_ms]}"; }
	cat <<-EOF
		### Dispatch benchmark: slipway vs Buildbot ($(date -u '+%Y-%m-%d %H:%M UTC'))

		- Command: \`$CMDLINE\`
		- Host: $(nproc) CPUs (nproc), $CPU_MODEL, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); temp dir on $(findmnt -no FSTYPE,SOURCE -T "$WORK" | awk '{ print $1 " on " $2 }'); CPU busy with other work (1 s samples): ${BUSY_BEFORE}% before Buildbot, ${BUSY_MID}% before Slipway, ${BUSY_AFTER}% after; 1-min load average (this benchmark included) ${LOAD_BEFORE} / ${LOAD_MID} / ${LOAD_AFTER}
		- Slipway: commit $commit$dirty, \`cargo build --release\`, SLIPWAY_LOG=$LOGLEVEL, SQLite; two \`slipway runner\`s, --capacity $CAPACITY each, steps in a user namespace; image library/busybox:latest from \`slipway image bootstrap busybox\` (busybox-static $(dpkg-query -W -f '${Version}' busybox-static)), $(runc --version | head -n1)
		- Peer: Buildbot ${R[buildbot_version]} (Python ${R[buildbot_python]:-?}, Twisted ${R[buildbot_twisted]:-?}), SQLite, two local workers with max_builds=$BB_MAX_BUILDS, one ShellCommand \`true\`, force scheduler over REST, no request collapsing (bench/buildbot/)
		- Work: one job / build with one step running \`true\`; $RUNS one at a time after one warm-up (nearest-rank p50/p95), then $BULK at once
		- Times: Buildbot's from its SSE events as the client receives them (time.monotonic); Slipway's from the server's own ms stamps (started_at, finished_at) against the client's wall clock just before the POST; Slipway's client polls every ${POLL_MS} ms, Buildbot's forces are sent one after another, Slipway's from $CLIENTS client threads
		- Ratios are slipway / Buildbot (times and RSS: lower is better; throughput: higher is better)

		| Measurement | slipway | Buildbot | Ratio | Target | Result |
		|---|---:|---:|---:|---|---|
		| Trigger → step started, p50 (p95) | $(pct slipway_step_start) | $(pct buildbot_step_start) | ${r_step}x | ≤ 0.333x | $v_step |
		| Trigger → finished, p50 (p95) | $(pct slipway_finish) | $(pct buildbot_finish) | ${r_fin}x | – | – |
		| $BULK at once: first trigger → last finished | ${R[slipway_200_seconds]} s, ${R[slipway_200_pipelines_per_second]}/s | ${R[buildbot_200_seconds]} s, ${R[buildbot_200_builds_per_second]}/s | ${r_rate}x | ≥ 5x | $v_rate |
		| Server VmRSS at idle (settled, runners connected, before any pipeline) | $(mib "${R[slipway_rss_idle_kb]}") MiB | $(mib "${R[buildbot_rss_idle_kb]}") MiB | ${r_rss}x | ≤ 0.25x | $v_rss |
		| Server VmRSS right after start-up (no image, repo or runner yet) | $(mib "${R[slipway_rss_start_kb]}") MiB | – | ${r_rss_start}x | – | – |
		| Server VmRSS after the busybox push (no repo or runner yet) | $(mib "${R[slipway_rss_bootstrap_kb]}") MiB | – | $(calc "${R[slipway_rss_bootstrap_kb]} / ${R[buildbot_rss_idle_kb]}" 3)x | – | – |
		| Server VmRSS after the $BULK | $(mib "${R[slipway_rss_after_kb]}") MiB | $(mib "${R[buildbot_rss_after_kb]}") MiB | $(calc "${R[slipway_rss_after_kb]} / ${R[buildbot_rss_after_kb]}" 3)x | – | – |
		| Server CPU over the $BULK (utime+stime) | ${R[slipway_200_server_cpu_seconds]} s | ${R[buildbot_200_master_cpu_seconds]:-?} s | $(calc "${R[slipway_200_server_cpu_seconds]} / (${R[buildbot_200_master_cpu_seconds]:-0} + 1e-9)")x | – | – |

		Slipway, where the one-at-a-time time goes (p50, ms after the trigger): POST answered ${R[slipway_post_p50_ms]} (pipeline row created at ${R[slipway_created_p50_ms]}), job leased by a runner ${R[slipway_leased_p50_ms]} (lease → step started: p50 ${R[slipway_lease_to_step_p50_ms]}, p95 ${R[slipway_lease_to_step_p95_ms]}), step started ${R[slipway_step_start_p50_ms]}, step ran ${R[slipway_step_run_p50_ms]}, step end → pipeline finished ${R[slipway_step_to_finish_p50_ms]}; client saw it finished at ${R[slipway_seen_finish_p50_ms]}. Bulk: triggers sent in ${R[slipway_200_trigger_seconds]} s (Buildbot ${R[buildbot_200_trigger_seconds]:-?} s), per job p50 ${R[slipway_200_job_p50_ms]} ms from lease to job end (lease → step started ${R[slipway_200_lease_to_step_p50_ms]}, step ran ${R[slipway_200_step_run_p50_ms]}), at most ${R[slipway_200_max_concurrent]} jobs at once (Buildbot ${R[buildbot_200_max_concurrent]:-?} builds), runners' CPU ${R[slipway_200_runners_cpu_seconds]} s + ${R[slipway_200_runners_children_cpu_seconds]} s in their children (Buildbot workers ${R[buildbot_200_workers_cpu_seconds]:-?} s), statuses ${R[slipway_200_statuses]}; Buildbot min/max step start ${R[buildbot_step_start_min_ms]:-?}/${R[buildbot_step_start_max_ms]:-?} ms, slipway ${R[slipway_step_start_min_ms]}/${R[slipway_step_start_max_ms]} ms.
	EOF
}

append_results() { # SUMMARY
	local f=$ROOT/bench/RESULTS.md heading='## bench/dispatch.sh — pipeline dispatch vs Buildbot'
	grep -qxF "$heading" "$f" 2>/dev/null || printf '\n%s\n' "$heading" >>"$f"
	{
		printf '\n%s\n' "$1"
		[[ -n ${BENCH_NOTE:-} ]] && printf '\nNote: %s\n' "$BENCH_NOTE"
		true
	} >>"$f"
	log "appended the summary to bench/RESULTS.md"
}

main() {
	((EUID == 0)) || die "run as root (runc; the runners run steps in containers)"
	[[ $CAPACITY =~ ^[1-9][0-9]*$ ]] || die "BENCH_CAPACITY must be a positive integer"
	local parent=${BENCH_DIR:-/var/tmp}
	WORK=$(mktemp -d "$parent/sdb.XXXXXX")
	# Container root in the runners' user namespace (uid 100000) is "others" on the
	# host: every directory down to the runners' work dirs must be searchable.
	chmod 711 "$WORK"
	mkdir -p "$WORK/logs"
	log "temporary directory: $WORK"
	install_packages
	build_slipway
	CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	BUSY_BEFORE=$(cpu_busy) LOAD_BEFORE=$(loadavg)
	log "CPU busy before Buildbot's half: ${BUSY_BEFORE}% (load average $LOAD_BEFORE)"
	run_buildbot
	BUSY_MID=$(cpu_busy) LOAD_MID=$(loadavg)
	log "CPU busy before Slipway's half: ${BUSY_MID}% (load average $LOAD_MID)"
	run_slipway
	BUSY_AFTER=$(cpu_busy) LOAD_AFTER=$(loadavg)
	local s
	s=$(summary)
	printf '\n%s\n' "$s"
	printf '\nPASS/FAIL: step start %s, throughput %s, idle RSS %s\n' \
		"$(verdict "$(calc "${R[slipway_step_start_p50_ms]} / ${R[buildbot_step_start_p50_ms]}" 3)" '<=' 0.333)" \
		"$(verdict "$(calc "${R[slipway_200_pipelines_per_second]} / ${R[buildbot_200_builds_per_second]}")" '>=' 5)" \
		"$(verdict "$(calc "${R[slipway_rss_idle_kb]} / ${R[buildbot_rss_idle_kb]}" 3)" '<=' 0.25)"
	[[ ${BENCH_NO_RESULTS:-0} == 1 ]] || append_results "$s"
	log "wall time: $(calc "$EPOCHREALTIME - $START" 1) s"
}

main "$@"
