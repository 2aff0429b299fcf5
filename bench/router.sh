#!/usr/bin/env bash
# Router benchmark: Slipway's deploy router vs nginx vs HAProxy, each a reverse proxy
# with upstream keep-alive in front of the same upstream (nginx `return 200`, one
# worker, on loopback), measured in one run on one machine.
#
#   1. wrk, 32 keep-alive connections
#   2. wrk, a new connection per request (`Connection: close`)
#   3. Slipway alone with the upstream inside a network namespace (reached the way
#      deployed instances are: a socket made in the namespace), both load shapes
#   4. Slipway on a shared multi-threaded tokio runtime (`threads: 0`, as when it runs
#      inside the node agent) instead of its own threads (one per worker)
#
# For each: requests/s, p99 latency, the proxy's CPU time per request (user + system,
# all its processes: steadier than req/s when the machine is shared), and memory of the proxy under load (peak over
# the run of the summed VmRSS and of the summed Pss of all its processes: nginx and
# HAProxy run a master and workers). Ratios are Slipway relative to nginx.
#
# Usage: bench/router.sh        (as root; installs nginx, haproxy, wrk when missing)
#
# Environment:
#   BENCH_DURATION=10     seconds per wrk run
#   BENCH_RUNS=3          runs per row (medians are reported)
#   BENCH_WORKERS=2       worker threads/processes of each proxy (default: nproc)
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
#   BENCH_NOTE="..."      one-line note put under the summary in bench/RESULTS.md
set -Eeuo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
WORKERS=${BENCH_WORKERS:-$(nproc)}
CMDLINE="BENCH_DURATION=$DURATION BENCH_RUNS=$RUNS BENCH_WORKERS=$WORKERS bash bench/router.sh"
UPSTREAM_PORT=18080
NGINX_PORT=18081
HAPROXY_PORT=18082
SLIPWAY_PORT=18083
SLIPWAY_NS_PORT=18084
SLIPWAY_SHARED_PORT=18085

[ "$(id -u)" = 0 ] || { echo "bench/router.sh: run as root" >&2; exit 1; }
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

echo "building the router (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p slipway-runner --example router)
ROUTER=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/router

WORK=$(mktemp -d /tmp/slipway-router-bench.XXXXXX)
NS=slipway-bench-$$
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# nginx config: a server block on PORT; extra directives inside `http`.
nginx_conf() { # NAME WORKERS HTTP_BLOCK
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes $2;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1;
    proxy_temp_path $WORK/$1;
    fastcgi_temp_path $WORK/$1;
    uwsgi_temp_path $WORK/$1;
    scgi_temp_path $WORK/$1;
    keepalive_requests 1000000;
    $3
}
CONF
}

UPSTREAM_SERVER="server { listen 127.0.0.1:$UPSTREAM_PORT; location / { return 200 \"hello from the upstream\n\"; } }"
nginx_conf upstream 1 "$UPSTREAM_SERVER"
nginx_conf upstream-ns 1 "$UPSTREAM_SERVER"
nginx_conf proxy "$WORKERS" "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_buffering off;
        }
    }"
cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread $WORKERS
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend web
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend app
backend app
    server up 127.0.0.1:$UPSTREAM_PORT
CONF

wait_port() { # PORT [NETNS]
    for _ in $(seq 1 200); do
        if [ -n "${2:-}" ]; then
            ip netns exec "$2" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
        else
            (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        fi
        sleep 0.05
    done
    echo "nothing listens on port $1 after 10 s" >&2
    return 1
}

nginx -c "$WORK/upstream/nginx.conf" & PIDS+=($!); UPSTREAM_PID=$!
nginx -c "$WORK/proxy/nginx.conf" & PIDS+=($!); NGINX_PID=$!
haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!); HAPROXY_PID=$!
"$ROUTER" 127.0.0.1:$SLIPWAY_PORT $UPSTREAM_PORT --workers "$WORKERS" 2>"$WORK/router.log" & PIDS+=($!); SLIPWAY_PID=$!
"$ROUTER" 127.0.0.1:$SLIPWAY_SHARED_PORT $UPSTREAM_PORT --shared-runtime --workers "$WORKERS" 2>"$WORK/router-shared.log" & PIDS+=($!); SLIPWAY_SHARED_PID=$!
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" nginx -c "$WORK/upstream-ns/nginx.conf" & PIDS+=($!)
"$ROUTER" 127.0.0.1:$SLIPWAY_NS_PORT $UPSTREAM_PORT --netns "/run/netns/$NS" --workers "$WORKERS" 2>"$WORK/router-ns.log" & PIDS+=($!); SLIPWAY_NS_PID=$!
for port in $UPSTREAM_PORT $NGINX_PORT $HAPROXY_PORT $SLIPWAY_PORT $SLIPWAY_NS_PORT $SLIPWAY_SHARED_PORT; do wait_port $port; done
wait_port $UPSTREAM_PORT "$NS"
for port in $NGINX_PORT $HAPROXY_PORT $SLIPWAY_PORT $SLIPWAY_NS_PORT $SLIPWAY_SHARED_PORT; do
    body=$(curl -fsS "http://127.0.0.1:$port/") || { echo "proxy on $port does not answer" >&2; exit 1; }
    [ "$body" = "hello from the upstream" ] || { echo "proxy on $port answered: $body" >&2; exit 1; }
done

# The pids of a process and its children.
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
# Peak summed VmRSS and Pss (KiB) of a process tree, sampled until the file $2 exists.
sample_memory() { # PID STOPFILE OUT
    local peak_rss=0 peak_pss=0
    while [ ! -e "$2" ]; do
        local rss=0 pss=0
        for p in $(tree_pids "$1"); do
            r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
            s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
            rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
        done
        [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
        [ "$pss" -gt "$peak_pss" ] && peak_pss=$pss
        sleep 0.2
    done
    echo "$peak_rss $peak_pss" > "$3"
}

# CPU time (clock ticks, user + system) of a process tree so far.
tree_cpu() { local t=0 p; for p in $(tree_pids "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }

# wrk's p99 in ms.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 }; printf "%.3f", v }'; }

# One wrk run against PORT with proxy PID: prints
# "req/s p99_ms rss_kib pss_kib errors cpu_us_per_request".
run_wrk() { # PORT PID MODE
    local extra=() stop="$WORK/stop.$RANDOM"
    [ "$3" = close ] && extra=(-H "Connection: close")
    sample_memory "$2" "$stop" "$stop.mem" &
    local sampler=$! cpu0 cpu1
    cpu0=$(tree_cpu "$2")
    wrk -t2 -c32 -d"${DURATION}s" --latency "${extra[@]}" "http://127.0.0.1:$1/" > "$WORK/wrk.out" 2>&1
    cpu1=$(tree_cpu "$2")
    touch "$stop"; wait "$sampler"
    local rps p99 errors requests
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out" | to_ms)
    errors=$(awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}' "$WORK/wrk.out")
    requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
    echo "$rps $p99 $(cat "$stop.mem") $errors $(awk -v c=$((cpu1 - cpu0)) -v r="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", c * 1e6 / hz / r }')"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RPS P99 RSS PSS ERR CPU
for mode in keepalive close; do
    for name in nginx haproxy slipway slipway-netns slipway-shared; do
        case $name in
            nginx) port=$NGINX_PORT pid=$NGINX_PID ;;
            haproxy) port=$HAPROXY_PORT pid=$HAPROXY_PID ;;
            slipway) port=$SLIPWAY_PORT pid=$SLIPWAY_PID ;;
            slipway-netns) port=$SLIPWAY_NS_PORT pid=$SLIPWAY_NS_PID ;;
            slipway-shared) port=$SLIPWAY_SHARED_PORT pid=$SLIPWAY_SHARED_PID ;;
        esac
        wrk -t2 -c32 -d1s "http://127.0.0.1:$port/" >/dev/null # warm-up
        : > "$WORK/runs"
        for _ in $(seq 1 "$RUNS"); do run_wrk "$port" "$pid" "$mode" >> "$WORK/runs"; done
        key=$name/$mode
        RPS[$key]=$(awk '{print $1}' "$WORK/runs" | median)
        P99[$key]=$(awk '{print $2}' "$WORK/runs" | median)
        RSS[$key]=$(awk '{print $3}' "$WORK/runs" | sort -g | tail -1)
        PSS[$key]=$(awk '{print $4}' "$WORK/runs" | sort -g | tail -1)
        ERR[$key]=$(awk '{n+=$5} END {print n+0}' "$WORK/runs")
        CPU[$key]=$(awk '{print $6}' "$WORK/runs" | median)
        echo "$key: ${RPS[$key]} req/s, p99 ${P99[$key]} ms, peak RSS ${RSS[$key]} KiB, Pss ${PSS[$key]} KiB, errors ${ERR[$key]}, CPU ${CPU[$key]} us/request" >&2
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
verdict() { awk -v r="${1%x}" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (r >= t) : (r <= t); print ok ? "PASS" : "FAIL" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

busy() { # percent CPU busy over one second
    read -r _ a b c d e f g _ < /proc/stat; local t1=$((a+b+c+d+e+f+g)) i1=$d
    sleep 1
    read -r _ a b c d e f g _ < /proc/stat; local t2=$((a+b+c+d+e+f+g)) i2=$d
    echo $(( 100 - 100 * (i2 - i1) / (t2 - t1) ))
}

{
echo "### Router benchmark: slipway vs nginx vs HAProxy ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "- Command: \`$CMDLINE\`"
echo "- Host: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; CPU busy with other work just after the run: $(busy)%"
echo "- Slipway: commit $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- runner || echo ' + uncommitted changes'), \`runner/examples/router.rs\` release build: $WORKERS threads of its own (\`RouterConfig::threads\`); \"shared runtime\": on a multi-threaded tokio runtime of $WORKERS workers"
echo "- Peers: $(nginx -v 2>&1 | sed 's/.*: //') ($WORKERS workers, upstream keepalive 64, proxy_buffering off), $(haproxy -v | head -1 | awk '{print "HAProxy", $3}') (nbthread $WORKERS, http-reuse always); all set X-Forwarded-For/-Proto/-Host"
echo "- Upstream: nginx, 1 worker, \`return 200\` (24 bytes), on 127.0.0.1; for \"slipway, netns\" the same inside its own network namespace (loopback only)"
echo "- Load: $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), 2 threads, 32 connections, ${DURATION} s per run, $RUNS runs per row (medians; memory: the peak over the runs of the sampled sum over the proxy's processes); the new-connection rows send \`Connection: close\`"
echo "- Ratios are slipway relative to nginx (for p99 and memory, lower is better)"
echo
echo "| Load | Proxy | req/s | p99 | peak RSS | peak Pss | proxy CPU per request | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in keepalive close; do
    label=$([ $mode = keepalive ] && echo "32 keep-alive conns" || echo "new conn per request")
    for name in nginx haproxy slipway slipway-netns slipway-shared; do
        key=$name/$mode
        shown=${name/-netns/, upstream in a netns}; shown=${shown/-shared/, shared runtime}
        echo "| $label | $shown | ${RPS[$key]} | ${P99[$key]} ms | $(mib "${RSS[$key]}") | $(mib "${PSS[$key]}") | ${CPU[$key]} µs | ${ERR[$key]} |"
    done
done
echo
echo "| Load | Measure | slipway / nginx | Target | Result |"
echo "|---|---|---:|---|---|"
for mode in keepalive close; do
    label=$([ $mode = keepalive ] && echo "32 keep-alive conns" || echo "new conn per request")
    r=$(ratio "${RPS[slipway/$mode]}" "${RPS[nginx/$mode]}"); echo "| $label | req/s | $r | ≥ 1.0x | $(verdict "$r" ">=" 1.0) |"
    r=$(ratio "${P99[slipway/$mode]}" "${P99[nginx/$mode]}"); echo "| $label | p99 | $r | ≤ 1.2x | $(verdict "$r" "<=" 1.2) |"
    r=$(ratio "${PSS[slipway/$mode]}" "${PSS[nginx/$mode]}"); echo "| $label | memory (Pss) | $r | ≤ 1.0x | $(verdict "$r" "<=" 1.0) |"
    r=$(ratio "${RSS[slipway/$mode]}" "${RSS[nginx/$mode]}"); echo "| $label | memory (RSS) | $r | – | – |"
    r=$(ratio "${CPU[slipway/$mode]}" "${CPU[nginx/$mode]}"); echo "| $label | proxy CPU per request | $r | – | – |"
done
[ -n "${BENCH_NOTE:-}" ] && { echo; echo "$BENCH_NOTE"; }
echo
} > "$WORK/summary.md"

cat "$WORK/summary.md"
if [ -z "${BENCH_NO_RESULTS:-}" ]; then
    if ! grep -q '^## bench/router.sh' "$ROOT/bench/RESULTS.md"; then
        printf '\n## bench/router.sh — the deploy router vs nginx and HAProxy\n\n' >> "$ROOT/bench/RESULTS.md"
    fi
    cat "$WORK/summary.md" >> "$ROOT/bench/RESULTS.md"
fi
