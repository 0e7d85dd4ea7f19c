#!/usr/bin/env bash
# The test bed's node: runs as the first process of `unshare --mount --propagation private`
# and prepares a mount namespace in which containerd and the kubelet cannot touch the host:
#   /run       a private tmpfs (the runtimes' sockets and shims live there, not on the host)
#   /var/log   and /var/lib: bind mounts of directories under STATE (the kubelet hard-codes
#              /var/log/pods and /var/lib/kubelet/device-plugins)
#   four sysctls the kubelet would otherwise rewrite on the host: files holding the values it
#              wants, bind-mounted over /proc/sys/...
#   /run/docker.sock  the host's Docker socket, when given: pods attack the real daemon
# Mounts are made shared afterwards, as on a real node (the probe's HostToContainer mounts
# need it). Then it sleeps; the daemons join with `nsenter --mount=/proc/<pid>/ns/mnt`.
# usage: node-ns.sh STATE [HOST_DOCKER_SOCKET]
set -euo pipefail
state=${1:?usage: node-ns.sh STATE [HOST_DOCKER_SOCKET]}
docker_sock=${2:-}
mkdir -p "$state/var-log" "$state/var-lib" "$state/sysctl"
if [ -n "$docker_sock" ]; then
  # keep a handle on the host's socket before /run is covered
  mkdir -p "$state/host"
  touch "$state/host/docker.sock"
  mount --bind "$docker_sock" "$state/host/docker.sock"
fi
mount -t tmpfs -o mode=755,size=256m sockwarden-node-run /run
mkdir -p /run/containerd /run/lock
mount --bind "$state/var-log" /var/log
mount --bind "$state/var-lib" /var/lib
if [ -n "$docker_sock" ]; then
  touch /run/docker.sock
  mount --bind "$state/host/docker.sock" /run/docker.sock
fi
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1; do
  key=${kv%=*}
  echo "${kv#*=}" >"$state/sysctl/${key//\//.}"
  mount --bind "$state/sysctl/${key//\//.}" "/proc/sys/$key"
done
mount --make-rshared /
echo "ready (pid $$)"
exec sleep infinity
