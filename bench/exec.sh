#!/usr/bin/env bash
# Execution-engine benchmark: `slipway exec` vs podman (runc) vs raw runc on an overlay,
# measured in one run, on one machine, with both tools' storage on the same filesystem.
#
#   1. start-to-exit of `true` from a cached busybox image, `slipway exec` (default:
#      in a user namespace; also measured with --userns host)
#   2. the same with `podman run --rm` (runc, overlay driver, image already in its store)
#   3. the floor: mkdir + mount overlay + `runc run` + umount on a prepared bundle
#      (and `runc run` alone on an already mounted rootfs)
#   4. cold pull + unpack of an image with three 64 MiB random layers:
#      `slipway exec` into an empty work dir (the command does not exist in that image,
#      so this is "pull + unpack + failed start") vs `podman pull` into an empty store
#
# Usage: bench/exec.sh        (as root; installs missing Debian packages)
#
# Environment:
#   BENCH_RUNS=20         runs per start-to-exit measurement (medians are reported)
#   BENCH_PULL_RUNS=$BENCH_RUNS  runs per cold-pull measurement (each moves ~200 MB)
#   BENCH_DIR=/var/tmp    parent of the temporary directory (server data, both tools' storage)
#   BENCH_TMPFS=1         mount a tmpfs inside it for both tools' storage (the slipway work
#                         dirs, podman's root/runroot and the runc bundles); the server's
#                         data (the registry both pull from) stays on BENCH_DIR's filesystem
#   BENCH_KEEP=1          keep the temporary directory (logs, data) afterwards
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
#   BENCH_NOTE="..."      one-line note put under the summary in bench/RESULTS.md
#
# Exits 0 when every measurement ran, whether or not the targets were met; non-zero if
# anything failed to run (logs are printed then).
set -Eeuo pipefail
export LC_ALL=C         # EPOCHREALTIME and awk must use '.' as decimal separator
export RUST_BACKTRACE=0 # keep slipway's error output short in the logs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-20}
PULL_RUNS=${BENCH_PULL_RUNS:-$RUNS}
TMPFS=${BENCH_TMPFS:-0}
CMDLINE="$(printf '%s ' "BENCH_RUNS=$RUNS" "BENCH_PULL_RUNS=$PULL_RUNS" "BENCH_TMPFS=$TMPFS" "BENCH_DIR=${BENCH_DIR:-/var/tmp}" bash bench/exec.sh "$@")"
CMDLINE=${CMDLINE% }
ADMIN_PW=bench-$RANDOM$RANDOM$RANDOM
SLIPWAY=$ROOT/target/release/slipway
BIG_LAYERS=3
BIG_SIZE=67108864
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

WORK= STORE= SERVER_PID= URL= HOSTPORT= BUSYBOX_LAYER=
declare -A MED MIN MAX # per measurement, milliseconds

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# verdict VALUE OP THRESHOLD -> PASS/FAIL
verdict() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo PASS; else echo FAIL; fi; }
now() { echo "$EPOCHREALTIME"; }
ms_since() { calc "($EPOCHREALTIME - $1) * 1000" 2; }

# record NAME SAMPLE... : median/min/max in ms
record() {
	local name=$1
	shift
	read -r MED[$name] MIN[$name] MAX[$name] < <(printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }')
	log "  $name: median ${MED[$name]} ms (min ${MIN[$name]}, max ${MAX[$name]}, n=$#)"
}

trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" exited with status $?" >&2' ERR
trap 'exit 130' INT TERM
trap cleanup EXIT

cleanup() {
	local rc=$? f id i m
	set +e
	trap - ERR
	if [[ -n $SERVER_PID ]]; then
		((rc != 0)) && ! kill -0 "$SERVER_PID" 2>/dev/null && echo "slipway server (pid $SERVER_PID) had already exited" >&2
		kill -TERM "$SERVER_PID" 2>/dev/null
		for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
	fi
	if [[ -n $WORK ]]; then
		# runc containers left by an interrupted iteration (ours use --root under $WORK)
		if [[ -d $WORK/runc-root ]]; then
			for id in $(runc --root "$WORK/runc-root" list -q 2>/dev/null); do
				runc --root "$WORK/runc-root" delete -f "$id" >/dev/null 2>&1
			done
		fi
		# podman's own state (its overlay mounts, any leftover container)
		[[ -d $STORE/p ]] && podman_cmd system reset -f >/dev/null 2>&1 </dev/null
		# every mount still under $WORK, deepest first
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done < <(findmnt -rno TARGET | grep -F "$WORK" | sort -r)
		if ((rc != 0)); then
			for f in "$WORK"/logs/*.log; do
				[[ -s $f ]] || continue
				echo "---- last lines of $(basename "$f") ----" >&2
				tail -n 20 "$f" | cut -c1-400 >&2
			done
		fi
		if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
	fi
	exit "$rc"
}

podman_cmd() {
	podman --root "$STORE/p/root" --runroot "$STORE/p/rr" --tmpdir "$STORE/p/tmp" \
		--storage-driver overlay --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

install_packages() {
	local missing=() pkg cmd
	for pair in runc:runc podman:podman skopeo:skopeo python3:python3 curl:curl findmnt:util-linux; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || missing+=("$pkg")
	done
	dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
	((${#missing[@]} == 0)) && return
	((EUID == 0)) || die "missing packages (${missing[*]}) and not root"
	log "installing missing packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$WORK/logs/apt.log" 2>&1 ||
		{ apt-get update >>"$WORK/logs/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$WORK/logs/apt.log" 2>&1; } ||
		die "apt-get install ${missing[*]} failed (see above)"
}

build_slipway() {
	log "building slipway (cargo build --release -p slipway-server)..."
	(cd "$ROOT" && cargo build --release -p slipway-server) >"$WORK/logs/cargo-build.log" 2>&1 ||
		die "cargo build --release -p slipway-server failed"
}

start_server() {
	mkdir -p "$WORK/server"
	SLIPWAY_ADMIN_PASSWORD=$ADMIN_PW SLIPWAY_LOG=${SLIPWAY_LOG:-warn} \
		"$SLIPWAY" server --listen 127.0.0.1:0 --data-dir "$WORK/server/data" \
		>"$WORK/logs/server-stdout.log" 2>"$WORK/logs/server.log" &
	SERVER_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/logs/server-stdout.log" | head -n1) || true
		[[ -n $URL ]] && curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null && break
		kill -0 "$SERVER_PID" 2>/dev/null || die "slipway server exited during startup"
		sleep 0.1
	done
	curl -fsS -o /dev/null "$URL/readyz" || die "slipway server not ready after 30 s"
	HOSTPORT=${URL#http://}
	export SLIPWAY_USER=admin SLIPWAY_PASSWORD=$ADMIN_PW
	log "slipway server at $URL (data on $(fs_of "$WORK/server"))"
}

fs_of() { findmnt -no FSTYPE,SOURCE -T "$1" | awk '{ print $1 " on " $2 }'; }

prepare_busybox() {
	log "pushing library/busybox:latest (slipway image bootstrap busybox)..."
	"$SLIPWAY" image bootstrap busybox --server "$URL" >"$WORK/logs/bootstrap.log" 2>&1 ||
		die "slipway image bootstrap busybox failed"
	log "importing it into podman's store (podman pull from Slipway's registry)..."
	podman_cmd pull --tls-verify=false --creds "admin:$ADMIN_PW" "$HOSTPORT/library/busybox:latest" \
		>"$WORK/logs/podman-pull-busybox.log" 2>&1 </dev/null || die "podman pull of busybox failed"
}

# 1. slipway exec, warm layer cache
bench_slipway_exec() {
	local w=$STORE/slipway-warm t i samples=()
	log "1. slipway exec -- true, cached image ($RUNS runs after one warm-up)..."
	"$SLIPWAY" exec --server "$URL" --image busybox --work-dir "$w" -- true >"$WORK/logs/slipway-exec.log" 2>&1 ||
		die "warm-up: slipway exec --image busybox -- true failed"
	for ((i = 0; i < RUNS; i++)); do
		t=$(now)
		"$SLIPWAY" exec --server "$URL" --image busybox --work-dir "$w" -- true >>"$WORK/logs/slipway-exec.log" 2>&1 ||
			die "slipway exec --image busybox -- true failed (run $i)"
		samples+=("$(ms_since "$t")")
	done
	record slipway_exec "${samples[@]}"
	log "   the same with --userns host (no user namespace, as podman's default)..."
	samples=()
	for ((i = 0; i < RUNS; i++)); do
		t=$(now)
		"$SLIPWAY" exec --server "$URL" --image busybox --userns host --work-dir "$w" -- true >>"$WORK/logs/slipway-exec.log" 2>&1 ||
			die "slipway exec --userns host --image busybox -- true failed (run $i)"
		samples+=("$(ms_since "$t")")
	done
	record slipway_exec_host "${samples[@]}"
	BUSYBOX_LAYER=$(find "$w/layers/layers" -mindepth 1 -maxdepth 1 -type d | head -n1)
	[[ -n $BUSYBOX_LAYER && -e $BUSYBOX_LAYER/bin/busybox ]] || die "no unpacked busybox layer under $w/layers/layers"
	local n
	n=$(find "$w/layers/layers" -mindepth 1 -maxdepth 1 -type d | wc -l)
	((n == 1)) || die "expected one busybox layer in slipway's cache, found $n"
}

# 2. podman run --rm, image in the store
bench_podman_run() {
	local t i samples=()
	log "2. podman run --rm ... true, image in the store ($RUNS runs after one warm-up)..."
	podman_cmd run --rm --network none "${ULIMITS[@]}" "$HOSTPORT/library/busybox:latest" true \
		>"$WORK/logs/podman-run.log" 2>&1 </dev/null || die "warm-up: podman run failed"
	for ((i = 0; i < RUNS; i++)); do
		t=$(now)
		podman_cmd run --rm --network none "${ULIMITS[@]}" "$HOSTPORT/library/busybox:latest" true \
			>>"$WORK/logs/podman-run.log" 2>&1 </dev/null || die "podman run failed (run $i)"
		samples+=("$(ms_since "$t")")
	done
	record podman_run "${samples[@]}"
}

# 3. raw runc on a bundle whose rootfs is an overlay of slipway's unpacked busybox layer
make_runc_config() { # BUNDLE
	runc spec --bundle "$1"
	python3 - "$1/config.json" <<-'EOF'
		import json, sys
		p = sys.argv[1]
		c = json.load(open(p))
		c["process"]["terminal"] = False
		c["process"]["args"] = ["true"]
		c["root"] = {"path": "rootfs", "readonly": False}
		json.dump(c, open(p, "w"), indent=1)
	EOF
}

bench_runc_floor() {
	local b=$STORE/runc r=$WORK/runc-root t i samples=() samples2=()
	log "3. runc floor on an overlay of the busybox layer ($RUNS runs each, after one warm-up)..."
	mkdir -p "$b/bundle" "$r"
	make_runc_config "$b/bundle"
	# mkdir + mount + runc run + umount, fresh upper/work dirs each time
	for ((i = -1; i < RUNS; i++)); do
		local d=$b/it$i
		t=$(now)
		mkdir -p "$d/upper" "$d/work" "$b/bundle/rootfs"
		mount -t overlay overlay -o "lowerdir=$BUSYBOX_LAYER,upperdir=$d/upper,workdir=$d/work" "$b/bundle/rootfs"
		runc --root "$r" run --bundle "$b/bundle" "bench-floor-$i" >>"$WORK/logs/runc.log" 2>&1 </dev/null ||
			die "runc run failed (mount+run iteration $i)"
		umount "$b/bundle/rootfs"
		((i >= 0)) && samples+=("$(ms_since "$t")")
		rm -rf "$d"
	done
	record runc_overlay "${samples[@]}"
	# runc run alone, rootfs mounted once
	mkdir -p "$b/once/upper" "$b/once/work"
	mount -t overlay overlay -o "lowerdir=$BUSYBOX_LAYER,upperdir=$b/once/upper,workdir=$b/once/work" "$b/bundle/rootfs"
	for ((i = -1; i < RUNS; i++)); do
		t=$(now)
		runc --root "$r" run --bundle "$b/bundle" "bench-run-$i" >>"$WORK/logs/runc.log" 2>&1 </dev/null ||
			die "runc run failed (run-only iteration $i)"
		((i >= 0)) && samples2+=("$(ms_since "$t")")
	done
	umount "$b/bundle/rootfs"
	record runc_only "${samples2[@]}"
}

# 4. cold pull + unpack of three 64 MiB layers
prepare_big_image() {
	log "4. making and pushing bench/big:latest ($BIG_LAYERS random layers of $BIG_SIZE bytes)..."
	python3 "$ROOT/scripts/oci-layout.py" "$WORK/big-oci" --layers "$BIG_LAYERS" --size "$BIG_SIZE" \
		>"$WORK/logs/oci-layout.log" 2>&1 || die "scripts/oci-layout.py failed"
	skopeo copy --dest-tls-verify=false --dest-creds "admin:$ADMIN_PW" --preserve-digests \
		"oci:$WORK/big-oci:latest" "docker://$HOSTPORT/bench/big:latest" >"$WORK/logs/skopeo-push.log" 2>&1 ||
		die "skopeo copy of bench/big to Slipway failed"
	rm -rf "$WORK/big-oci"
}

bench_cold_pull() {
	local t i w n rc samples=() samples2=()
	log "   slipway exec --image bench/big:latest into an empty work dir ($PULL_RUNS runs; the command fails by design)..."
	for ((i = 0; i < PULL_RUNS; i++)); do
		w=$STORE/slipway-cold-$i
		sync
		t=$(now)
		rc=0
		"$SLIPWAY" exec --server "$URL" --image bench/big:latest --work-dir "$w" -- /bench-no-such-command \
			>>"$WORK/logs/slipway-cold.log" 2>&1 || rc=$?
		samples+=("$(ms_since "$t")")
		((rc != 0)) || die "slipway exec of a missing command in bench/big exited 0"
		n=$(find "$w/layers/layers" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
		((n == BIG_LAYERS)) || die "after slipway exec, $n of $BIG_LAYERS layers are unpacked in $w (see slipway-cold.log)"
		[[ $i == 0 ]] && du -sb "$w/layers" >>"$WORK/logs/slipway-cold.log"
		rm -rf "$w"
	done
	record slipway_cold "${samples[@]}"
	log "   podman pull bench/big:latest into an empty store ($PULL_RUNS runs)..."
	local p=$STORE/pc
	for ((i = 0; i < PULL_RUNS; i++)); do
		sync
		t=$(now)
		podman --root "$p/root" --runroot "$p/rr" --tmpdir "$p/tmp" --storage-driver overlay --runtime runc \
			--cgroup-manager cgroupfs --events-backend file \
			pull --tls-verify=false --creds "admin:$ADMIN_PW" "$HOSTPORT/bench/big:latest" \
			>>"$WORK/logs/podman-cold.log" 2>&1 </dev/null || die "podman pull of bench/big failed (run $i)"
		samples2+=("$(ms_since "$t")")
		podman --root "$p/root" --runroot "$p/rr" --tmpdir "$p/tmp" --storage-driver overlay \
			system reset -f >>"$WORK/logs/podman-cold.log" 2>&1 </dev/null
		rm -rf "$p"
	done
	record podman_cold "${samples2[@]}"
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

summary() {
	local r_pod r_floor r_runc r_cold v_pod v_floor v_cold commit dirty cpu
	r_pod=$(calc "${MED[slipway_exec]} / ${MED[podman_run]}")
	r_floor=$(calc "${MED[slipway_exec]} / ${MED[runc_overlay]}")
	r_runc=$(calc "${MED[slipway_exec]} / ${MED[runc_only]}")
	r_cold=$(calc "${MED[slipway_cold]} / ${MED[podman_cold]}")
	v_pod=$(verdict "$r_pod" '<=' 0.4)
	v_floor=$(verdict "$r_floor" '<=' 1.5)
	v_cold=$(verdict "$r_cold" '<=' 1.0)
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	# bench/ is left out: RESULTS.md changes with every run of this script
	dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null | grep -q . && echo " + uncommitted changes" || true)
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	cell() { printf '%s ms (min %s, max %s)' "${MED[$1]}" "${MIN[$1]}" "${MAX[$1]}"; }
	cat <<-EOF
		### Execution benchmark: slipway exec vs podman vs raw runc ($(date -u '+%Y-%m-%d %H:%M UTC'))

		- Command: \`$CMDLINE\`
		- Host: $(nproc) CPUs (nproc), $CPU_MODEL, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); cgroup $( [[ -e /sys/fs/cgroup/cgroup.controllers ]] && echo v2 || echo "v1/hybrid")
		- Storage of both tools: $(fs_of "$STORE") ($([[ $TMPFS == 1 ]] && echo "BENCH_TMPFS=1" || echo "temp dir under ${BENCH_DIR:-/var/tmp}")); server data: $(fs_of "$WORK/server"); CPU busy: ${BUSY_BEFORE}% before, ${BUSY_AFTER}% after
		- Slipway: commit $commit$dirty, \`cargo build --release\`, SLIPWAY_LOG=${SLIPWAY_LOG:-warn}
		- Peers: $(runc --version | head -n1), $(podman --version) (runc, overlay driver, cgroupfs, file events), $(skopeo --version)
		- Image: library/busybox:latest from \`slipway image bootstrap busybox\` (busybox-static $(dpkg-query -W -f '${Version}' busybox-static)); podman pulled the same image from Slipway's registry
		- Medians of $RUNS runs (start-to-exit), $PULL_RUNS runs (cold pull); wall clock from the shell; ratios are slipway / peer time (lower is better)

		| Measurement | slipway | peer | Ratio | Target | Result |
		|---|---:|---:|---:|---|---|
		| \`true\` start-to-exit, cached image: slipway exec vs podman run --rm | $(cell slipway_exec) | $(cell podman_run) | ${r_pod}x | ≤ 0.4x | $v_pod |
		| same, vs floor: mkdir + mount overlay + runc run + umount | $(cell slipway_exec) | $(cell runc_overlay) | ${r_floor}x | ≤ 1.5x | $v_floor |
		| same, vs runc run alone (rootfs already mounted) | $(cell slipway_exec) | $(cell runc_only) | ${r_runc}x | – | – |
		| slipway exec --userns host (no user namespace, like podman's default) vs podman run --rm | $(cell slipway_exec_host) | $(cell podman_run) | $(calc "${MED[slipway_exec_host]} / ${MED[podman_run]}")x | – | – |
		| Cold pull + unpack, 3 × 64 MiB: slipway exec (pull + unpack + failed start) vs podman pull | $(cell slipway_cold) | $(cell podman_cold) | ${r_cold}x | ≤ 1.0x | $v_cold |
	EOF
}

append_results() { # SUMMARY
	local f=$ROOT/bench/RESULTS.md heading='## bench/exec.sh — execution engine vs podman and raw runc'
	grep -qxF "$heading" "$f" 2>/dev/null || printf '\n%s\n' "$heading" >>"$f"
	{
		printf '\n%s\n' "$1"
		[[ -n ${BENCH_NOTE:-} ]] && printf '\nNote: %s\n' "$BENCH_NOTE"
		true
	} >>"$f"
	log "appended the summary to bench/RESULTS.md"
}

main() {
	((EUID == 0)) || die "run as root (runc, overlay mounts)"
	local parent=${BENCH_DIR:-/var/tmp}
	WORK=$(mktemp -d "$parent/sxb.XXXXXX") # short: podman refuses a runroot path over 50 characters
	# Container root in slipway's user namespace is "others" on the host: the
	# directories down to its rootfs must be searchable (mktemp makes 0700).
	chmod 711 "$WORK"
	mkdir -p "$WORK/logs"
	STORE=$WORK/s
	mkdir -p "$STORE"
	if [[ $TMPFS == 1 ]]; then
		mount -t tmpfs -o size=4g,mode=0711 bench-tmpfs "$STORE"
	fi
	install_packages
	build_slipway
	CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	start_server
	prepare_busybox
	BUSY_BEFORE=$(cpu_busy)
	log "CPU busy just before measuring: ${BUSY_BEFORE}%"
	bench_slipway_exec
	bench_podman_run
	bench_runc_floor
	prepare_big_image
	bench_cold_pull
	BUSY_AFTER=$(cpu_busy)
	local s
	s=$(summary)
	printf '\n%s\n' "$s"
	[[ ${BENCH_NO_RESULTS:-0} == 1 ]] || append_results "$s"
}

main "$@"
