#!/usr/bin/env bash
# Log-page benchmark: how long a browser takes to show the LAST line of a big step log,
# Slipway's log page vs Buildbot's web UI, measured in one run on one machine, one
# after the other (Buildbot first, then Slipway; never concurrently).
#
# The logs: a step prints N lines of 100 bytes ("00000001 the quick brown fox ...")
# and then the line LAST-LINE-MARKER (the program spells it "LAST-LINE-" "MARKER", so
# the command echoed at the top of a log does not contain it). Slipway: one job per
# size in BENCH_SIZES (10,000, 100,000 and 1,000,000 lines: 1, 10 and 100 MB), a
# busybox step `awk '...'`. Buildbot: one build of a ShellCommand ["awk", the same
# program] printing BENCH_BB_LINES (100,000) lines.
#
# Headless Chromium (Debian's chromium + chromium-driver, --headless=new, --no-sandbox,
# window 1280x900) driven by bench/ui/measure.py (Selenium); in each new document
# bench/ui/watch.js checks every 10 ms whether the marker is visible (a Range over its
# characters inside the viewport, and hit-testing its middle lands on it) and stamps the
# next frame once it is. For each page: one uncounted warm-up load per browser, then
# BENCH_RUNS fresh loads (about:blank in between), medians reported:
#
#   1. driver.get(URL) -> the marker visible (granularity: the in-page check's 10 ms plus
#      up to a frame; the driver polls the stamp every 10 ms, which does not add to it)
#   2. JS heap used when it showed (CDP Performance.getMetrics JSHeapUsedSize) and after
#      a forced GC, DOM nodes (after the GC), the biggest renderer process's VmRSS
#   3. responsiveness after that: 20 requestAnimationFrame round trips (worst one), a
#      scroll to the top until line 1 is visible, and back to the end until the marker is
#
# Interaction: with BENCH_SCROLL=end (default), once the HTML is parsed, every check
# that does not see the marker also scrolls the document and any scrollable element in
# the viewport to its end, on both sides alike (a user holding End); the summary says
# how many scrolls actually moved something. BENCH_SCROLL=none: no interaction at all
# (Buildbot's viewer then never shows the last line: it opens at the top).
#
# Slipway's page is /jobs/{job}/steps/{position} (job ids and positions from
# GET /api/v1/pipelines/1), signed in through /signin. Until that page exists (HTTP 404)
# the script says so, measures Buildbot alone, appends nothing and exits 0.
#
# Targets: Slipway shows the last of 100,000 lines in < 1 s and >= 10x faster than
# Buildbot; 1,000,000 lines are "usable" (criterion printed with the results).
#
# Usage: bench/ui.sh        (as root; installs missing Debian packages; the first run
#                            also pip-installs Selenium and Buildbot into venvs)
#
# Environment:
#   BENCH_RUNS=3          page loads per log (medians are reported)
#   BENCH_SIZES="10000 100000 1000000"  Slipway's log sizes, in lines
#   BENCH_BB_LINES=100000 Buildbot's log size, in lines
#   BENCH_SCROLL=end      end | none (see above)
#   BENCH_TIMEOUT=600     seconds one page load may take to show the marker
#   BENCH_DIR=/var/tmp    parent of the temporary directory (everything of both halves)
#   BENCH_KEEP=1          keep the temporary directory (logs, data) afterwards; it is
#                         also kept when something failed (not when interrupted)
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
#   BENCH_NO_CARGO=1      use target/release/slipway as it is (no cargo build first)
#   BENCH_NOTE="..."      one-line note put under the summary in bench/RESULTS.md
#   BENCH_UI_VENV=/var/tmp/slipway-bench-ui-venv             Selenium's venv
#   BENCH_BUILDBOT_VENV=/var/tmp/slipway-bench-buildbot-venv Buildbot's (shared with
#                         bench/buildbot/run.sh); BENCH_BUILDBOT_VERSION pins it
#   SLIPWAY_LOG=warn      log filter of the server and the runner (logs/*.log)
#
# Exits 0 when every measurement ran (or Slipway's page is missing), whether or not the
# targets were met; non-zero if anything failed to run (logs are printed then).
set -Eeuo pipefail
export LC_ALL=C         # EPOCHREALTIME and awk must use '.' as decimal separator
export RUST_BACKTRACE=0 # keep slipway's error output short in the logs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
read -ra SIZES <<<"${BENCH_SIZES:-10000 100000 1000000}"
BB_LINES=${BENCH_BB_LINES:-100000}
SCROLL=${BENCH_SCROLL:-end}
TIMEOUT=${BENCH_TIMEOUT:-600}
LOGLEVEL=${SLIPWAY_LOG:-warn}
UI_VENV=${BENCH_UI_VENV:-/var/tmp/slipway-bench-ui-venv}
BB_VENV=${BENCH_BUILDBOT_VENV:-/var/tmp/slipway-bench-buildbot-venv}
BB_PIN=${BENCH_BUILDBOT_VERSION:+==$BENCH_BUILDBOT_VERSION}
CMDLINE="$(printf '%s ' "BENCH_RUNS=$RUNS" "BENCH_SIZES=\"${SIZES[*]}\"" "BENCH_BB_LINES=$BB_LINES" "BENCH_SCROLL=$SCROLL" "BENCH_DIR=${BENCH_DIR:-/var/tmp}" bash bench/ui.sh "$@")"
CMDLINE=${CMDLINE% }
ADMIN_PW=bench-$RANDOM$RANDOM$RANDOM
SLIPWAY=$ROOT/target/release/slipway
MEASURE=$ROOT/bench/ui/measure.py
WINDOW=1280,900
POLL_MS=10
LINE_TEXT='the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs 01234'
FIRST_LINE="00000001 the quick"
START=$EPOCHREALTIME

WORK='' SERVER_PID='' URL='' RUNNER_PID='' MASTER_PID='' WORKER_PID='' MEASURE_PID='' BB_URL=''
SLIPWAY_PAGE=unknown # ok | missing | http-NNN
declare -A R         # results, key=value

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# verdict VALUE OP THRESHOLD -> PASS/FAIL
verdict() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo PASS; else echo FAIL; fi; }
alive() { kill -0 "$1" 2>/dev/null; }
# the awk program printing N lines and the marker
awk_program() { printf 'BEGIN { for (i = 1; i <= %d; i++) printf "%%08d %s\\n", i; print "LAST-LINE-" "MARKER" }' "$1" "$LINE_TEXT"; }
human() { # 10000 -> 10k, 1000000 -> 1M
	if (($1 % 1000000 == 0)); then echo "$(($1 / 1000000))M"; elif (($1 % 1000 == 0)); then echo "$(($1 / 1000))k"; else echo "$1"; fi
}

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
	local rc=$? f d id m
	set +e
	trap - ERR INT TERM
	stop "$MEASURE_PID" 10
	stop "$WORKER_PID" 20
	stop "$MASTER_PID" 20
	stop "$RUNNER_PID" 30
	if [[ -n $SERVER_PID ]]; then
		((rc != 0)) && ! alive "$SERVER_PID" && echo "slipway server (pid $SERVER_PID) had already exited" >&2
		stop "$SERVER_PID" 20
	fi
	if [[ -n $WORK ]]; then
		# containers a killed runner's guard did not get to
		d=$WORK/runner/engine/runc
		if [[ -d $d ]]; then
			for id in $(runc --root "$d" list -q 2>/dev/null); do runc --root "$d" delete -f "$id" >/dev/null 2>&1; done
		fi
		# every mount still under $WORK, deepest first
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done < <(findmnt -rno TARGET | grep -F "$WORK/" | sort -r)
		if ((rc != 0)); then
			for f in "$WORK"/logs/*.log; do
				[[ -s $f ]] || continue
				echo "---- last lines of $(basename "$f") ----" >&2
				tail -n 20 "$f" | cut -c1-400 >&2
			done
		fi
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
	for pair in chromium:chromium chromedriver:chromium-driver runc:runc git:git python3:python3 curl:curl findmnt:util-linux; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || missing+=("$pkg")
	done
	dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
	((${#missing[@]} == 0)) && return
	log "installing missing packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$WORK/logs/apt.log" 2>&1 ||
		{ apt-get update >>"$WORK/logs/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$WORK/logs/apt.log" 2>&1; } ||
		die "apt-get install ${missing[*]} failed"
}

# make_venv DIR IMPORTS PACKAGE...: a venv with PACKAGEs, made once and reused; the
# marker is written only after a complete install (the same one bench/buildbot/run.sh uses)
make_venv() {
	local dir=$1 imports=$2
	shift 2
	[[ -f $dir/.slipway-bench-complete && -x $dir/bin/python ]] && "$dir/bin/python" -c "import $imports" 2>/dev/null && return
	log "setting up $dir (pip install $*)..."
	rm -rf "$dir"
	python3 -m venv "$dir" >>"$WORK/logs/pip.log" 2>&1 || die "python3 -m venv $dir failed"
	"$dir/bin/pip" install --disable-pip-version-check "$@" >>"$WORK/logs/pip.log" 2>&1 || die "pip install $* failed"
	"$dir/bin/python" -c "import $imports" || die "$imports not importable from $dir after the install"
	touch "$dir/.slipway-bench-complete"
}

build_slipway() {
	if [[ ${BENCH_NO_CARGO:-0} == 1 ]]; then
		[[ -x $SLIPWAY ]] || die "BENCH_NO_CARGO=1 but there is no $SLIPWAY"
		log "using $SLIPWAY as it is (BENCH_NO_CARGO=1)"
		return
	fi
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

# read_results FILE: key=value lines into R
read_results() {
	local k v
	while IFS='=' read -r k v; do
		if [[ $k =~ ^[a-z0-9_]+$ ]]; then R[$k]=$v; fi
	done <"$1"
}

# browse NAME ARGS...: bench/ui/measure.py in the background (a signal to this script
# is acted on at once), its results into R
browse() {
	local name=$1
	shift
	"$UI_VENV/bin/python" "$MEASURE" --runs "$RUNS" --first "$FIRST_LINE" --scroll "$SCROLL" \
		--timeout "$TIMEOUT" --poll-ms "$POLL_MS" --window "$WINDOW" --profile "$WORK/chromium-$name" \
		--driver-log "$WORK/logs/chromedriver-$name.log" --shots "$WORK/shots" "$@" \
		>"$WORK/$name.out" 2> >(tee "$WORK/logs/measure-$name.log" | sed 's/^/  /' >&3) &
	MEASURE_PID=$!
	if ! wait "$MEASURE_PID"; then
		MEASURE_PID=''
		die "bench/ui/measure.py failed ($name)"
	fi
	MEASURE_PID=''
	rm -rf "$WORK/chromium-$name"
	read_results "$WORK/$name.out"
}

# 1. Buildbot
free_ports() {
	python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

run_buildbot() {
	local bb=$BB_VENV/bin/buildbot bbw=$BB_VENV/bin/buildbot-worker vpy=$BB_VENV/bin/python i www pb
	R[bb_version]=$("$vpy" -c 'import importlib.metadata as m; print(m.version("buildbot"))')
	R[bb_www_version]=$("$vpy" -c 'import importlib.metadata as m; print(m.version("buildbot-www"))')
	R[bb_python]=$("$vpy" -c 'import platform; print(platform.python_version())')
	log "Buildbot half: Buildbot ${R[bb_version]}, a master and one worker, one build printing $BB_LINES lines..."
	read -r www pb < <(free_ports)
	BB_URL=http://127.0.0.1:$www
	mkdir -p "$WORK/bb"
	"$bb" create-master -q "$WORK/bb/master" >>"$WORK/logs/buildbot-create.log" 2>&1 || die "buildbot create-master failed"
	cp "$ROOT/bench/ui/master.cfg" "$WORK/bb/master/master.cfg"
	BB_WORKER_PASS=bench-$RANDOM$RANDOM
	"$bbw" create-worker -q "$WORK/bb/worker" "127.0.0.1:$pb" ui-w1 "$BB_WORKER_PASS" >>"$WORK/logs/buildbot-create.log" 2>&1 ||
		die "buildbot-worker create-worker failed"
	# --nodaemon: twistd runs in this very process, so $! is the master's pid
	BB_WWW_PORT=$www BB_PB_PORT=$pb BB_WORKER_PASS=$BB_WORKER_PASS BB_AWK_PROGRAM=$(awk_program "$BB_LINES") \
		"$bb" start --nodaemon "$WORK/bb/master" >"$WORK/logs/buildbot-master.log" 2>&1 &
	MASTER_PID=$!
	for ((i = 0; ; i++)); do
		alive "$MASTER_PID" || die "the Buildbot master exited during start-up"
		((i < 1200)) || die "the Buildbot master's REST API did not answer within 120 s"
		curl -fsS -o /dev/null "$BB_URL/api/v2/builders" 2>/dev/null && break
		sleep 0.1
	done
	"$bbw" start --nodaemon "$WORK/bb/worker" >"$WORK/logs/buildbot-worker.log" 2>&1 &
	WORKER_PID=$!
	for ((i = 0; ; i++)); do
		alive "$WORKER_PID" || die "the Buildbot worker exited during start-up"
		((i < 1200)) || die "the Buildbot worker did not connect within 120 s"
		python3 "$ROOT/bench/ui/buildbot.py" ready --url "$BB_URL" && break
		sleep 0.1
	done
	python3 "$ROOT/bench/ui/buildbot.py" build --url "$BB_URL" --timeout "$TIMEOUT" >"$WORK/bb.out" 2>>"$WORK/logs/buildbot-rest.log" ||
		die "forcing the Buildbot build failed"
	read_results "$WORK/bb.out"
	[[ ${R[bb_results]} == 0 ]] || die "the Buildbot build did not succeed (results ${R[bb_results]})"
	log "  build ran in ${R[bb_build_seconds]} s; its stdio log has ${R[bb_log_lines]} lines (header and footer lines included)"
	[[ ${R[bb_marker_lines]} == 1 ]] || die "the Buildbot log does not hold the line LAST-LINE-MARKER once (${R[bb_marker_lines]})"
	log "  measuring $BB_URL${R[bb_log_path]} ($RUNS loads after a warm-up)..."
	BUSY_BB=$(cpu_busy)
	browse buildbot --base "$BB_URL" --page "bb=${R[bb_log_path]}"
	stop "$WORKER_PID" && WORKER_PID=''
	stop "$MASTER_PID" && MASTER_PID=''
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
	log "  slipway server at $URL (pid $SERVER_PID)"
}

make_repo() {
	local r=$WORK/repo n
	mkdir -p "$r"
	git -C "$r" init -q -b main
	{
		echo "jobs:"
		for n in "${SIZES[@]}"; do
			cat <<-EOF
				  lines-$n:
				    steps:
				      - name: lines
				        image: busybox
				        commands:
				          - |
				            awk '$(awk_program "$n")'
			EOF
		done
	} >"$r/.slipway.yml"
	"$SLIPWAY" lint "$r/.slipway.yml" >"$WORK/logs/lint.log" 2>&1 || die "slipway lint of the generated .slipway.yml failed"
	git -C "$r" add .slipway.yml
	git -C "$r" -c user.name=bench -c user.email=bench@localhost commit -q -m 'bench: one job per log size'
	"$SLIPWAY" repo add bench --url "$r" >"$WORK/logs/repo-add.log" 2>&1 || die "slipway repo add bench failed"
}

start_runner() {
	local token d=$WORK/runner
	token=$("$SLIPWAY" runner-token create 2>>"$WORK/logs/runner-token.log") || die "slipway runner-token create failed"
	mkdir -p "$d"
	chmod 711 "$d"
	SLIPWAY_LOG=$LOGLEVEL "$SLIPWAY" runner --server "$URL" --token "$token" --name bench-ui \
		--work-dir "$d" >"$WORK/logs/runner.log" 2>&1 &
	RUNNER_PID=$!
}

# the pipeline's jobs: "NAME JOB_ID POSITION STATUS" lines
pipeline_steps() {
	curl -fsS -u "admin:$ADMIN_PW" "$URL/api/v1/pipelines/1" | python3 -c '
import json, sys
p = json.load(sys.stdin)
for j in p["jobs"]:
    for s in j["steps"]:
        print(j["name"], j["id"], s["position"], s["status"])'
}

run_slipway() {
	local name job pos status n t lines last
	log "Slipway half: server, busybox image, a repository with one job per size, a runner..."
	start_server
	"$SLIPWAY" image bootstrap busybox >"$WORK/logs/bootstrap.log" 2>&1 || die "slipway image bootstrap busybox failed"
	make_repo
	start_runner
	log "  slipway run bench --wait (prints ${SIZES[*]} lines)..."
	t=$EPOCHREALTIME
	# it follows the logs (~100 bytes per line): keep only their end
	"$SLIPWAY" run bench --wait 2>&1 | tail -n 40 >"$WORK/logs/run.log" || die "slipway run bench --wait failed"
	log "  pipeline finished in $(calc "$EPOCHREALTIME - $t" 1) s"
	stop "$RUNNER_PID" 30 && RUNNER_PID=''
	local pages=()
	while read -r name job pos status; do
		n=${name#lines-}
		[[ $status == success ]] || die "step $name/$pos: $status"
		# the log as the API serves it: its line count, and the marker as its last line
		lines=$(curl -fsS -o /dev/null -D - -u "admin:$ADMIN_PW" "$URL/api/v1/jobs/$job/steps/$pos/log?from_line=0&to_line=1" |
			tr -d '\r' | awk -F': ' 'tolower($1) == "x-log-lines" { print $2 }')
		[[ $lines =~ ^[0-9]+$ ]] || die "GET /api/v1/jobs/$job/steps/$pos/log?from_line=0 gave no X-Log-Lines header"
		last=$(curl -fsS -u "admin:$ADMIN_PW" "$URL/api/v1/jobs/$job/steps/$pos/log?from_line=$((lines - 1))&to_line=$lines")
		[[ $last == LAST-LINE-MARKER ]] || die "the log of job $job step $pos ($lines lines) does not end with LAST-LINE-MARKER (${last:0:80})"
		log "  $name: job $job, step $pos: $lines log lines, page /jobs/$job/steps/$pos"
		R[slipway_${n}_path]=/jobs/$job/steps/$pos
		pages+=(--page "s$n=/jobs/$job/steps/$pos")
	done < <(pipeline_steps)
	((${#pages[@]} == 2 * ${#SIZES[@]})) || die "expected ${#SIZES[@]} steps in pipeline 1, found $((${#pages[@]} / 2))"
	log "  measuring Slipway's log pages ($RUNS loads each after a warm-up)..."
	BUSY_SW=$(cpu_busy)
	browse slipway --base "$URL" --signin-user admin --signin-password-env SLIPWAY_PASSWORD --check-status "${pages[@]}"
	SLIPWAY_PAGE=ok
	for n in "${SIZES[@]}"; do
		case ${R[s${n}_status]:-} in
			missing) SLIPWAY_PAGE=missing ;;
			http-*) [[ $SLIPWAY_PAGE == missing ]] || SLIPWAY_PAGE=${R[s${n}_status]} ;;
		esac
	done
}

# a cell: median (min-max) of KEY's samples, or what happened instead
cell() { # PREFIX KEY UNIT
	local p=$1 k=$2 u=$3 st=${R[${1}_status]:-}
	case $st in
		ok) ;;
		timeout) printf 'timeout (> %s s)' "${R[${p}_timeout_s]}"; return ;;
		missing) printf 'page missing (404)'; return ;;
		'') printf 'n/a'; return ;;
		*) printf '%s' "$st"; return ;;
	esac
	local v=${R[${p}_${k}]:-} all=${R[${p}_${k}_all]:-}
	[[ -n $v && $v != - ]] || { printf -- '-'; return; }
	printf '%s%s (%s)' "$v" "$u" "${all//,/, }"
}

value() { # PREFIX KEY: the median, or empty
	local v=${R[${1}_${2}]:-}
	[[ ${R[${1}_status]:-} == ok && -n $v && $v != - ]] && printf '%s' "$v"
	return 0
}

# targets: TARGET_100K, TARGET_10X, TARGET_1M (PASS/FAIL/n/a) and their cells
targets() {
	local s100 b s1m top end raf
	s100=$(value s100000 get_to_visible_ms)
	b=$(value bb get_to_visible_ms)
	T100=n/a T10X=n/a T1M=n/a RATIO=n/a
	[[ -n $s100 ]] && T100=$(verdict "$s100" '<' 1000)
	if [[ -n $s100 && -n $b ]]; then
		RATIO=$(calc "$b / $s100" 1)
		T10X=$(verdict "$RATIO" '>=' 10)
	elif [[ -n $s100 && ${R[bb_status]:-} == timeout ]]; then
		RATIO="> $(calc "${R[bb_timeout_s]} * 1000 / $s100" 0)"
		T10X=PASS
	fi
	s1m=$(value s1000000 get_to_visible_ms)
	top=$(value s1000000 top_ms) end=$(value s1000000 end_ms) raf=$(value s1000000 raf_max_ms)
	if [[ -n $s1m ]]; then
		T1M=FAIL
		if [[ -n $top && -n $end && -n $raf ]] &&
			[[ $(verdict "$s1m" '<=' 5000) == PASS && $(verdict "$top" '<=' 1000) == PASS &&
				$(verdict "$end" '<=' 1000) == PASS && $(verdict "$raf" '<' 200) == PASS ]]; then
			T1M=PASS
		fi
	elif [[ ${R[s1000000_status]:-} == timeout ]]; then
		T1M=FAIL
	fi
}

USABLE="last line visible ≤ 5 s after driver.get; then a scroll to the top shows line 1 within 1 s and a scroll back to the end shows the last line within 1 s; the worst of 20 requestAnimationFrame round trips (10 right after the last line showed, 10 after the scrolls) < 200 ms (medians of the runs)"

summary() {
	local commit dirty n
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	# bench/ is left out: RESULTS.md changes with every run of this script
	dirty=''
	if git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null | grep -q .; then dirty=" + uncommitted changes"; fi
	targets
	row() { # PREFIX LABEL
		if [[ ${R[${1}_status]:-} != ok ]]; then
			printf '| %s | %s | – | – | – | – | – | – | – |\n' "$2" "$(cell "$1" get_to_visible_ms ' ms')"
			return
		fi
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" \
			"$(cell "$1" get_to_visible_ms ' ms')" "$(cell "$1" heap_mb ' MiB')" "$(cell "$1" heap_gc_mb ' MiB')" \
			"$(cell "$1" nodes '')" "$(cell "$1" renderer_rss_mb ' MiB')" "$(cell "$1" raf_max_ms ' ms')" \
			"$(cell "$1" top_ms ' ms') / $(cell "$1" end_ms ' ms')" "$(cell "$1" scroll_moves '')"
	}
	# watch.js's own time until the stamp, per page: "label search/checks"
	own() {
		local p parts=()
		for p in "${PREFIXES[@]}"; do
			[[ ${R[${p}_status]:-} == ok ]] && parts+=("${LABELS[$p]} ${R[${p}_search_ms]}/${R[${p}_check_ms]} ms")
		done
		local IFS=';'
		printf '%s' "${parts[*]}"
	}
	cat <<-EOF
		### Log page benchmark: slipway vs Buildbot ($(date -u '+%Y-%m-%d %H:%M UTC'))

		- Command: \`$CMDLINE\`
		- Host: $(nproc) CPUs (nproc), $CPU_MODEL, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); temp dir on $(findmnt -no FSTYPE,SOURCE -T "$WORK" | awk '{ print $1 " on " $2 }'); CPU busy with other work (1 s samples): ${BUSY_BB:-?}% before Buildbot's loads, ${BUSY_SW:-?}% before Slipway's
		- Browser: Chromium ${R[chromium_version]:-?} (Debian chromium + chromium-driver), --headless=new, --no-sandbox, window ${WINDOW/,/x} (viewport ${R[viewport]:-?}), Selenium $("$UI_VENV/bin/python" -c 'import selenium; print(selenium.__version__)'); HTTP cache on, one uncounted warm-up load per browser, about:blank between loads
		- Slipway: commit $commit$dirty, $([[ ${BENCH_NO_CARGO:-0} == 1 ]] && echo "target/release/slipway as found (BENCH_NO_CARGO=1)" || echo "\`cargo build --release\`"), SLIPWAY_LOG=$LOGLEVEL, SQLite; page /jobs/{job}/steps/{position}, signed in
		- Peer: Buildbot ${R[bb_version]:-?} with buildbot-www ${R[bb_www_version]:-?} (Python ${R[bb_python]:-?}), SQLite, one local worker; page ${R[bb_log_path]:-?} (its log viewer)
		- Logs: N lines of 100 bytes then LAST-LINE-MARKER, printed by awk in a busybox step (Slipway) / a ShellCommand (Buildbot, ${R[bb_log_lines]:-?} lines with its header and footer)
		- Time: driver.get(URL) -> the marker is visible: its characters inside the viewport and hit-testing their middle lands on them. bench/ui/watch.js, injected before the page's scripts, checks every 10 ms (when the page's main thread is free) and stamps the start of the next frame; the driver polls that stamp every $POLL_MS ms. Interaction: $([[ $SCROLL == end ]] && echo "once the HTML is parsed and while the marker is not visible, each check also scrolls the document and any scrollable element in view to their end (a user holding End); last column: scrolls that moved something (0: the page opened at its end by itself)" || echo "none (BENCH_SCROLL=none)")
		- Memory when the marker showed: JS heap used (CDP Performance.getMetrics JSHeapUsedSize), and after a forced GC (HeapProfiler.collectGarbage); DOM nodes after the GC; VmRSS of the biggest renderer process
		- Medians of $RUNS loads (all samples in brackets); Buildbot / slipway ratio of the 100k times (higher is better)

		| Log | Last line visible | JS heap | JS heap after GC | DOM nodes | Renderer RSS | Worst rAF round trip | Scroll to top / back to end | Scroll moves |
		|---|---:|---:|---:|---:|---:|---:|---:|---:|
	EOF
	local PREFIXES=() p
	local -A LABELS=()
	for n in "${SIZES[@]}"; do PREFIXES+=("s$n") LABELS[s$n]="slipway, $(human "$n") lines"; done
	PREFIXES+=(bb) LABELS[bb]="Buildbot, $(human "$BB_LINES") lines"
	for p in "${PREFIXES[@]}"; do row "$p" "${LABELS[$p]}"; done
	echo
	echo "The measuring script's own time in the page until the stamp (medians; searching the text / all its checks and scrolls, which includes layout the browser did earlier than it would have): $(own | sed 's/;/; /g')."
	cat <<-EOF

		| Target | Measured | Result |
		|---|---|---|
		| Slipway shows the last of 100k lines in < 1 s | $(cell s100000 get_to_visible_ms ' ms') | $T100 |
		| ... ≥ 10x faster than Buildbot's log view ($(human "$BB_LINES") lines) | Buildbot $(cell bb get_to_visible_ms ' ms'): Buildbot / slipway $RATIO$([[ $RATIO == n/a ]] || echo x) | $T10X |
		| 1M lines usable: $USABLE | $(cell s1000000 get_to_visible_ms ' ms'), top $(cell s1000000 top_ms ' ms'), end $(cell s1000000 end_ms ' ms'), worst rAF $(cell s1000000 raf_max_ms ' ms') | $T1M |
	EOF
}

append_results() { # SUMMARY
	local f=$ROOT/bench/RESULTS.md heading='## bench/ui.sh — log page vs Buildbot'
	grep -qxF "$heading" "$f" 2>/dev/null || printf '\n%s\n' "$heading" >>"$f"
	{
		printf '\n%s\n' "$1"
		[[ -n ${BENCH_NOTE:-} ]] && printf '\nNote: %s\n' "$BENCH_NOTE"
		true
	} >>"$f"
	log "appended the summary to bench/RESULTS.md"
}

main() {
	((EUID == 0)) || die "run as root (runc; the runner runs steps in containers)"
	[[ $SCROLL == end || $SCROLL == none ]] || die "BENCH_SCROLL must be end or none"
	local parent=${BENCH_DIR:-/var/tmp}
	exec 3>&1 # measure.py's progress goes here, its results to a file
	WORK=$(mktemp -d "$parent/sub.XXXXXX")
	# Container root in the runner's user namespace (uid 100000) is "others" on the
	# host: every directory down to the runner's work dir must be searchable.
	chmod 711 "$WORK"
	mkdir -p "$WORK/logs" "$WORK/shots" # shots: each page at the end of its first run
	log "temporary directory: $WORK"
	install_packages
	make_venv "$UI_VENV" selenium selenium
	make_venv "$BB_VENV" 'buildbot, buildbot_worker, buildbot_www' "buildbot$BB_PIN" "buildbot-worker$BB_PIN" "buildbot-www$BB_PIN"
	build_slipway
	CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	run_buildbot
	run_slipway
	local s
	s=$(summary)
	printf '\n%s\n' "$s"
	targets
	printf '\nPASS/FAIL: 100k < 1 s %s, 10x Buildbot %s, 1M usable %s\n' "$T100" "$T10X" "$T1M"
	log "1M usable means: $USABLE"
	if [[ $SLIPWAY_PAGE == missing ]]; then
		log ""
		log "NOTE: Slipway's log page (/jobs/{job}/steps/{position}) answered 404: it does not exist in"
		log "      this build yet. Buildbot was measured alone; nothing appended to bench/RESULTS.md."
	elif [[ $SLIPWAY_PAGE != ok ]]; then
		log ""
		log "NOTE: Slipway's log page answered $SLIPWAY_PAGE; nothing appended to bench/RESULTS.md."
	elif [[ ${BENCH_NO_RESULTS:-0} != 1 ]]; then
		append_results "$s"
	fi
	log "wall time: $(calc "$EPOCHREALTIME - $START" 1) s"
}

main "$@"
