#!/usr/bin/env bash
# Deploy benchmark: wall time of a rolling deploy of 3 instances, of a blue/green
# switch of 3, and of a warm rollback, each against the floor (one instance to
# ready, alone), on a real server, runner and node (runc) on this machine.
#
# Usage: bench/deploy.sh      (as root)
# Environment:
#   BENCH_RUNS=3          runs (medians are reported)
#   BENCH_PROFILE=release the cargo profile of the slipway binary (or debug)
#   BENCH_NO_RESULTS=1    do not append the summary to bench/RESULTS.md
set -Eeuo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${BENCH_PROFILE:-release}
RUNS=${BENCH_RUNS:-3}
for tool in runc busybox git python3; do
  command -v "$tool" >/dev/null || { apt-get update -qq; apt-get install -y -qq runc busybox-static git python3; break; }
done
cd "$ROOT"
if [[ $PROFILE == release ]]; then
  cargo build --release -q -p slipway-server
else
  cargo build -q -p slipway-server
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/slipway"
out=$(BENCH_RUNS=$RUNS python3 bench/deploy_measure.py "$BIN")
echo "$out"
if [[ -z ${BENCH_NO_RESULTS:-} ]]; then
  {
    echo
    echo "### Deploy benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"); profile $PROFILE."
    echo "Command: \`BENCH_RUNS=$RUNS BENCH_PROFILE=$PROFILE BENCH_APP=${BENCH_APP:-graceful} bash bench/deploy.sh\`"
    echo
    echo '```'
    echo "$out"
    echo '```'
  } >>bench/RESULTS.md
fi
