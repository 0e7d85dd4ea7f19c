#!/usr/bin/env bash
# Runs a command with a Docker Engine on its usual socket (/run/docker.sock), starting one
# for the duration when none answers. Test images come from `docker import`; no registry.
set -euo pipefail
started=""
log=$(mktemp /tmp/sw-dockerd.XXXXXX.log)
stop() {
  if [ -n "$started" ]; then
    kill "$started" 2>/dev/null || true
    wait "$started" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap stop EXIT
if ! docker version >/dev/null 2>&1; then
  echo "[with-dockerd] starting dockerd on /run/docker.sock" >&2
  dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false >"$log" 2>&1 &
  started=$!
  for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && break; sleep 0.25; done
  docker version >/dev/null 2>&1 || { cat "$log" >&2; exit 1; }
fi
"$@"
