#!/usr/bin/env bash
# Builds Slipway and starts it on the embedded default (SQLite and local files
# under ./slipway-data, listening on 127.0.0.1:8080) with a local runner, then
# shows it working: pushes a demo image with skopeo, builds a busybox base image,
# creates a demo git repository with a .slipway.yml, runs its pipeline and prints
# where to look. The server keeps running in the foreground; Ctrl-C stops it and
# the runner gracefully. Needs root (the runner runs steps in runc containers).
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${SLIPWAY_LISTEN:-127.0.0.1:8080}
data=${SLIPWAY_DATA_DIR:-$PWD/slipway-data}

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)         # pushes the demo image
command -v runc >/dev/null 2>&1 || missing+=(runc)             # the runner's containers
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static) # the demo's base image
command -v git >/dev/null 2>&1 || missing+=(git)               # fetching repositories, the demo
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

export SLIPWAY_SERVER=$url SLIPWAY_USER=admin SLIPWAY_PASSWORD=$SLIPWAY_ADMIN_PASSWORD
slipway=target/release/slipway
echo "==> building library/busybox:latest from the host's busybox-static"
$slipway image bootstrap busybox

# A runner on this machine. Its work dir must be reachable by container root
# (uid 100000 in the user namespace), so it lives under /var/lib, not here.
# One per data directory, so its runner token matches this server's database.
# Keyed by the data directory and its secrets key (made at the server's first
# start), so a data directory made anew never meets a runner registered with
# the old one.
instance_id=$(cat "$data/secrets.key" 2>/dev/null || true)
runner_dir=${SLIPWAY_RUNNER_DIR:-/var/lib/slipway/runner-$(printf %s "$data$instance_id" | sha256sum | cut -c1-12)}
mkdir -p "$runner_dir" && chmod 711 "$(dirname "$runner_dir")" "$runner_dir"
runner_log="$data/runner.log"
# Its token is kept beside the work dir (<work dir>-credentials), out of
# jobs' reach; older runners kept it in the work dir and move it on start.
if [ -s "$runner_dir-credentials/runner-token" ] || [ -s "$runner_dir/runner-token" ]; then
  token=""
else
  token=$($slipway runner-token create)
fi
SLIPWAY_LOG=info $slipway runner --token "$token" --name local --capacity 2 \
  --work-dir "$runner_dir" >"$runner_log" 2>&1 &
runner=$!
trap 'kill -TERM $runner $server 2>/dev/null; wait $runner $server 2>/dev/null' INT TERM EXIT

# The demo repositories live beside the data directory: the server refuses
# repository sources inside it (its mirrors, blobs and keys).
repos_dir="${data%/}-repos"
demo_repo="$repos_dir/demo"
if [ ! -d "$demo_repo/.git" ]; then
  echo "==> creating the demo repository $demo_repo"
  mkdir -p "$demo_repo"
  git -C "$demo_repo" init -q -b main
  # The README's pipeline example (its first yaml block), as written there.
  awk '/^```yaml$/ { inside = 1; next } inside && /^```$/ { exit } inside' README.md \
    >"$demo_repo/.slipway.yml"
  [ -s "$demo_repo/.slipway.yml" ] || { echo "no yaml example found in README.md"; exit 1; }
  git -C "$demo_repo" add .slipway.yml
  git -C "$demo_repo" -c user.name=Slipway -c user.email=demo@slipway.invalid commit -q -m "demo pipeline"
  $slipway repo add demo --url "$demo_repo"
fi
echo "==> running the demo pipeline (slipway run demo --wait)"
$slipway run demo --wait || echo "(the demo pipeline did not succeed: see $runner_log)"

# A node of cluster `local` on this machine: it runs deployed instances and
# their routers (ports 20000-20999 on 127.0.0.1). One per data directory, like
# the runner. Instances outlive it: `slipway node-reset --work-dir DIR` removes them.
node_dir=${SLIPWAY_NODE_DIR:-/var/lib/slipway/node-$(printf %s "$data$instance_id" | sha256sum | cut -c1-12)}
mkdir -p "$node_dir"
node_log="$data/node.log"
if [ -s "$node_dir-credentials/runner-token" ]; then
  join=()
else
  join=(--token "$($slipway cluster add local)")
fi
SLIPWAY_LOG=info $slipway node "${join[@]}" --name local --work-dir "$node_dir" >"$node_log" 2>&1 &
node=$!
trap 'kill -TERM $node $runner $server 2>/dev/null; wait $node $runner $server 2>/dev/null' INT TERM EXIT

# The deploy demo: the README's deploy example (it builds demo/web, so it is
# the demo repository's next commit), a busybox httpd app serving its
# version, deployed to dev by its pipeline.
if [ ! -s "$demo_repo/Containerfile" ]; then
  echo "==> committing the deploy example to the demo repository"
  # The first yaml block of the README with a deploy section.
  awk '/^```yaml$/ { inside = 1; block = ""; next }
       inside && /^```$/ { inside = 0; if (block ~ /\ndeploy:/) { print block; exit } next }
       inside { block = block "\n" $0 }' README.md | sed 1d >"$demo_repo/.slipway.yml"
  grep -q '^deploy:' "$demo_repo/.slipway.yml" || { echo "no deploy example found in README.md"; exit 1; }
  printf '%s\n' 'FROM busybox' 'COPY version /www/version' 'RUN echo ok > /www/healthz' \
    'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]' >"$demo_repo/Containerfile"
  echo "web v1" >"$demo_repo/version"
  git -C "$demo_repo" add .
  git -C "$demo_repo" -c user.name=Slipway -c user.email=demo@slipway.invalid commit -q -m "web v1"
fi
echo "==> running the deploy example's pipeline (slipway run demo --wait): it deploys to dev"
$slipway run demo --wait >/dev/null || echo "(the deploy example's pipeline did not succeed: see \`$slipway logs\`)"
dev_url=
for _ in $(seq 1 120); do
  dev_url=$(curl -fs -u "admin:$SLIPWAY_ADMIN_PASSWORD" "$url/api/v1/environments?repo=demo" |
    python3 -c 'import json,sys
for e in json.load(sys.stdin):
    ready = [i for i in e["instances"] if i["state"] == "ready" and i["routed"] == "live"]
    if e["name"] == "dev" and e["url"] and e["current"] and len(ready) == e["current"]["replicas"]:
        print(e["url"])' 2>/dev/null || true)
  [ -n "$dev_url" ] && break
  sleep 1
done
if [ -n "$dev_url" ]; then
  $slipway env list demo
  echo "==> $dev_url/version answers: $(curl -fs "$dev_url/version")"
else
  echo "(the demo app is not serving yet: see $node_log and \`$slipway env list demo\`)"
fi
cat <<MSG

Slipway is running at $url with a local runner ($runner_log) and node ($node_log).
Open $url/ in a browser and sign in as admin (password in $password_file). Or try:
  export SLIPWAY_SERVER=$url SLIPWAY_USER=admin SLIPWAY_PASSWORD=\$(cat $password_file)
  $slipway run demo --wait        # again
  $slipway queue; $slipway runners
  $slipway env list demo; $slipway promote demo --to staging --wait; $slipway deployments demo
  curl -u admin:\$SLIPWAY_PASSWORD $url/api/v1/pipelines/1
  skopeo inspect --tls-verify=false --creds admin:\$SLIPWAY_PASSWORD docker://$host/demo/hello:latest
Press Ctrl-C to stop.
MSG
wait $server
