#!/usr/bin/env bash
# End-to-end check of README command 1 on this machine: with a Docker Engine on its usual
# socket (run it under scripts/with-dockerd.sh), `scripts/run.sh` must report a container's
# docker.sock connect within a second.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/sw-smoke.XXXXXX)
probe_pid=""
cleanup() {
  [ -n "$probe_pid" ] && kill "$probe_pid" 2>/dev/null && wait "$probe_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/attacker-image.sh sockwarden-smoke:latest
# Built first, so that the wait below is for the probe's start, not for a cold compile.
cargo build --release -p probe --bins

bash scripts/run.sh --format json --listen 127.0.0.1:0 >"$work/findings.json" 2>"$work/probe.log" &
probe_pid=$!
for _ in $(seq 1 600); do
  grep -q "watching socket.*docker.sock" "$work/probe.log" 2>/dev/null && break
  kill -0 "$probe_pid" 2>/dev/null || { cat "$work/probe.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "watching socket.*docker.sock" "$work/probe.log" || { cat "$work/probe.log" >&2; exit 1; }

cid=$(docker run -d --network none -v /var/run/docker.sock:/var/run/docker.sock \
  sockwarden-smoke:latest /swclient connect /var/run/docker.sock)
sleep 1
docker rm -f "$cid" >/dev/null
if grep -q "\"id\":\"$cid\"" "$work/findings.json"; then
  echo "[smoke] README command 1 reported container ${cid:0:12} within a second: ok"
else
  echo "[smoke] no finding for container $cid within a second" >&2
  cat "$work/findings.json" "$work/probe.log" >&2
  exit 1
fi
