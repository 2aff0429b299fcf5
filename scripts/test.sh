#!/usr/bin/env bash
# Runs Slipway's whole test suite. Installs what the tests need when it is
# missing: Debian packages (real registry clients, runc, headless Chromium
# with chromedriver for the browser tests, openssl and curl for the HTTPS
# tests) with apt-get, the Python `oras`
# client with pip, schemathesis in a venv, and crates with cargo. Starts a
# real Kubernetes control plane (scripts/kube-env.sh: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built once from their Go
# modules into the cache) for the tests of the kubernetes cluster kind, and
# stops it afterwards, also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A tools=(
  [skopeo]=skopeo
  [buildah]=buildah
  [podman]=podman
  [runc]=runc
  [busybox]=busybox-static
  [python3]=python3
  [pip3]=python3-pip
  [git]=git
  [openssl]=openssl
  [curl]=curl
  [go]=golang-go
  [chromium]=chromium
  [chromedriver]=chromium-driver
)
missing=()
for tool in "${!tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${tools[$tool]}")
done
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! python3 -c 'import oras' >/dev/null 2>&1; then
  echo "==> installing the Python oras client"
  pip3 install -q oras 2>/dev/null || pip3 install -q --break-system-packages oras
fi

# schemathesis (server/tests/api_contract.rs fuzzes the REST API against its
# OpenAPI document), pinned, in its own venv under the cache directory.
schemathesis_version=4.32.5
schemathesis_venv="${XDG_CACHE_HOME:-$HOME/.cache}/slipway/schemathesis-$schemathesis_version"
if [[ ! -x "$schemathesis_venv/bin/st" ]]; then
  echo "==> installing schemathesis $schemathesis_version"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  fi
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi
export SLIPWAY_SCHEMATHESIS="$schemathesis_venv/bin/st"

# The Kubernetes control plane, in a directory of this run's own; the tests
# find it through SLIPWAY_TEST_KUBE_DIR.
SLIPWAY_KUBE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/slipway-kube.XXXXXX")"
export SLIPWAY_KUBE_DIR SLIPWAY_TEST_KUBE_DIR="$SLIPWAY_KUBE_DIR"
trap 'scripts/kube-env.sh down' EXIT
scripts/kube-env.sh up

echo "==> cargo test --workspace"
cargo test --workspace --locked
