#!/usr/bin/env bash
# A real single-node Kubernetes 1.20.2 on this machine, for the end-to-end tests:
#
#   cluster.sh up      etcd, kube-apiserver (token auth, Node,RBAC), controller manager and
#                      scheduler on 127.0.0.1; a private containerd and the kubelet in a
#                      mount namespace of their own (the "node"); waits for node Ready
#   cluster.sh down    stops exactly what `up` started (recorded PIDs), the pods' containers
#                      and cgroups; never kills anything by name
#   cluster.sh env     prints the environment (KUBECONFIG, paths) as shell assignments
#
# Binaries come from build-kube.sh (cached outside the clone). State lives in $SW_TESTBED
# (default /var/tmp/sockwarden-testbed), wiped by `up`. Network rule of these machines:
# everything binds to 127.0.0.1 and pods that talk to the API server use hostNetwork.
#
# The node namespace has a private tmpfs on /run, so the host's runtimes do not leak in;
# the host's Docker socket (if any) is bind-mounted at /run/docker.sock there, so pods can
# attack the real docker.sock through a hostPath, and containerd's socket sits at the usual
# /run/containerd/containerd.sock there (the probe's CRI fallback finds it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TB=${SW_TESTBED:-/var/tmp/sockwarden-testbed}
RUN=$TB/run
LOGS=$TB/logs
PKI=$TB/pki
# "localhost": the API server reaches the kubelet by host name, which must resolve to 127.0.0.1
NODE_NAME=localhost
API_PORT=16443
ETCD_PORT=23790
ETCD_PEER_PORT=23800
KCM_PORT=17257
SCHED_PORT=17259
KUBELET_PORT=17250
KUBELET_HEALTHZ=17248
CGROUP_ROOT=sockwarden-testbed

log() { printf '[testbed %5ss] %s\n' "$(( $(date +%s) - ${t0:-$(date +%s)} ))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

env_vars() {
  local bin
  bin=$(cat "$TB/bin-dir" 2>/dev/null || echo "")
  cat <<EOF
export SW_TESTBED=$TB
export KUBECONFIG=$TB/admin.kubeconfig
export SW_KUBE_BIN=$bin
export SW_NODE_NAME=$NODE_NAME
export SW_API_PORT=$API_PORT
export SW_CONTAINERD_SOCK=/proc/$(cat "$RUN/pids/node-ns" 2>/dev/null || echo 0)/root/run/containerd/containerd.sock
EOF
}

kctl() { "$BIN/kubectl" --kubeconfig "$TB/admin.kubeconfig" --cache-dir "$RUN/kubectl-cache" "$@"; }

wait_until() { # seconds what command...
  local limit=$1 what=$2
  shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${limit}s waiting for $what (logs: $LOGS)"
    sleep 0.5
  done
  log "$what"
}

start() { # name command...: runs in the background, PID recorded
  local name=$1
  shift
  nohup "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/pids/$name"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop() { # name
  local pid
  pid=$(cat "$RUN/pids/$1" 2>/dev/null) || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && { log "$1 did not stop in 15 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$RUN/pids/$1"
}

pki() { # a throw-away CA, the API server's serving certificate, its kubelet client cert,
        # the service-account key pair, static tokens and kubeconfigs
  mkdir -p "$PKI"
  (
    cd "$PKI"
    ossl() { openssl "$@" 2>/dev/null; }
    ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=sockwarden-testbed-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature
    sign() { # name subject extensions
      ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
      printf '%s\n' "$3" >"$1.ext"
      ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" -extfile "$1.ext"
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
    sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
    ossl genrsa -out sa.key 2048
    ossl rsa -in sa.key -pubout -out sa.pub
  )
  local tokens="" entry file name group token
  # kubeconfig file | user name | group
  for entry in "admin|admin|system:masters" \
               "controller-manager|system:kube-controller-manager|" \
               "scheduler|system:kube-scheduler|" \
               "kubelet|system:node:$NODE_NAME|system:nodes"; do
    IFS='|' read -r file name group <<<"$entry"
    token=$(openssl rand -hex 24)
    tokens+="$token,$name,$name${group:+,\"$group\"}"$'\n'
    cat >"$TB/$file.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $file
  user: {token: "$token"}
contexts:
- name: $file
  context: {cluster: testbed, user: $file}
current-context: $file
EOF
  done
  printf '%s' "$tokens" >"$PKI/tokens.csv"
  chmod 600 "$PKI/tokens.csv" "$TB"/*.kubeconfig
}

node_configs() {
  mkdir -p "$RUN/cni"
  cat >"$RUN/cni/10-loopback.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "testbed-loopback", "plugins": [{"type": "loopback"}]}
EOF
  # containerd: its own root/state; inside the node namespace /run is private, so the usual
  # socket path is ours alone.
  cat >"$RUN/containerd.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "/run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "sockwarden-testbed/pause:1"
  # CAP_SYS_RESOURCE is not in these machines' bounding set: runc cannot lower oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni"
EOF
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
evictionHard: {}
evictionSoft: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
maxPods: 50
resolvConf: /etc/resolv.conf
EOF
}

up() {
  t0=$(date +%s)
  for f in "$RUN"/pids/*; do
    [ -f "$f" ] && alive "$(cat "$f")" && die "a test bed is already running ($f); run '$0 down' first"
  done
  BIN=$(bash "$here/build-kube.sh")
  local pkgs=(etcd-server containernetworking-plugins containerd runc openssl curl) missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  rm -rf "$RUN" "$LOGS"
  mkdir -p "$RUN/pids" "$LOGS"
  echo "$BIN" >"$TB/bin-dir"
  pki
  node_configs

  start etcd etcd --name testbed --data-dir "$RUN/etcd" --logger zap --log-outputs stderr \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls ""
  wait_until 30 "etcd healthy" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  start_apiserver
  wait_until 90 "kube-apiserver ready" kctl get --raw /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$TB/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=$KCM_PORT --port=0 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true --controllers='*,-nodeipam,-service,-route,-cloud-node-lifecycle' \
    --flex-volume-plugin-dir="$RUN/flexvolume" --node-monitor-grace-period=20s --v=1
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$TB/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=$SCHED_PORT --port=0 --leader-elect=false --v=1
  wait_until 60 "controller manager healthy" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
  wait_until 60 "scheduler healthy" curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"

  # The node: cgroup roots for the kubelet (cpuset needs its parent's cpus/mems), a private
  # mount namespace, containerd and the kubelet inside it.
  for c in /sys/fs/cgroup/*/; do
    [ -f "$c/cgroup.procs" ] || continue
    mkdir -p "$c$CGROUP_ROOT"
    if [ -f "$c/cpuset.cpus" ]; then
      cat "$c/cpuset.cpus" >"$c$CGROUP_ROOT/cpuset.cpus"
      cat "$c/cpuset.mems" >"$c$CGROUP_ROOT/cpuset.mems"
    fi
  done
  mkdir -p "$RUN/ns" "$RUN/kubelet"
  local docker_sock=""
  [ -S /run/docker.sock ] && docker_sock=/run/docker.sock
  start node-ns unshare --mount --propagation private -- bash "$here/node-ns.sh" "$RUN/ns" "$docker_sock"
  wait_until 10 "node mount namespace ready" grep -q '^ready' "$LOGS/node-ns.log"
  local ns
  ns=$(cat "$RUN/pids/node-ns")
  start containerd nsenter --mount="/proc/$ns/ns/mnt" -- containerd --config "$RUN/containerd.toml"
  local sock=/proc/$ns/root/run/containerd/containerd.sock
  wait_until 30 "containerd serving" ctr -a "$sock" version
  start kubelet nsenter --mount="/proc/$ns/ns/mnt" -- "$BIN/kubelet" \
    --config="$RUN/kubelet.yaml" --kubeconfig="$TB/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
    --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" --volume-plugin-dir="$RUN/kubelet/volume-plugins" \
    --hostname-override=$NODE_NAME --pod-infra-container-image=sockwarden-testbed/pause:1 --v=1
  wait_until 60 "kubelet healthy" curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ/healthz"
  wait_until 90 "node $NODE_NAME Ready" sh -c \
    "'$BIN/kubectl' --kubeconfig '$TB/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_until 60 "default service account exists" kctl -n default get serviceaccount default
  log "cluster up"
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port=$API_PORT --insecure-port=0 \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname,InternalIP --allow-privileged=true --profiling=false --v=1
}

down() {
  t0=$(date +%s)
  [ -d "$RUN/pids" ] || return 0
  stop kubelet
  local ns
  ns=$(cat "$RUN/pids/node-ns" 2>/dev/null || true)
  local sock=/proc/$ns/root/run/containerd/containerd.sock
  if [ -n "$ns" ] && alive "$(cat "$RUN/pids/containerd" 2>/dev/null)"; then
    local ctr=(ctr -a "$sock" -n k8s.io)
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # Our containerd's shims outlive it; they are the ones whose command line names its config
  # namespace socket under our node namespace (-address /run/containerd/containerd.sock) and
  # whose mount namespace is the node's.
  if [ -n "$ns" ] && [ -e "/proc/$ns/ns/mnt" ]; then
    local node_mnt
    node_mnt=$(readlink "/proc/$ns/ns/mnt")
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$node_mnt" ] || continue
      [ "${p#/proc/}" = "$ns" ] && continue
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
  fi
  stop node-ns
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  for c in /sys/fs/cgroup/*/$CGROUP_ROOT; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$c" ] && log "warning: could not remove $c"
  done
  # overlay mounts of our containerd live in the node namespace and went with it
  log "cluster down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_vars ;;
  apiserver-stop) t0=$(date +%s); stop kube-apiserver; log "kube-apiserver stopped" ;;
  apiserver-start)
    t0=$(date +%s); BIN=$(cat "$TB/bin-dir"); start_apiserver
    wait_until 90 "kube-apiserver ready" kctl get --raw /readyz ;;
  *) echo "usage: $0 up|down|env|apiserver-stop|apiserver-start" >&2; exit 2 ;;
esac
