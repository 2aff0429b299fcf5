#!/usr/bin/env bash
# Containerfile build benchmark: `slipway build` vs `buildah bud --layers` (runc), measured
# in one run, on one machine, with both tools' storage on the same filesystem.
#
# The build is bench/build/Containerfile: two stages on busybox (the image from
# `slipway image bootstrap busybox`; buildah pulls that same image from Slipway's
# registry), a few RUN steps, and a COPY of a generated source tree of ~50 MiB in 3,600
# files (bench/build/make-tree.py: seeded, the same bytes on every run).
#
#   1. cold build: empty layer and build caches, base image already stored
#      (slipway: a fresh --work-dir where `slipway exec --image busybox -- true` has
#      pulled the base; buildah: a fresh --root/--runroot where `buildah pull` has)
#   2. unchanged rebuild: every instruction cached
#   3. rebuild after appending one line to one source file (restored afterwards)
#   4. reproducibility: two --no-cache builds, same digest? slipway by default; buildah
#      with --timestamp 0 (image id and OCI manifest) and without. Of the final image and
#      of the build stage (--target build), which alone holds the COPY layer; slipway's
#      build stage only if its `build` has --target
#   5. COPY layer throughput: the writing of slipway's COPY layer (its progress line: layer
#      size, written in N s) against gzip -1 and gzip -6 of a tar of the same tree
#
# Runs of the two tools are interleaved, so drift (page cache, writeback, other load)
# lands on both.
#
# Usage: bench/build.sh        (as root; installs missing Debian packages)
#
# Environment:
#   BENCH_RUNS=3          runs per measurement (medians are reported)
#   BENCH_DIR=/var/tmp    parent of the temporary directory (server data, build context,
#                         both tools' storage)
#   BENCH_TMPFS=1         mount a tmpfs inside it for both tools' storage (slipway's work
#                         dirs, buildah's root/runroot); context and server data stay on
#                         BENCH_DIR's filesystem
#   BENCH_KEEP=1          keep the temporary directory (logs, data) afterwards
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
#   BENCH_NO_CARGO=1      use target/release/slipway as it is (no cargo build first)
#   BENCH_NOTE="..."      one-line note put under the summary in bench/RESULTS.md
#
# Exits 0 when every measurement ran, whether or not the targets were met; 3 when
# target/release/slipway has no `build` subcommand (buildah is measured alone, nothing
# is appended to RESULTS.md); other non-zero statuses if anything failed to run (logs
# are printed then).
set -Eeuo pipefail
export LC_ALL=C         # EPOCHREALTIME and awk must use '.' as decimal separator
export RUST_BACKTRACE=0 # keep slipway's error output short in the logs
unset SOURCE_DATE_EPOCH # measure slipway's default (layer mtimes 0)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
TMPFS=${BENCH_TMPFS:-0}
CMDLINE="$(printf '%s ' "BENCH_RUNS=$RUNS" "BENCH_TMPFS=$TMPFS" "BENCH_DIR=${BENCH_DIR:-/var/tmp}" bash bench/build.sh "$@")"
CMDLINE=${CMDLINE% }
ADMIN_PW=bench-$RANDOM$RANDOM$RANDOM
SLIPWAY=$ROOT/target/release/slipway
CONTAINERFILE=$ROOT/bench/build/Containerfile
SLIPWAY_TAG=bench/build-app:latest
BUILDAH_TAG=localhost/bench/build-app:latest
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

WORK='' STORE='' CTX='' SERVER_PID='' URL='' HOSTPORT='' BASE_REF='' EDIT_FILE='' TAR_BYTES=''
DIGEST='' IMAGE_ID='' MANIFEST='' SPLIT='' HAVE_BUILD=0 HAVE_TARGET=0
declare -A MED MIN MAX # per measurement, seconds
declare -A NOTE        # per measurement, what a summary cell says when not a time
declare -A SPLITS      # per phase, slipway's own account of each build: "build_s push_s run cached" lines
COPY_SECS=() COPY_LAYERS=() SLIPWAY_DIGESTS=()

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# verdict VALUE OP THRESHOLD -> PASS/FAIL
verdict() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo PASS; else echo FAIL; fi; }
now() { echo "$EPOCHREALTIME"; }
secs_since() { calc "$EPOCHREALTIME - $1" 3; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# record NAME SAMPLE... : median/min/max in seconds
record() {
	local name=$1
	shift
	read -r "MED[$name]" "MIN[$name]" "MAX[$name]" < <(printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }')
	log "  $name: median ${MED[$name]} s (min ${MIN[$name]}, max ${MAX[$name]}, n=$#)"
}

trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" exited with status $?" >&2' ERR
trap 'exit 130' INT TERM
trap cleanup EXIT

cleanup() {
	local rc=$? f i d
	set +e
	trap - ERR
	if [[ -n $SERVER_PID ]]; then
		((rc != 0 && rc != 3)) && ! kill -0 "$SERVER_PID" 2>/dev/null && echo "slipway server (pid $SERVER_PID) had already exited" >&2
		kill -TERM "$SERVER_PID" 2>/dev/null
		for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
	fi
	if [[ -n $WORK ]]; then
		# buildah's state (its overlay mounts, any leftover working container)
		for d in "$STORE"/bh-*; do [[ -d $d ]] && reset_buildah "$d"; done
		unmount_under "$WORK"
		if ((rc != 0 && rc != 3)); then
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

# every mount at or under DIR, deepest first
unmount_under() {
	local m
	while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done < <(
		findmnt -rno TARGET | awk -v d="$1" '$0 == d || index($0, d "/") == 1' | sort -r
	)
}

# buildah on its own store under DIR (never the system's /var/lib/containers/storage)
buildah_cmd() { # DIR ARGS...
	local dir=$1
	shift
	TMPDIR=$WORK/tmp buildah --root "$dir/root" --runroot "$dir/rr" --storage-driver overlay "$@" </dev/null
}

reset_buildah() { # DIR: remove the store and everything in it
	[[ -d $1 ]] || return 0
	buildah_cmd "$1" rm -a >/dev/null 2>&1 || true
	buildah_cmd "$1" rmi -a -f >/dev/null 2>&1 || true
	unmount_under "$1"
	rm -rf "$1"
}

reset_slipway() { # WORK_DIR
	unmount_under "$1"
	rm -rf "$1"
}

install_packages() {
	local missing=() pkg cmd pair
	for pair in buildah:buildah runc:runc skopeo:skopeo python3:python3 curl:curl findmnt:util-linux gzip:gzip tar:tar; do
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
	if [[ ${BENCH_NO_CARGO:-0} == 1 ]]; then
		[[ -x $SLIPWAY ]] || die "BENCH_NO_CARGO=1 but there is no $SLIPWAY"
		log "using $SLIPWAY as it is (BENCH_NO_CARGO=1)"
		return
	fi
	log "building slipway (cargo build --release -p slipway-server)..."
	(cd "$ROOT" && cargo build --release -p slipway-server) >"$WORK/logs/cargo-build.log" 2>&1 ||
		die "cargo build --release -p slipway-server failed"
}

check_slipway_build() {
	if "$SLIPWAY" build --help >"$WORK/logs/slipway-build-help.log" 2>&1; then
		HAVE_BUILD=1
		if grep -q -- '--target' "$WORK/logs/slipway-build-help.log"; then HAVE_TARGET=1; fi
	else
		HAVE_BUILD=0
		log ""
		log "NOTE: $SLIPWAY has no \`build\` subcommand yet (\`slipway build --help\` failed:"
		log "      $(head -n1 "$WORK/logs/slipway-build-help.log"))."
		log "      Measuring buildah alone; slipway's cells say n/a and nothing goes to bench/RESULTS.md."
		log ""
	fi
}

start_server() {
	mkdir -p "$WORK/server"
	SLIPWAY_ADMIN_PASSWORD=$ADMIN_PW SLIPWAY_LOG=${SLIPWAY_LOG:-warn} \
		"$SLIPWAY" server --listen 127.0.0.1:0 --data-dir "$WORK/server/data" \
		>"$WORK/logs/server-stdout.log" 2>"$WORK/logs/server.log" &
	SERVER_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/logs/server-stdout.log" 2>/dev/null | head -n1) || true
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
	BASE_REF=$HOSTPORT/library/busybox:latest
}

prepare_context() {
	log "generating the build context (bench/build/make-tree.py)..."
	CTX=$WORK/ctx
	python3 "$ROOT/bench/build/make-tree.py" "$CTX/src" >"$WORK/logs/make-tree.log" 2>&1 ||
		die "bench/build/make-tree.py failed"
	local files bytes
	files=$(find "$CTX/src" -type f | wc -l)
	bytes=$(du -sb "$CTX/src" | cut -f1)
	# the file the one-line edit appends to: the first .rs file of the middle directory
	EDIT_FILE=$(find "$CTX/src/mod30" -name '*.rs' | sort | head -n1)
	[[ -n $EDIT_FILE ]] || die "no .rs file under $CTX/src/mod30"
	tar --sort=name --owner=0 --group=0 --numeric-owner -cf "$WORK/src.tar" -C "$CTX" src
	TAR_BYTES=$(stat -c %s "$WORK/src.tar")
	log "  $files files, $(calc "$bytes / 1048576" 1) MiB of content, tar $(calc "$TAR_BYTES / 1048576" 1) MiB; edits go to ${EDIT_FILE#"$CTX"/}"
}

# ---- one build of each tool -------------------------------------------------------------

# slipway_build WORK_DIR LOG_NAME [OPTIONS...]: one build; sets DIGEST (last stdout line)
slipway_build() {
	local w=$1 name=$2
	shift 2
	"$SLIPWAY" build -f "$CONTAINERFILE" -t "$SLIPWAY_TAG" --build-arg BASE=busybox \
		--work-dir "$w" --server "$URL" "$@" "$CTX" \
		>"$WORK/runs/$name.out" 2>"$WORK/runs/$name.err" </dev/null ||
		{ tail -n 20 "$WORK/runs/$name.err" >&2; die "slipway build failed ($name)"; }
	DIGEST=$(awk 'NF { last = $0 } END { print last }' "$WORK/runs/$name.out" | grep -oE 'sha256:[0-9a-f]{64}' | tail -n1) ||
		die "slipway build ($name): no sha256:... digest on the last line of its output (runs/$name.out)"
	cat "$WORK/runs/$name.err" >>"$WORK/logs/slipway-build.log"
	# its closing line: "built in 1.23s (4 run, 3 cached), pushed in 0.12s: ..."
	SPLIT=$(sed -nE 's/^built in ([0-9.]+)s \(([0-9]+) run, ([0-9]+) cached\), pushed in ([0-9.]+)s.*/\1 \4 \2 \3/p' "$WORK/runs/$name.err" | tail -n1)
}

# note_split PHASE: keep the last build's own split (build s, push s, run, cached) for PHASE
note_split() { if [[ -n $SPLIT ]]; then SPLITS[$1]+="$SPLIT"$'\n'; fi; }

# split_cell PHASE: "built 1.23 s + pushed 0.12 s (4 run, 3 cached)": medians, and the
# counts of the first build
split_cell() {
	[[ -n ${SPLITS[$1]:-} ]] || { printf 'n/a'; return; }
	local builds pushes counts
	mapfile -t builds < <(awk 'NF { print $1 }' <<<"${SPLITS[$1]}")
	mapfile -t pushes < <(awk 'NF { print $2 }' <<<"${SPLITS[$1]}")
	counts=$(awk 'NF { print $3 " run, " $4 " cached"; exit }' <<<"${SPLITS[$1]}")
	printf 'built %s s + pushed %s s (%s)' "$(calc "$(median "${builds[@]}")")" "$(calc "$(median "${pushes[@]}")")" "$counts"
}

# buildah_build STORE_DIR LOG_NAME [OPTIONS...]: one bud; sets IMAGE_ID
buildah_build() {
	local s=$1 name=$2
	shift 2
	buildah_cmd "$s" bud --layers --isolation oci --runtime runc --network none "${ULIMITS[@]}" \
		--pull=never -f "$CONTAINERFILE" -t "$BUILDAH_TAG" --build-arg "BASE=$BASE_REF" \
		--iidfile "$WORK/tmp/iid" "$@" "$CTX" >"$WORK/runs/$name.log" 2>&1 ||
		{ tail -n 20 "$WORK/runs/$name.log" >&2; die "buildah bud failed ($name)"; }
	IMAGE_ID=$(cat "$WORK/tmp/iid")
	cat "$WORK/runs/$name.log" >>"$WORK/logs/buildah-bud.log"
}

# a fresh slipway work dir with the base image pulled and unpacked
slipway_fresh() { # WORK_DIR
	reset_slipway "$1"
	"$SLIPWAY" exec --server "$URL" --image busybox --work-dir "$1" -- true >>"$WORK/logs/slipway-prepull.log" 2>&1 </dev/null ||
		die "slipway exec --image busybox -- true (pre-pull into $1) failed"
}

# a fresh buildah store with the base image pulled
buildah_fresh() { # STORE_DIR
	reset_buildah "$1"
	buildah_cmd "$1" pull --tls-verify=false --creds "admin:$ADMIN_PW" "docker://$BASE_REF" >>"$WORK/logs/buildah-pull.log" 2>&1 ||
		die "buildah pull of $BASE_REF failed"
}

# The COPY src/ progress line, e.g.
# "[build 5/6] COPY src/ /app/src/  run 0.84s  layer 28.5 MiB written in 0.31s":
# prints "SECONDS MIB" (either may be n/a), SECONDS being the time writing the layer took
# (tar, gzip, digest) when the line says it, else the whole instruction's. Tolerant of the
# line's exact shape.
parse_copy_line() { # STDERR_FILE
	python3 - "$1" <<-'EOF'
		import re, sys
		secs = mib = "n/a"
		unit_s = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}
		unit_b = {"b": 1 / 1048576, "kib": 1 / 1024, "kb": 1e3 / 1048576, "mib": 1.0,
		          "mb": 1e6 / 1048576, "gib": 1024.0, "gb": 1e9 / 1048576}
		for line in re.split(r"[\r\n]+", open(sys.argv[1], errors="replace").read()):
		    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)  # colours, cursor moves
		    m = re.search(r"\bCOPY\s+(?!--from)\S*src/?\s", line)
		    if not m:
		        continue
		    rest = line[m.end():]
		    d = re.search(r"written in\s+(\d+(?:\.\d+)?)\s*(ms|min|s|m)\b", rest) \
		        or re.search(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m)\b", rest)
		    if d:
		        secs = "%.3f" % (float(d.group(1)) * unit_s[d.group(2)])
		    z = re.search(r"(\d+(?:\.\d+)?)\s*(GiB|MiB|KiB|GB|MB|kB|KB|B)\b", rest)
		    if z:
		        mib = "%.2f" % (float(z.group(1)) * unit_b[z.group(2).lower()])
		print(secs, mib)
	EOF
}

# ---- measurements -----------------------------------------------------------------------

# 1. cold builds
bench_cold() {
	local i t w=$STORE/sw-cold s=$STORE/bh-cold secs mib sw=() bh=()
	log "1. cold build: empty caches, base image stored ($RUNS runs each, interleaved)..."
	for ((i = 0; i < RUNS; i++)); do
		if ((HAVE_BUILD)); then
			slipway_fresh "$w"
			sync
			t=$(now)
			slipway_build "$w" "slipway-cold-$i"
			sw+=("$(secs_since "$t")")
			note_split cold
			SLIPWAY_DIGESTS+=("$DIGEST")
			read -r secs mib < <(parse_copy_line "$WORK/runs/slipway-cold-$i.err")
			[[ $secs =~ ^[0-9.]+$ ]] && COPY_SECS+=("$secs")
			[[ $mib =~ ^[0-9.]+$ ]] && COPY_LAYERS+=("$mib")
			du -sb "$w" >>"$WORK/runs/slipway-cold-$i.err"
			reset_slipway "$w"
		fi
		buildah_fresh "$s"
		sync
		t=$(now)
		buildah_build "$s" "buildah-cold-$i"
		bh+=("$(secs_since "$t")")
		du -sb "$s" >>"$WORK/runs/buildah-cold-$i.log"
		reset_buildah "$s"
	done
	((HAVE_BUILD)) && record slipway_cold "${sw[@]}"
	record buildah_cold "${bh[@]}"
}

# 2. unchanged rebuilds on a warm cache (kept for 3. and 4.)
bench_unchanged() {
	local i t sw=() bh=()
	log "2. unchanged rebuild, everything cached ($RUNS runs each after one untimed build)..."
	if ((HAVE_BUILD)); then
		slipway_fresh "$STORE/sw-warm"
		slipway_build "$STORE/sw-warm" slipway-warmup
		SLIPWAY_DIGESTS+=("$DIGEST")
	fi
	buildah_fresh "$STORE/bh-warm"
	buildah_build "$STORE/bh-warm" buildah-warmup
	for ((i = 0; i < RUNS; i++)); do
		if ((HAVE_BUILD)); then
			t=$(now)
			slipway_build "$STORE/sw-warm" "slipway-unchanged-$i"
			sw+=("$(secs_since "$t")")
			note_split unchanged
			SLIPWAY_DIGESTS+=("$DIGEST")
		fi
		t=$(now)
		buildah_build "$STORE/bh-warm" "buildah-unchanged-$i"
		bh+=("$(secs_since "$t")")
		grep -q 'Using cache' "$WORK/runs/buildah-unchanged-$i.log" || die "buildah's unchanged rebuild used no cache (runs/buildah-unchanged-$i.log)"
	done
	((HAVE_BUILD)) && record slipway_unchanged "${sw[@]}"
	record buildah_unchanged "${bh[@]}"
}

# 3. one line appended to one file; each run appends a different line, so each is a miss
bench_edit() {
	local i t sw=() bh=() saved=$WORK/tmp/edit-saved
	log "3. rebuild after a one-line edit of ${EDIT_FILE#"$CTX"/} ($RUNS runs each)..."
	cp -p "$EDIT_FILE" "$saved"
	for ((i = 0; i < RUNS; i++)); do
		printf '// bench edit %d\n' "$i" >>"$EDIT_FILE"
		if ((HAVE_BUILD)); then
			t=$(now)
			slipway_build "$STORE/sw-warm" "slipway-edit-$i"
			sw+=("$(secs_since "$t")")
			note_split edit
		fi
		t=$(now)
		buildah_build "$STORE/bh-warm" "buildah-edit-$i"
		bh+=("$(secs_since "$t")")
		cp -p "$saved" "$EDIT_FILE"
	done
	((HAVE_BUILD)) && record slipway_edit "${sw[@]}"
	record buildah_edit "${bh[@]}"
}

# buildah's image as pushed to an OCI layout (gzip layers); sets MANIFEST to its digest
buildah_manifest_digest() { # STORE_DIR IMAGE_ID NAME
	local dir=$WORK/tmp/oci-$3
	buildah_cmd "$1" push --digestfile "$WORK/tmp/digest-$3" "$2" "oci:$dir:latest" >>"$WORK/logs/buildah-push.log" 2>&1 ||
		die "buildah push $2 to oci:$dir failed"
	MANIFEST=$(cat "$WORK/tmp/digest-$3")
	rm -rf "$dir"
}

same() { if [[ $1 == "$2" ]]; then echo yes; else echo no; fi; }
short() { local d=${1#sha256:}; echo "${d:0:12}"; }

# 4. two --no-cache builds each: same digest? The final image holds busybox and /count
# only; the COPY src/ layer is in the build stage, so that stage is compared as well
# (--target build; for slipway only if its build has --target).
bench_reproducible() {
	local i t sw=() bh=() d=() ds=() ids=() ids_ts=() m=() ids_st=() m_st=() u
	log "4. reproducibility: two --no-cache builds each, of the final image and of the build stage (buildah with and without --timestamp 0)..."
	for ((i = 0; i < 2; i++)); do
		if ((HAVE_BUILD)); then
			t=$(now)
			slipway_build "$STORE/sw-warm" "slipway-nocache-$i" --no-cache
			sw+=("$(secs_since "$t")")
			note_split nocache
			d+=("$DIGEST")
			SLIPWAY_DIGESTS+=("$DIGEST")
		fi
		t=$(now)
		buildah_build "$STORE/bh-warm" "buildah-nocache-ts-$i" --no-cache --timestamp 0
		bh+=("$(secs_since "$t")")
		ids_ts+=("$IMAGE_ID")
		buildah_manifest_digest "$STORE/bh-warm" "$IMAGE_ID" "ts-$i"
		m+=("$MANIFEST")
		buildah_build "$STORE/bh-warm" "buildah-nocache-$i" --no-cache
		ids+=("$IMAGE_ID")
		# the build stage (both tools tag it as they tag the final image; no later step uses the tag)
		if ((HAVE_TARGET)); then
			slipway_build "$STORE/sw-warm" "slipway-nocache-stage-$i" --no-cache --target build
			ds+=("$DIGEST")
		fi
		buildah_build "$STORE/bh-warm" "buildah-nocache-stage-$i" --no-cache --timestamp 0 --target build
		ids_st+=("$IMAGE_ID")
		buildah_manifest_digest "$STORE/bh-warm" "$IMAGE_ID" "stage-$i"
		m_st+=("$MANIFEST")
	done
	if ((HAVE_BUILD)); then
		record slipway_nocache "${sw[@]}"
		NOTE[slipway_repro]=$(same "${d[0]}" "${d[1]}")
		log "  slipway, final image: $(short "${d[0]}") / $(short "${d[1]}"): ${NOTE[slipway_repro]}"
		if ((HAVE_TARGET)); then
			NOTE[slipway_repro_stage]=$(same "${ds[0]}" "${ds[1]}")
			log "  slipway, build stage: $(short "${ds[0]}") / $(short "${ds[1]}"): ${NOTE[slipway_repro_stage]}"
		else
			log "  slipway, build stage: not compared (slipway build has no --target)"
		fi
		u=$(printf '%s\n' "${SLIPWAY_DIGESTS[@]}" | sort -u | wc -l)
		NOTE[slipway_all_same]=$( ((u == 1)) && echo yes || echo "no, $u digests")
		log "  slipway: the ${#SLIPWAY_DIGESTS[@]} builds of the final image from the unchanged tree (cold, cached, --no-cache) gave one digest: ${NOTE[slipway_all_same]}"
	fi
	record buildah_nocache "${bh[@]}"
	NOTE[buildah_repro_ts]=$( [[ ${ids_ts[0]} == "${ids_ts[1]}" && ${m[0]} == "${m[1]}" ]] && echo yes || echo no)
	NOTE[buildah_repro_stage]=$( [[ ${ids_st[0]} == "${ids_st[1]}" && ${m_st[0]} == "${m_st[1]}" ]] && echo yes || echo no)
	NOTE[buildah_repro]=$(same "${ids[0]}" "${ids[1]}")
	log "  buildah --timestamp 0, final image: image ids $(short "${ids_ts[0]}") / $(short "${ids_ts[1]}"), OCI manifests $(short "${m[0]}") / $(short "${m[1]}"): ${NOTE[buildah_repro_ts]}"
	log "  buildah --timestamp 0, build stage: image ids $(short "${ids_st[0]}") / $(short "${ids_st[1]}"), OCI manifests $(short "${m_st[0]}") / $(short "${m_st[1]}"): ${NOTE[buildah_repro_stage]}"
	log "  buildah without --timestamp, final image: image ids $(short "${ids[0]}") / $(short "${ids[1]}"): ${NOTE[buildah_repro]}"
}

# 5. gzip -1 / -6 of the tree's tar, for the COPY layer's throughput
bench_gzip() {
	local level i t samples=() out
	log "5. gzip -1 and gzip -6 of the tar of src/ ($(calc "$TAR_BYTES / 1048576" 1) MiB, from the page cache; $RUNS runs each)..."
	cat "$WORK/src.tar" >/dev/null
	for level in 1 6; do
		samples=()
		for ((i = 0; i < RUNS; i++)); do
			t=$(now)
			out=$(gzip "-$level" -c "$WORK/src.tar" | wc -c)
			samples+=("$(secs_since "$t")")
		done
		record "gzip$level" "${samples[@]}"
		NOTE[gzip${level}_bytes]=$out
	done
	if ((HAVE_BUILD)); then
		if ((${#COPY_SECS[@]})); then
			NOTE[copy_secs]=$(median "${COPY_SECS[@]}")
			log "  slipway COPY src/ layer written in: median ${NOTE[copy_secs]} s over ${#COPY_SECS[@]} cold builds"
		else
			log "  slipway COPY src/ instruction: could not parse its progress line (see runs/slipway-cold-0.err)"
		fi
		((${#COPY_LAYERS[@]})) && NOTE[copy_mib]=$(median "${COPY_LAYERS[@]}")
	fi
	true
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

# ---- summary ----------------------------------------------------------------------------

cell() { # NAME: "1.23 s (min 1.10, max 1.40)" or n/a
	if [[ -n ${MED[$1]:-} ]]; then printf '%s s (min %s, max %s)' "${MED[$1]}" "${MIN[$1]}" "${MAX[$1]}"; else printf 'n/a'; fi
}

ratio() { # A B: A / B, or n/a when either is missing
	if [[ -n ${MED[$1]:-} && -n ${MED[$2]:-} ]]; then printf '%sx' "$(calc "${MED[$1]} / ${MED[$2]}")"; else printf 'n/a'; fi
}

result() { # RATIO_CELL OP THRESHOLD
	if [[ $1 == n/a ]]; then printf 'n/a'; else verdict "${1%x}" "$2" "$3"; fi
}

mibs() { # BYTES SECONDS -> MiB/s
	calc "$1 / 1048576 / $2" 1
}

summary() {
	local commit dirty binary r_cold r_unch r_edit r_nc v_repro sw_repro sw_copy g1 g6 r_g1 r_g6 tar_mib
	r_cold=$(ratio slipway_cold buildah_cold)
	r_unch=$(ratio slipway_unchanged buildah_unchanged)
	r_edit=$(ratio slipway_edit buildah_edit)
	r_nc=$(ratio slipway_nocache buildah_nocache)
	v_repro=n/a
	sw_repro=n/a
	if [[ -n ${NOTE[slipway_repro]:-} ]]; then
		sw_repro="final image ${NOTE[slipway_repro]}, build stage ${NOTE[slipway_repro_stage]:-not compared (no --target)}"
		v_repro=FAIL
		[[ ${NOTE[slipway_repro]} == yes && ${NOTE[slipway_repro_stage]:-yes} == yes ]] && v_repro=PASS
	fi
	tar_mib=$(calc "$TAR_BYTES / 1048576" 1)
	g1="gzip -1: $(mibs "$TAR_BYTES" "${MED[gzip1]}") MiB/s ($(calc "${MED[gzip1]}") s, output $(calc "${NOTE[gzip1_bytes]} / 1048576" 1) MiB)"
	g6="gzip -6: $(mibs "$TAR_BYTES" "${MED[gzip6]}") MiB/s ($(calc "${MED[gzip6]}") s, output $(calc "${NOTE[gzip6_bytes]} / 1048576" 1) MiB)"
	sw_copy=n/a r_g1=n/a r_g6=n/a
	if [[ -n ${NOTE[copy_secs]:-} ]] && awk "BEGIN { exit !(${NOTE[copy_secs]} > 0) }"; then
		sw_copy="$(mibs "$TAR_BYTES" "${NOTE[copy_secs]}") MiB/s ($(calc "${NOTE[copy_secs]}") s$([[ -n ${NOTE[copy_mib]:-} ]] && echo ", layer $(calc "${NOTE[copy_mib]}" 1) MiB"))"
		r_g1="$(calc "${MED[gzip1]} / ${NOTE[copy_secs]}")x"
		r_g6="$(calc "${MED[gzip6]} / ${NOTE[copy_secs]}")x"
	fi
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	binary="\`cargo build --release\`"
	[[ ${BENCH_NO_CARGO:-0} == 1 ]] && binary="target/release/slipway as found (BENCH_NO_CARGO=1, built $(date -u -r "$SLIPWAY" '+%Y-%m-%d %H:%M UTC'))"
	# bench/ is left out: RESULTS.md changes with every run of this script
	dirty=''
	if git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null | grep -q .; then dirty=" + uncommitted changes"; fi
	cat <<-EOF
		### Build benchmark: slipway build vs buildah bud ($(date -u '+%Y-%m-%d %H:%M UTC'))

		- Command: \`$CMDLINE\`
		- Host: $(nproc) CPUs (nproc), $CPU_MODEL, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)
		- Storage of both tools: $(fs_of "$STORE") ($([[ $TMPFS == 1 ]] && echo "BENCH_TMPFS=1" || echo "temp dir under ${BENCH_DIR:-/var/tmp}")); context and server data: $(fs_of "$WORK/server"); CPU busy: ${BUSY_BEFORE}% before, ${BUSY_AFTER}% after
		- Slipway: commit $commit$dirty, $binary, SLIPWAY_LOG=${SLIPWAY_LOG:-warn}, SOURCE_DATE_EPOCH unset; \`slipway build -t $SLIPWAY_TAG\` with its defaults (RUN with --net none in a user namespace, gzip layers; ends with the image and its provenance pushed to Slipway's registry)
		- Peer: $(buildah --version) with \`bud --layers --isolation oci --runtime runc --network none --pull=never\`, overlay driver, own --root/--runroot (ends with the image in its local store, layers uncompressed); $(runc --version | head -n1)
		- Build: bench/build/Containerfile (two stages, $(grep -c '^RUN' "$CONTAINERFILE") RUN, COPY of the context's src/, COPY --from; the final image holds busybox and /count only); src/ from bench/build/make-tree.py: $(find "$CTX/src" -type f | wc -l) files, tar $tar_mib MiB; base library/busybox:latest from \`slipway image bootstrap busybox\` (busybox-static $(dpkg-query -W -f '${Version}' busybox-static)), pulled by buildah from Slipway's registry
		- Cold: a fresh slipway --work-dir where \`slipway exec --image busybox -- true\` pulled the base; a fresh buildah store where \`buildah pull\` did. Edit: one line appended to ${EDIT_FILE#"$CTX"/}, different each run
		- Medians of $RUNS runs (no-cache: 2); wall clock from the shell, \`sync\` before each cold build, page cache not dropped; ratios are slipway / buildah time (lower is better) except the COPY rows: slipway / gzip throughput (higher is better)

		| Measurement | slipway | buildah | Ratio | Target | Result |
		|---|---:|---:|---:|---|---|
		| Cold build (empty caches, base image stored) | $(cell slipway_cold) | $(cell buildah_cold) | $r_cold | ≤ 1.0x | $(result "$r_cold" '<=' 1.0) |
		| Unchanged rebuild (every step cached) | $(cell slipway_unchanged) | $(cell buildah_unchanged) | $r_unch | ≤ 0.2x | $(result "$r_unch" '<=' 0.2) |
		| Rebuild after a one-line edit of one source file | $(cell slipway_edit) | $(cell buildah_edit) | $r_edit | ≤ 0.5x | $(result "$r_edit" '<=' 0.5) |
		| Rebuild with --no-cache (buildah: --timestamp 0) | $(cell slipway_nocache) | $(cell buildah_nocache) | $r_nc | – | – |
		| Two --no-cache builds give the same digest (slipway: by default; buildah: image id and OCI manifest) | $sw_repro | with --timestamp 0: final image ${NOTE[buildah_repro_ts]}, build stage ${NOTE[buildah_repro_stage]}; without: final image ${NOTE[buildah_repro]} | – | slipway yes | $v_repro |
		| COPY src/ ($tar_mib MiB tar): slipway's COPY layer (tar + gzip + digest) vs gzip -1 of the tar | $sw_copy | $g1 | $r_g1 | – | – |
		| same vs gzip -6 | $sw_copy | $g6 | $r_g6 | – | – |
	EOF
	if ((HAVE_BUILD)); then
		echo
		echo "Slipway's own account of its time (its closing stderr line; medians): cold $(split_cell cold); unchanged $(split_cell unchanged); one-line edit $(split_cell edit); --no-cache $(split_cell nocache)."
		echo
		echo "Slipway's ${#SLIPWAY_DIGESTS[@]} builds of the final image from the unchanged tree (cold, cached, --no-cache) gave one digest: ${NOTE[slipway_all_same]:-n/a} ($(short "${SLIPWAY_DIGESTS[0]:-}")). The COPY rows time the writing of slipway's COPY layer as its progress line reports it (median of the cold builds; reading the files, tar, gzip on a second thread, digests), against gzip alone on a tar of the same files read from the page cache."
	fi
}

append_results() { # SUMMARY
	local f=$ROOT/bench/RESULTS.md heading='## bench/build.sh — Containerfile builds vs buildah'
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
	WORK=$(mktemp -d "$parent/sbb.XXXXXX") # short: containers/storage refuses long runroot paths
	# Container root in slipway's user namespace is "others" on the host: the
	# directories down to its rootfs must be searchable (mktemp makes 0700).
	chmod 711 "$WORK"
	mkdir -p "$WORK/logs" "$WORK/runs" "$WORK/tmp" # runs/: each build's own output
	STORE=$WORK/s
	mkdir -p "$STORE"
	if [[ $TMPFS == 1 ]]; then
		mount -t tmpfs -o size=4g,mode=0711 bench-tmpfs "$STORE"
	fi
	install_packages
	build_slipway
	check_slipway_build
	CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	start_server
	prepare_busybox
	prepare_context
	BUSY_BEFORE=$(cpu_busy)
	log "CPU busy just before measuring: ${BUSY_BEFORE}%"
	bench_cold
	bench_unchanged
	bench_edit
	bench_reproducible
	bench_gzip
	BUSY_AFTER=$(cpu_busy)
	local s
	s=$(summary)
	printf '\n%s\n' "$s"
	if ((!HAVE_BUILD)); then
		log ""
		log "slipway build is not available in $SLIPWAY: only buildah was measured; nothing appended to bench/RESULTS.md."
		exit 3
	fi
	[[ ${BENCH_NO_RESULTS:-0} == 1 ]] || append_results "$s"
}

main "$@"
