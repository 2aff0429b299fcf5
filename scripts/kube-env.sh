#!/usr/bin/env bash
# A real Kubernetes control plane for the test suite, on loopback ports only:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose
# pods become Running and Ready without a kubelet).
#
#   scripts/kube-env.sh build   build the binaries into the cache (once)
#   scripts/kube-env.sh up      build if needed, start everything, set up the
#                               namespace, service accounts, Role and kubeconfigs
#   scripts/kube-env.sh down    stop everything started by `up`
#
# The binaries are built from their Go modules at the pinned versions below
# into ${SLIPWAY_CACHE_DIR:-~/.cache/slipway}/kube-<versions>/bin; nothing of
# them is under the repository. `up` writes into $SLIPWAY_KUBE_DIR (default
# /tmp/slipway-kube): admin.kubeconfig, slipway.kubeconfig (the service
# account bound to the documented Role), slipway-limited.kubeconfig (a service
# account bound to less: no Secrets), namespace, ready, and each part's log.
set -euo pipefail

KUBE_VERSION=v1.37.2   # k8s.io/kubernetes; its staging modules at v0.37.2
ETCD_VERSION=v3.7.3    # go.etcd.io/etcd/server/v3
KWOK_VERSION=v0.8.0    # sigs.k8s.io/kwok

cache_root="${SLIPWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/slipway}"
bin_dir="$cache_root/kube-$KUBE_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION/bin"
state_dir="$(realpath -m "${SLIPWAY_KUBE_DIR:-/tmp/slipway-kube}")"

NAMESPACE=slipway-test

log() { echo "==> kube-env: $*"; }
die() { echo "kube-env: $*" >&2; exit 1; }

# ---------------------------------------------------------------- build ----

# go_build_module DIR PKG... : builds PKGs in the module at DIR into DIR/out.
go_build_module() {
  local dir=$1
  shift
  (cd "$dir" && go mod tidy >/dev/null 2>"$dir/tidy.log" || { cat "$dir/tidy.log" >&2; exit 1; })
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" \
    go build -ldflags="-s -w" -o "$dir/out/" "$@")
}

build() {
  mkdir -p "$cache_root"
  # One build at a time per cache (another run may be building it now).
  exec 9>"$cache_root/kube-build.lock"
  flock 9
  if [[ -x "$bin_dir/kube-apiserver" ]]; then
    log "binaries cached in $bin_dir"
    exec 9>&-
    return
  fi
  command -v go >/dev/null || die "the Go toolchain is needed to build the control plane (apt-get install golang-go, or Go >= 1.26)"
  local started=$SECONDS
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/slipway-kube-build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  # The Go these modules need; an older local Go fetches it from the module
  # proxy (GOTOOLCHAIN=auto, the default).
  local go_version=1.26.0

  # Kubernetes: its go.mod replaces each k8s.io/* staging module with a
  # directory of its own repository, so `go install` refuses it. A module of
  # ours requires it and pins each staging module to the matching v0.x.
  log "[1/3] kube-apiserver, kube-controller-manager and kube-scheduler $KUBE_VERSION (several minutes on 2 CPUs)"
  local staging="v0.${KUBE_VERSION#v1.}"
  local kube_mod
  kube_mod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  [[ -f "$kube_mod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION"
  mkdir -p "$work/kube"
  {
    echo "module slipway.local/kube-env/kube"
    echo "go $go_version"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$kube_mod"
  } >"$work/kube/go.mod"
  cat >"$work/kube/deps.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
  go_build_module "$work/kube" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler

  # etcd: the server module holds the program's body (etcdmain); its main
  # package lives in etcd's root module, which is not published for 3.7.
  log "[2/3] etcd $ETCD_VERSION"
  mkdir -p "$work/etcd"
  cat >"$work/etcd/go.mod" <<EOF
module slipway.local/kube-env/etcd
go $go_version
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$work/etcd/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  go_build_module "$work/etcd" .

  log "[3/3] kwok $KWOK_VERSION"
  mkdir -p "$work/kwok"
  cat >"$work/kwok/go.mod" <<EOF
module slipway.local/kube-env/kwok
go $go_version
require sigs.k8s.io/kwok $KWOK_VERSION
EOF
  cat >"$work/kwok/deps.go" <<'EOF'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
EOF
  go_build_module "$work/kwok" sigs.k8s.io/kwok/cmd/kwok

  # Into a temporary name beside the cache, then renamed: an interrupted
  # build never leaves a half cache.
  mkdir -p "$(dirname "$bin_dir")"
  local staged
  staged="$(mktemp -d "$(dirname "$bin_dir")/bin.partial.XXXXXX")"
  cp "$work/kube/out/kube-apiserver" "$work/kube/out/kube-controller-manager" "$work/kube/out/kube-scheduler" \
    "$work/etcd/out/etcd" "$work/kwok/out/kwok" "$staged/"
  chmod 755 "$staged" "$staged"/*
  mv -T "$staged" "$bin_dir"
  rm -rf "$work"
  trap - EXIT
  exec 9>&-
  log "built into $bin_dir in $((SECONDS - started)) s"
}

# ------------------------------------------------------------ up / down ----

# Parts in start order; each leaves $state_dir/NAME.pid and NAME.log.
PARTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
FAKE_NODES=(kwok-node-0 kwok-node-1)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME ARGS...: runs the cached binary NAME in a session of its own
# (so a signal to the test run's process group does not reach it; `down`
# stops it by pid).
start() {
  local name=$1
  shift
  setsid "$bin_dir/$name" "$@" >"$state_dir/$name.log" 2>&1 </dev/null &
  echo $! >"$state_dir/$name.pid"
}

# fail_part NAME WHY: says which part did not come up with the end of its
# log, stops whatever was started, exits.
fail_part() {
  echo "kube-env: $1 $2; the last lines of $state_dir/$1.log:" >&2
  tail -n 30 "$state_dir/$1.log" >&2 || true
  stop_all
  exit 1
}

# wait_until NAME SECONDS CHECK...: runs CHECK until it succeeds. Deadline:
# SECONDS; action: fail_part (also as soon as the part's process exits).
wait_until() {
  local name=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "$state_dir/$name.pid")" 2>/dev/null || fail_part "$name" "exited"
    ((SECONDS < deadline)) || fail_part "$name" "did not come up within $limit s (waiting for: $*)"
    sleep 0.2
  done
}

# api METHOD PATH [JSON]: the Kubernetes API as the static admin token.
api() {
  curl -sS --fail-with-body --max-time 20 --cacert "$state_dir/ca.crt" \
    -H "Authorization: Bearer $(cat "$state_dir/admin.token")" \
    -H 'Content-Type: application/json' -X "$1" \
    "https://127.0.0.1:$(cat "$state_dir/apiserver.port")$2" ${3:+--data-binary "$3"}
}

create() { api POST "$1" "$2" >/dev/null || die "creating $1 failed: $2"; }

node_ready() {
  api GET "/api/v1/nodes/$1" | python3 -c '
import json, sys
status = json.load(sys.stdin).get("status", {})
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])) else 1)'
}

# kubeconfig FILE USER TOKEN: a self-contained kubeconfig (CA embedded).
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slipway-test
  cluster:
    server: https://127.0.0.1:$(cat "$state_dir/apiserver.port")
    certificate-authority-data: $(base64 -w0 <"$state_dir/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: slipway-test
  context:
    cluster: slipway-test
    user: $2
    namespace: $NAMESPACE
current-context: slipway-test
EOF
  chmod 600 "$1"
}

# sa_token NAME: a token for service account NAME (TokenRequest API, 48 h).
sa_token() {
  api POST "/api/v1/namespaces/$NAMESPACE/serviceaccounts/$1/token" \
    '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":172800}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["status"]["token"])'
}

# The Role that Slipway needs in its namespace (README, "Kubernetes
# clusters"): exactly the kinds issue 16 lists. RULES_LIMITED lacks the
# Secrets rule, for the test that a kubeconfig with less is refused.
RULE_DEPLOYMENTS='{"apiGroups":["apps"],"resources":["deployments"],"verbs":["get","list","watch","create","update","patch","delete"]}'
RULE_REPLICASETS='{"apiGroups":["apps"],"resources":["replicasets"],"verbs":["get","list","watch"]}'
RULE_PODS='{"apiGroups":[""],"resources":["pods"],"verbs":["get","list","watch"]}'
RULE_EVENTS='{"apiGroups":[""],"resources":["events"],"verbs":["get","list","watch"]}'
RULE_SERVICES='{"apiGroups":[""],"resources":["services"],"verbs":["get","list","watch","create","update","patch","delete"]}'
RULE_SECRETS='{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list","watch","create","update","patch","delete"]}'
RULES="[$RULE_DEPLOYMENTS,$RULE_REPLICASETS,$RULE_PODS,$RULE_EVENTS,$RULE_SERVICES,$RULE_SECRETS]"
RULES_LIMITED="[$RULE_DEPLOYMENTS,$RULE_REPLICASETS,$RULE_PODS,$RULE_EVENTS,$RULE_SERVICES]"

# service_account NAME RULES: the account, its Role and RoleBinding, and
# NAME.kubeconfig with a token for it.
service_account() {
  local ns_api="/api/v1/namespaces/$NAMESPACE" rbac_api="/apis/rbac.authorization.k8s.io/v1/namespaces/$NAMESPACE"
  create "$ns_api/serviceaccounts" "{\"metadata\":{\"name\":\"$1\"}}"
  create "$rbac_api/roles" "{\"metadata\":{\"name\":\"$1\"},\"rules\":$2}"
  create "$rbac_api/rolebindings" "{\"metadata\":{\"name\":\"$1\"},
    \"roleRef\":{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":\"$1\"},
    \"subjects\":[{\"kind\":\"ServiceAccount\",\"name\":\"$1\",\"namespace\":\"$NAMESPACE\"}]}"
  local token
  token="$(sa_token "$1")" || die "no token for service account $1"
  kubeconfig "$state_dir/$1.kubeconfig" "system:serviceaccount:$NAMESPACE:$1" "$token"
}

# kwok's stages: fake nodes become Ready; pods become Running and Ready,
# except pods marked "never ready" (annotation slipway.test/never-ready, an
# image reference containing "never-ready", or a container with an environment
# variable named SLIPWAY_TEST_NEVER_READY: a deploy's `env` sets that), which
# run but stay un-Ready
# forever, like a version whose readiness probe never passes; deleted pods go.
write_stages() {
  local never_ready='(.metadata.annotations["slipway.test/never-ready"] != null) or ([.spec.containers.[].image | test("never-ready")] | any) or ([.spec.containers.[] | (.env // []) | .[] | .name == "SLIPWAY_TEST_NEVER_READY"] | any)'
  cat >"$state_dir/stages.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-ready
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select(.type == "Ready") | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok fake node
        lastHeartbeatTime: {{ \$now | Quote }}
        lastTransitionTime: {{ \$now | Quote }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      - type: Hostname
        address: {{ .metadata.name | Quote }}
      allocatable: {cpu: "32", memory: 64Gi, pods: "110"}
      capacity: {cpu: "32", memory: 64Gi, pods: "110"}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Pending]
    - key: '$never_ready'
      operator: NotIn
      values: ["true"]
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ \$now | Quote }}}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName false (or .metadata.uid "") (or .metadata.name "") (or .metadata.namespace "") | Quote }}
      phase: Running
      startTime: {{ \$now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-never-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Pending]
    - key: '$never_ready'
      operator: In
      values: ["true"]
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ \$now | Quote }}}
      - type: ContainersReady
        status: "False"
        reason: ContainersNotReady
        message: "containers with unready status: [{{ range \$i, \$c := .spec.containers }}{{ if \$i }} {{ end }}{{ \$c.name }}{{ end }}]"
        lastTransitionTime: {{ \$now | Quote }}
      - type: Ready
        status: "False"
        reason: ContainersNotReady
        message: "containers with unready status: [{{ range \$i, \$c := .spec.containers }}{{ if \$i }} {{ end }}{{ \$c.name }}{{ end }}]"
        lastTransitionTime: {{ \$now | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ \$now | Quote }}}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName false (or .metadata.uid "") (or .metadata.name "") (or .metadata.namespace "") | Quote }}
      phase: Running
      startTime: {{ \$now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
  next:
    delete: true
EOF
}

up() {
  build
  command -v openssl >/dev/null || die "openssl is needed (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
  if compgen -G "$state_dir/*.pid" >/dev/null; then
    die "$state_dir holds a control plane already: run '$0 down' first (with the same SLIPWAY_KUBE_DIR)"
  fi
  local started=$SECONDS
  mkdir -p "$state_dir"
  chmod 700 "$state_dir"
  cd "$state_dir"

  log "certificates and keys (openssl)"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 7 \
    -subj "/CN=slipway-test-kube-ca" 2>/dev/null
  openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out apiserver.crt -days 7 -extfile apiserver.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  openssl rand -hex 32 >admin.token
  echo "$(cat admin.token),admin,admin,system:masters" >tokens.csv
  chmod 600 ./*.key admin.token tokens.csv

  local etcd_port etcd_peer_port apiserver_port kcm_port scheduler_port kwok_port
  etcd_port=$(free_port) etcd_peer_port=$(free_port) apiserver_port=$(free_port)
  kcm_port=$(free_port) scheduler_port=$(free_port) kwok_port=$(free_port)
  echo "$apiserver_port" >apiserver.port

  log "etcd on 127.0.0.1:$etcd_port"
  start etcd --name slipway-test --data-dir "$state_dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "slipway-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level warn
  wait_until etcd 60 curl -sf --max-time 5 "http://127.0.0.1:$etcd_port/health"

  log "kube-apiserver on https://127.0.0.1:$apiserver_port"
  start kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
    --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key \
    --token-auth-file tokens.csv --anonymous-auth=false --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --disable-admission-plugins TaintNodesByCondition --profiling=false
  wait_until kube-apiserver 120 api GET /readyz
  kubeconfig admin.kubeconfig admin "$(cat admin.token)"

  local delegated=(--kubeconfig admin.kubeconfig --authentication-kubeconfig admin.kubeconfig
    --authorization-kubeconfig admin.kubeconfig --leader-elect=false --bind-address 127.0.0.1)
  log "kube-controller-manager on 127.0.0.1:$kcm_port"
  start kube-controller-manager "${delegated[@]}" --secure-port "$kcm_port" --cert-dir "$state_dir/kcm-certs" \
    --controllers deployment-controller,replicaset-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller,endpointslice-controller \
    --root-ca-file ca.crt --use-service-account-credentials=false
  wait_until kube-controller-manager 60 curl -skf --max-time 5 "https://127.0.0.1:$kcm_port/healthz"

  log "kube-scheduler on 127.0.0.1:$scheduler_port"
  start kube-scheduler "${delegated[@]}" --secure-port "$scheduler_port" --cert-dir "$state_dir/scheduler-certs"
  wait_until kube-scheduler 60 curl -skf --max-time 5 "https://127.0.0.1:$scheduler_port/healthz"

  log "kwok on 127.0.0.1:$kwok_port with fake nodes ${FAKE_NODES[*]}"
  write_stages
  start kwok --kubeconfig admin.kubeconfig --config stages.yaml --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$kwok_port" --node-ip 127.0.0.1 --cidr 10.244.0.0/16
  wait_until kwok 60 curl -sf --max-time 5 "http://127.0.0.1:$kwok_port/healthz"
  local node
  for node in "${FAKE_NODES[@]}"; do
    create /api/v1/nodes "{\"metadata\":{\"name\":\"$node\",
      \"annotations\":{\"kwok.x-k8s.io/node\":\"fake\"},
      \"labels\":{\"type\":\"kwok\",\"kubernetes.io/hostname\":\"$node\"}}}"
  done
  for node in "${FAKE_NODES[@]}"; do
    wait_until kwok 60 node_ready "$node"
  done

  log "namespace $NAMESPACE, service accounts slipway (the Role) and slipway-limited (no Secrets)"
  create /api/v1/namespaces "{\"metadata\":{\"name\":\"$NAMESPACE\"}}"
  # Pods need the namespace's default service account, made by the controller.
  wait_until kube-controller-manager 60 api GET "/api/v1/namespaces/$NAMESPACE/serviceaccounts/default"
  service_account slipway "$RULES"
  service_account slipway-limited "$RULES_LIMITED"
  echo "$NAMESPACE" >namespace
  touch ready
  log "up in $((SECONDS - started)) s; export SLIPWAY_TEST_KUBE_DIR=$state_dir"
}

# stop_all: SIGTERM to each part still running (its pid file, and only if
# that pid still runs our binary), SIGKILL after a 20 s deadline each.
stop_all() {
  local part pid deadline
  for ((i = ${#PARTS[@]} - 1; i >= 0; i--)); do
    part=${PARTS[i]}
    [[ -f "$state_dir/$part.pid" ]] || continue
    pid=$(cat "$state_dir/$part.pid")
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$bin_dir/$part")" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 20))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "kube-env: $part (pid $pid) ignored SIGTERM for 20 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
      fi
    fi
    rm -f "$state_dir/$part.pid"
  done
}

down() {
  [[ -d "$state_dir" ]] || return 0
  stop_all
  rm -rf "$state_dir"
  log "down"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  *) die "usage: $0 build|up|down" ;;
esac
