#!/usr/bin/env bash
# Registry benchmark: Slipway's built-in OCI registry vs CNCF distribution ("peer"),
# measured in the same run, on the same machine and the same filesystem.
#
# Usage: bench/registry.sh            (run as root, or with apt packages already installed)
#
# Environment:
#   BENCH_RUNS=3         runs per measurement (medians are reported)
#   BENCH_WRK_SECS=10    duration of the wrk manifest GET load
#   BENCH_GET_ROUNDS=4   times each of the 8 blob GET clients fetches the 64 MiB layer, per run
#   BENCH_DIR=/var/tmp   parent of the temporary directory holding both servers' data
#   BENCH_IDLE_WAIT=300  seconds to wait for other CPU load to drop below 20% before measuring
#   BENCH_KEEP=1         keep the temporary directory (logs, data) afterwards
#   BENCH_ONLY_PEER=1    stand a second distribution in for Slipway (debugs the script
#                        without a Slipway build; the numbers then compare distribution to itself)
#
# Exits 0 when every measurement ran, whether or not the targets were met; non-zero if
# anything failed to run (the server logs are printed then).
set -Eeuo pipefail
export LC_ALL=C # EPOCHREALTIME and awk must use '.' as decimal separator

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
WRK_SECS=${BENCH_WRK_SECS:-10}
GET_ROUNDS=${BENCH_GET_ROUNDS:-4}
GET_CLIENTS=8
LAYERS=3
LAYER_MIB=64
ONLY_PEER=${BENCH_ONLY_PEER:-0}
MANIFEST_MT=application/vnd.oci.image.manifest.v1+json
ADMIN_PW=bench-$RANDOM$RANDOM$RANDOM

declare -A NAME KIND URL PID LOGDIR
declare -A PUSH_S PUSH_CPU REPUSH_S PULL_S GET_MBS WRK_RPS RSS_GET RSS_WRK HWM
BG_PIDS=()
WORK=

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
median() { # PRECISION VALUE...
	local p=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v p="$p" '{ v[NR] = $1 } END { printf "%.*f", p, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# verdict VALUE OP THRESHOLD -> PASS/FAIL
verdict() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo PASS; else echo FAIL; fi; }

trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" exited with status $?" >&2' ERR
trap 'exit 130' INT TERM
trap cleanup EXIT

cleanup() {
	local rc=$? pid side i
	if ((rc != 0)); then
		for side in "${!PID[@]}"; do
			kill -0 "${PID[$side]}" 2>/dev/null || echo "${NAME[$side]} (pid ${PID[$side]}) had already exited" >&2
		done
	fi
	for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${BG_PIDS[@]}"; do
		for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0)) && [[ -n $WORK ]]; then
		for side in "${!LOGDIR[@]}"; do
			for f in "${LOGDIR[$side]}"/*.log; do
				[[ -s $f ]] || continue
				echo "---- last lines of ${NAME[$side]} $(basename "$f") ----" >&2
				tail -n 15 "$f" | cut -c1-400 >&2
			done
		done
	fi
	if [[ -n $WORK ]]; then
		if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
	fi
	exit "$rc"
}

ensure_packages() {
	local missing=() pair
	for pair in skopeo:skopeo docker-registry:docker-registry wrk:wrk curl:curl python3:python3 findmnt:util-linux; do
		command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
	done
	((${#missing[@]})) || return 0
	log "installing missing packages: ${missing[*]}"
	apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
}

build_slipway() {
	log "building slipway (cargo build --release -p slipway-server)..."
	if ! (cd "$ROOT" && cargo build --release -p slipway-server) >"$WORK/cargo-build.log" 2>&1; then
		tail -n 60 "$WORK/cargo-build.log" >&2
		die "cargo build --release -p slipway-server failed"
	fi
	SLIPWAY_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/slipway
	[[ -x $SLIPWAY_BIN ]] || die "built, but $SLIPWAY_BIN is missing"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http SIDE PATH: poll until the server answers PATH with 200 (never a fixed sleep).
wait_http() {
	local side=$1 path=$2 code i
	for ((i = 0; i < 600; i++)); do
		kill -0 "${PID[$side]}" 2>/dev/null || die "${NAME[$side]} exited during startup"
		code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[$side]}$path" || true)
		[[ $code == 200 ]] && return 0
		sleep 0.1
	done
	die "${NAME[$side]} did not answer 200 on $path within 60 s (last status: $code)"
}

start_distribution() {
	local side=$1 dir=$WORK/$1 port
	mkdir -p "$dir/data"
	port=$(free_port)
	# Access log off and in-memory blob descriptor cache (Debian's default config) so the
	# peer runs the way it would be deployed; no auth: the fair-to-the-peer choice.
	cat >"$dir/config.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		  accesslog:
		    disabled: true
		storage:
		  filesystem:
		    rootdirectory: $dir/data
		  delete:
		    enabled: true
		  cache:
		    blobdescriptor: inmemory
		http:
		  addr: 127.0.0.1:$port
	EOF
	docker-registry serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
	PID[$side]=$!
	BG_PIDS+=("$!")
	KIND[$side]=distribution
	LOGDIR[$side]=$dir
	URL[$side]=http://127.0.0.1:$port
	wait_http "$side" /v2/
}

start_slipway() {
	local side=$1 dir=$WORK/$1 i line=
	mkdir -p "$dir/data"
	SLIPWAY_ADMIN_PASSWORD=$ADMIN_PW SLIPWAY_LOG=warn SLIPWAY_REGISTRY__GC__ENABLED=false NO_COLOR=1 \
		"$SLIPWAY_BIN" server --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/stdout.log" 2>"$dir/stderr.log" &
	PID[$side]=$!
	BG_PIDS+=("$!")
	KIND[$side]=slipway
	LOGDIR[$side]=$dir
	for ((i = 0; i < 600; i++)); do
		line=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/stdout.log" | grep -oE 'listening on http://[0-9.:]+' | head -n 1 || true)
		[[ -n $line ]] && break
		kill -0 "${PID[$side]}" 2>/dev/null || die "slipway exited during startup"
		sleep 0.1
	done
	[[ -n $line ]] || die "slipway printed no 'listening on http://...' line on stdout within 60 s"
	URL[$side]=${line#listening on }
	wait_http "$side" /readyz
}

# Writes an OCI layout with LAYERS random (incompressible) uncompressed tar layers and
# prints KEY=VALUE lines describing it.
build_image() {
	python3 - "$1" "$LAYERS" "$LAYER_MIB" <<-'EOF'
		import hashlib, json, os, sys, tarfile
		out, n_layers, layer_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
		blobs = os.path.join(out, "blobs", "sha256")
		os.makedirs(blobs)

		class Random:
		    def read(self, n):
		        return os.urandom(n)

		def put_file(path):
		    h = hashlib.sha256()
		    with open(path, "rb") as f:
		        for chunk in iter(lambda: f.read(1 << 20), b""):
		            h.update(chunk)
		    size = os.path.getsize(path)
		    os.rename(path, os.path.join(blobs, h.hexdigest()))
		    return "sha256:" + h.hexdigest(), size

		def put_bytes(data):
		    digest = hashlib.sha256(data).hexdigest()
		    with open(os.path.join(blobs, digest), "wb") as f:
		        f.write(data)
		    return "sha256:" + digest, len(data)

		layers = []
		for i in range(n_layers):
		    tmp = os.path.join(out, "layer.tmp")
		    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
		        info = tarfile.TarInfo(f"bench/layer{i}.bin")
		        info.size, info.mode, info.mtime = layer_mib << 20, 0o644, 0
		        tf.addfile(info, Random())
		    digest, size = put_file(tmp)
		    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size})

		config = json.dumps({
		    "architecture": "amd64", "os": "linux", "config": {},
		    "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
		}).encode()
		cfg_digest, cfg_size = put_bytes(config)
		manifest = json.dumps({
		    "schemaVersion": 2,
		    "mediaType": "application/vnd.oci.image.manifest.v1+json",
		    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
		    "layers": layers,
		}).encode()
		man_digest, man_size = put_bytes(manifest)
		with open(os.path.join(out, "index.json"), "w") as f:
		    json.dump({"schemaVersion": 2, "manifests": [{
		        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_digest, "size": man_size,
		        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
		with open(os.path.join(out, "oci-layout"), "w") as f:
		    json.dump({"imageLayoutVersion": "1.0.0"}, f)
		print(f"LAYER_DIGEST={layers[0]['digest']}")
		print(f"LAYER_SIZE={layers[0]['size']}")
		print(f"MANIFEST_DIGEST={man_digest}")
		print(f"IMAGE_BYTES={sum(l['size'] for l in layers) + cfg_size + man_size}")
	EOF
}

# Bearer token with pull scope on REPO (Slipway only; distribution runs without auth).
token() {
	local side=$1 repo=$2
	[[ ${KIND[$side]} == slipway ]] || return 0
	curl -sS --fail-with-body -u "admin:$ADMIN_PW" \
		"${URL[$side]}/auth/token?service=slipway&scope=repository:$repo:pull" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

set_auth() { # SIDE REPO -> AUTH: curl/wrk arguments carrying the token, if any
	local tok
	tok=$(token "$1" "$2")
	AUTH=()
	[[ -z $tok ]] || AUTH=(-H "Authorization: Bearer $tok")
}

# skopeo's blob-info cache would let it mount blobs from an earlier repository instead of
# uploading them, so it is emptied before every copy.
clear_blob_cache() {
	rm -f /var/lib/containers/cache/blob-info-cache-v1.* \
		"${XDG_DATA_HOME:-$HOME/.local/share}"/containers/cache/blob-info-cache-v1.*
}

# skopeo_copy SIDE push|pull SRC DST
skopeo_copy() {
	local side=$1 dir=$2 src=$3 dst=$4 opts=()
	if [[ $dir == push ]]; then
		opts+=(--dest-tls-verify=false)
		[[ ${KIND[$side]} != slipway ]] || opts+=(--dest-creds "admin:$ADMIN_PW")
	else
		opts+=(--src-tls-verify=false)
		[[ ${KIND[$side]} != slipway ]] || opts+=(--src-creds "admin:$ADMIN_PW")
	fi
	clear_blob_cache
	# --preserve-digests: skopeo otherwise gzips uncompressed layers on the way to a registry,
	# and on 2 cores that compression, not the server, would set the pace.
	skopeo --insecure-policy copy -q --preserve-digests "${opts[@]}" "$src" "$dst"
}

host() { echo "${URL[$1]#http://}"; }

cpu_ticks() { # utime + stime (fields 14, 15) of PID; comm may contain spaces, so cut after ')'
	local stat
	stat=$(<"/proc/$1/stat")
	awk '{ print $12 + $13 }' <<<"${stat##*) }"
}

vm_kib() { # PID FIELD -> value in KiB from /proc/PID/status
	local k v _
	while read -r k v _; do [[ $k == "$2:" ]] && { echo "$v"; return 0; }; done <"/proc/$1/status"
	die "no $2 in /proc/$1/status"
}

start_rss_sampler() { # SIDE FILE
	local pid=${PID[$1]} file=$2
	(while kill -0 "$pid" 2>/dev/null; do vm_kib "$pid" VmRSS || true; sleep 0.2; done) >"$file" 2>/dev/null &
	SAMPLER=$!
	BG_PIDS+=("$SAMPLER")
}
stop_rss_sampler() { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }
max_mib() { sort -n "$1" | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }'; }

# The server must not report a blob inside a repository nobody pushed to: if it did, skopeo
# would skip the upload and the "push" would measure nothing.
check_blob_absent() {
	local side=$1 repo=$2 code
	set_auth "$side" "$repo"
	code=$(curl -s -o /dev/null -w '%{http_code}' -I "${AUTH[@]}" "${URL[$side]}/v2/$repo/blobs/$LAYER_DIGEST")
	[[ $code == 404 ]] || log "  WARNING: ${NAME[$side]}: HEAD blob in never-pushed $repo returned $code (expected 404)"
}

# Runs are interleaved between the two servers so drift (page cache, writeback, other load)
# hits both alike; `sync` keeps one server's dirty pages from being flushed on the other's time.
measure_push() {
	local side i t0 c0 secs ticks
	declare -A times=() cpu=()
	for ((i = 1; i <= RUNS; i++)); do
		for side in "${SIDES[@]}"; do
			check_blob_absent "$side" "bench/push-$i"
			sync
			c0=$(cpu_ticks "${PID[$side]}")
			t0=$EPOCHREALTIME
			skopeo_copy "$side" push "oci:$IMAGE:latest" "docker://$(host "$side")/bench/push-$i:latest"
			secs=$(calc "$EPOCHREALTIME - $t0" 3)
			ticks=$(($(cpu_ticks "${PID[$side]}") - c0))
			times[$side]+="$secs "
			cpu[$side]=$((${cpu[$side]:-0} + ticks))
			log "  push     ${NAME[$side]} run $i/$RUNS: $secs s ($(calc "$IMAGE_BYTES / 1e6 / $secs" 1) MB/s), server CPU $(calc "$ticks / $CLK_TCK" 2) s"
		done
	done
	for side in "${SIDES[@]}"; do
		# shellcheck disable=SC2086
		PUSH_S[$side]=$(median 3 ${times[$side]})
		PUSH_CPU[$side]=$(calc "${cpu[$side]} / $CLK_TCK / ($RUNS * $IMAGE_BYTES / 1e9)" 2)
	done
}

measure_repush() {
	local side i t0 secs
	declare -A times=()
	for ((i = 1; i <= RUNS; i++)); do
		for side in "${SIDES[@]}"; do
			t0=$EPOCHREALTIME
			skopeo_copy "$side" push "oci:$IMAGE:latest" "docker://$(host "$side")/bench/push-1:latest"
			secs=$(calc "$EPOCHREALTIME - $t0" 3)
			times[$side]+="$secs "
			log "  re-push  ${NAME[$side]} run $i/$RUNS: $secs s"
		done
	done
	# shellcheck disable=SC2086
	for side in "${SIDES[@]}"; do REPUSH_S[$side]=$(median 3 ${times[$side]}); done
}

measure_pull() {
	local side i t0 secs dest=$WORK/pull
	declare -A times=()
	for ((i = 1; i <= RUNS; i++)); do
		for side in "${SIDES[@]}"; do
			rm -rf "$dest"
			sync
			t0=$EPOCHREALTIME
			skopeo_copy "$side" pull "docker://$(host "$side")/bench/push-1:latest" "dir:$dest"
			secs=$(calc "$EPOCHREALTIME - $t0" 3)
			times[$side]+="$secs "
			log "  pull     ${NAME[$side]} run $i/$RUNS: $secs s ($(calc "$IMAGE_BYTES / 1e6 / $secs" 1) MB/s)"
		done
	done
	rm -rf "$dest"
	# shellcheck disable=SC2086
	for side in "${SIDES[@]}"; do PULL_S[$side]=$(median 3 ${times[$side]}); done
}

# GET_CLIENTS curl processes, each fetching the layer GET_ROUNDS times over one kept-alive connection.
blob_get_run() {
	local side=$1 out=$WORK/get-$1 url c r pids=() args=() t0 secs bytes expected
	url=${URL[$side]}/v2/bench/push-1/blobs/$LAYER_DIGEST
	set_auth "$side" bench/push-1
	for ((r = 0; r < GET_ROUNDS; r++)); do args+=(-o /dev/null "$url"); done
	mkdir -p "$out"
	t0=$EPOCHREALTIME
	for ((c = 0; c < GET_CLIENTS; c++)); do
		curl -sS --fail-with-body -L -w '%{http_code} %{size_download}\n' "${AUTH[@]}" "${args[@]}" >"$out/$c" &
		pids+=("$!")
	done
	for c in "${pids[@]}"; do wait "$c" || die "${NAME[$side]}: blob GET client failed"; done
	secs=$(calc "$EPOCHREALTIME - $t0" 3)
	bytes=$(cat "$out"/* | awk '$1 == 200 { s += $2 } END { printf "%.0f", s }')
	expected=$((GET_CLIENTS * GET_ROUNDS * LAYER_SIZE))
	((bytes == expected)) || die "${NAME[$side]}: blob GET returned $bytes bytes with status 200, expected $expected ($(sort "$out"/* | uniq -c | tr '\n' ';'))"
	calc "$bytes / 1e6 / $secs" 1
}

measure_blob_get() {
	local side i mbs
	declare -A rates=()
	for ((i = 1; i <= RUNS; i++)); do
		for side in "${SIDES[@]}"; do
			start_rss_sampler "$side" "$WORK/rss-get-$side.$i"
			mbs=$(blob_get_run "$side")
			stop_rss_sampler
			rates[$side]+="$mbs "
			log "  blob GET ${NAME[$side]} run $i/$RUNS: $mbs MB/s ($GET_CLIENTS clients x $GET_ROUNDS x $LAYER_SIZE bytes)"
		done
	done
	for side in "${SIDES[@]}"; do
		# shellcheck disable=SC2086
		GET_MBS[$side]=$(median 1 ${rates[$side]})
		RSS_GET[$side]=$(cat "$WORK/rss-get-$side".* >"$WORK/rss-get-$side" && max_mib "$WORK/rss-get-$side")
	done
}

measure_manifest_get() {
	local side url out body rps
	for side in "${SIDES[@]}"; do
		url=${URL[$side]}/v2/bench/push-1/manifests/latest
		set_auth "$side" bench/push-1
		# Check once that the request wrk repeats really returns the pushed manifest.
		body=$WORK/manifest-$side.json
		curl -sS --fail-with-body -H "Accept: $MANIFEST_MT" "${AUTH[@]}" -o "$body" "$url"
		[[ sha256:$(sha256sum <"$body" | cut -d' ' -f1) == "$MANIFEST_DIGEST" ]] ||
			die "${NAME[$side]}: GET $url returned a manifest that is not $MANIFEST_DIGEST"
		start_rss_sampler "$side" "$WORK/rss-wrk-$side"
		out=$(wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MANIFEST_MT" "${AUTH[@]}" "$url")
		stop_rss_sampler
		if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
			printf '%s\n' "$out" >&2
			die "${NAME[$side]}: wrk saw errors or non-2xx responses"
		fi
		rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
		WRK_RPS[$side]=$rps
		RSS_WRK[$side]=$(max_mib "$WORK/rss-wrk-$side")
		HWM[$side]=$(calc "$(vm_kib "${PID[$side]}" VmHWM) / 1024" 1)
		log "  manifest GET ${NAME[$side]}: $rps req/s ($(grep -E '^ +Latency' <<<"$out" | tr -s ' ')), peak VmRSS ${RSS_WRK[$side]} MiB"
	done
}

# Share of CPU time that something else uses right now (another build would skew everything).
other_cpu_busy() {
	local a b
	a=$(head -n 1 /proc/stat)
	sleep 1
	b=$(head -n 1 /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {
		n = split(a, x); split(b, y)
		for (i = 2; i <= n; i++) { t += y[i] - x[i]; if (i == 5 || i == 6) idle += y[i] - x[i] }
		printf "%.0f", t ? 100 * (t - idle) / t : 0 }'
}

# On 2 cores a concurrent build or test run would swamp every number: wait for a quiet machine.
wait_for_idle() {
	local deadline=$((SECONDS + ${BENCH_IDLE_WAIT:-300}))
	while BUSY_BEFORE=$(other_cpu_busy) && ((BUSY_BEFORE >= 20)); do
		if ((SECONDS >= deadline)); then
			log "WARNING: ${BUSY_BEFORE}% of the CPU is busy with other work; numbers will be noisy"
			return 0
		fi
		log "waiting for the machine to go idle (${BUSY_BEFORE}% busy)..."
		sleep 10
	done
}

summary() {
	local s=subj p=peer
	local push_r cpu_r repush_r pull_r get_r wrk_r rss_r hwm_r
	push_r=$(calc "${PUSH_S[$p]} / ${PUSH_S[$s]}")
	cpu_r=$(calc "${PUSH_CPU[$s]} / ${PUSH_CPU[$p]}")
	repush_r=$(calc "${REPUSH_S[$p]} / ${REPUSH_S[$s]}")
	pull_r=$(calc "${PULL_S[$p]} / ${PULL_S[$s]}")
	get_r=$(calc "${GET_MBS[$s]} / ${GET_MBS[$p]}")
	wrk_r=$(calc "${WRK_RPS[$s]} / ${WRK_RPS[$p]}")
	rss_r=$(calc "${RSS_WRK[$s]} / ${RSS_WRK[$p]}")
	hwm_r=$(calc "${HWM[$s]} / ${HWM[$p]}")
	mbs() { calc "$IMAGE_BYTES / 1e6 / $1" 1; }

	cat <<-EOF

		## Registry benchmark: ${NAME[$s]} vs ${NAME[$p]} ($(date -u '+%Y-%m-%d %H:%M UTC'))

		- Host: $(nproc) CPUs (nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM
		- Bench dir filesystem: $FS_INFO (both servers' data dirs in one directory); CPU busy with other work: ${BUSY_BEFORE}% just before the run, ${BUSY_AFTER}% just after
		- Slipway: $SLIPWAY_REV, \`cargo build --release\`, SLIPWAY_LOG=warn, GC disabled
		- Peer: CNCF distribution $(docker-registry --version | awk '{ print $3 }'), filesystem storage, in-memory blob descriptor cache, access log off, no auth
		- Clients: $(skopeo --version) (\`--preserve-digests\`, blob-info cache emptied before every copy), curl $(curl --version | awk 'NR == 1 { print $2 }'), wrk $({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $2 }')
		- Image: $LAYERS random (incompressible) uncompressed tar layers of $LAYER_MIB MiB, $IMAGE_BYTES bytes in all; $RUNS runs per row, medians; MB = 10^6 bytes
		- Ratios are ${NAME[$s]} relative to ${NAME[$p]}; for times they are speed ratios (${NAME[$p]} time / ${NAME[$s]} time)

		| Measurement | ${NAME[$s]} | ${NAME[$p]} | Ratio | Target | Result |
		|---|---:|---:|---:|---|---|
		| Push to a fresh repo, skopeo (median) | ${PUSH_S[$s]} s, $(mbs "${PUSH_S[$s]}") MB/s | ${PUSH_S[$p]} s, $(mbs "${PUSH_S[$p]}") MB/s | ${push_r}x | ≥ 1.5x | $(verdict "$push_r" '>=' 1.5) |
		| Server CPU per pushed GB (utime+stime) | ${PUSH_CPU[$s]} s | ${PUSH_CPU[$p]} s | ${cpu_r}x | ≤ 0.25x | $(verdict "$cpu_r" '<=' 0.25) |
		| Re-push, every blob present (median) | ${REPUSH_S[$s]} s | ${REPUSH_S[$p]} s | ${repush_r}x | – | – |
		| Pull to \`dir:\`, skopeo (median) | ${PULL_S[$s]} s, $(mbs "${PULL_S[$s]}") MB/s | ${PULL_S[$p]} s, $(mbs "${PULL_S[$p]}") MB/s | ${pull_r}x | ≥ 1.0x | $(verdict "$pull_r" '>=' 1.0) |
		| Blob GET, $GET_CLIENTS concurrent curl clients (median) | ${GET_MBS[$s]} MB/s | ${GET_MBS[$p]} MB/s | ${get_r}x | ≥ 2x | $(verdict "$get_r" '>=' 2) |
		| Manifest GET by tag, wrk 2 threads / 32 conns / ${WRK_SECS} s ¹ | ${WRK_RPS[$s]} req/s | ${WRK_RPS[$p]} req/s | ${wrk_r}x | ≥ 10x | $(verdict "$wrk_r" '>=' 10) |
		| Peak VmRSS under manifest GET load | ${RSS_WRK[$s]} MiB | ${RSS_WRK[$p]} MiB | ${rss_r}x | ≤ 1.0x | $(verdict "$rss_r" '<=' 1.0) |
		| Peak VmRSS under blob GET load | ${RSS_GET[$s]} MiB | ${RSS_GET[$p]} MiB | $(calc "${RSS_GET[$s]} / ${RSS_GET[$p]}")x | – | – |
		| VmHWM, whole run | ${HWM[$s]} MiB | ${HWM[$p]} MiB | ${hwm_r}x | – | – |

		¹ $(if [[ ${KIND[$s]} == slipway ]]; then echo "Slipway: every request carries a bearer token (JWT from /auth/token, scope repository:bench/push-1:pull) that it verifies;"; else echo "Subject stand-in runs without auth;"; fi) distribution runs without auth, so it checks nothing. Accept: $MANIFEST_MT.
	EOF
}

main() {
	local side info started=$EPOCHREALTIME
	[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
	ensure_packages
	mkdir -p "${BENCH_DIR:-/var/tmp}"
	WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/slipway-bench.XXXXXX")
	CLK_TCK=$(getconf CLK_TCK)
	FS_INFO=$(findmnt -n -o FSTYPE,SOURCE -T "$WORK" | awk '{ print $1 " on " $2 }')
	SIDES=(subj peer)
	NAME[peer]=distribution

	if [[ $ONLY_PEER == 1 ]]; then
		NAME[subj]=distribution-as-subject
		SLIPWAY_REV="not measured (BENCH_ONLY_PEER=1)"
	else
		NAME[subj]=slipway
		build_slipway
		SLIPWAY_REV="commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$([[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] || echo ' + uncommitted changes')"
	fi
	log "bench dir: $WORK ($FS_INFO)"
	wait_for_idle

	IMAGE=$WORK/image
	log "writing OCI layout ($LAYERS x $LAYER_MIB MiB random layers)..."
	info=$(build_image "$IMAGE")
	while IFS='=' read -r k v; do printf -v "$k" '%s' "$v"; done <<<"$info"
	log "  manifest $MANIFEST_DIGEST, $IMAGE_BYTES bytes, layer $LAYER_DIGEST ($LAYER_SIZE bytes)"

	if [[ $ONLY_PEER == 1 ]]; then start_distribution subj; else start_slipway subj; fi
	start_distribution peer
	for side in "${SIDES[@]}"; do log "${NAME[$side]}: ${URL[$side]} (pid ${PID[$side]})"; done

	log "push to fresh repositories:"; measure_push
	log "re-push (all blobs present):"; measure_repush
	log "pull to dir:"; measure_pull
	log "blob GET:"; measure_blob_get
	log "manifest GET:"; measure_manifest_get
	BUSY_AFTER=$(other_cpu_busy)
	summary
	log ""
	log "benchmark took $(calc "$EPOCHREALTIME - $started" 0) s (including the build)"
}

main "$@"
