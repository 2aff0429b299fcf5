#!/usr/bin/env bash
# Builds Slipway and starts it on the embedded default (SQLite and local files
# under ./slipway-data, listening on 127.0.0.1:8080), then shows it working:
# pushes a small demo image with skopeo and lists what the registry holds.
# The server keeps running in the foreground; Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${SLIPWAY_LISTEN:-127.0.0.1:8080}
data=${SLIPWAY_DATA_DIR:-$PWD/slipway-data}

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)         # pushes the demo image
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config) # building git2's https
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> building slipway (release)"
cargo build --release --locked -p slipway-server

password_file="$data/admin-password"
mkdir -p "$data"
if [ ! -s "$password_file" ] && [ -z "${SLIPWAY_ADMIN_PASSWORD:-}" ]; then
  # First start: choose the admin password and keep it where the demo can read it.
  python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$password_file"
  chmod 600 "$password_file"
fi
export SLIPWAY_ADMIN_PASSWORD=${SLIPWAY_ADMIN_PASSWORD:-$(cat "$password_file")}

log="$data/server.log"
target/release/slipway server --listen "$listen" --data-dir "$data" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' INT TERM EXIT

url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | cut -d' ' -f3 || true)
  [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "server did not start:"; cat "$log"; exit 1; }
host=${url#http://}

echo "==> Slipway is up at $url (data in $data, log in $log)"
echo "==> pushing a demo image to $host/demo/hello:latest"
demo=$(mktemp -d)
python3 scripts/oci-layout.py "$demo/image" --layers 2 --size 65536 --tag latest >/dev/null
skopeo copy --quiet --dest-tls-verify=false --dest-creds "admin:$SLIPWAY_ADMIN_PASSWORD" \
  "oci:$demo/image:latest" "docker://$host/demo/hello:latest"
rm -rf "$demo"
echo "==> the registry now holds:"
curl -fs -u "admin:$SLIPWAY_ADMIN_PASSWORD" "$url/v2/_catalog"; echo
curl -fs -u "admin:$SLIPWAY_ADMIN_PASSWORD" "$url/v2/demo/hello/tags/list"; echo
cat <<MSG

Slipway is running. Try:
  skopeo inspect --tls-verify=false --creds admin:\$(cat $password_file) docker://$host/demo/hello:latest
  SLIPWAY_USER=admin SLIPWAY_PASSWORD=\$(cat $password_file) target/release/slipway token create --server $url --scope pull
Press Ctrl-C to stop.
MSG
wait $server
