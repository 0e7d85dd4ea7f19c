#!/usr/bin/env bash
# Builds the images the test bed's pods run, with the local Docker Engine (no registry), and
# imports them into the test bed's containerd (namespace k8s.io):
#   sockwarden-testbed/pause:1        the pod sandbox (scripts/testbed/pause.c, static)
#   sockwarden-testbed/attacker:1     busybox-static + the static test client (swclient)
#   sockwarden-probe:<v>, sockwarden-operator:<v>   from scripts/images.sh
# Needs a Docker Engine (run under scripts/with-dockerd.sh) and a running test bed.
# usage: images.sh CONTAINERD_SOCKET
set -euo pipefail
cd "$(dirname "$0")/../.."
sock=${1:?usage: images.sh CONTAINERD_SOCKET}
work=$(mktemp -d /tmp/sw-tb-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/pause"
gcc -static -Os -o "$work/pause/pause" scripts/testbed/pause.c
strip "$work/pause/pause"
tar -C "$work/pause" -cf "$work/pause.tar" pause
docker import -c 'ENTRYPOINT ["/pause"]' "$work/pause.tar" sockwarden-testbed/pause:1 >/dev/null

bash scripts/attacker-image.sh sockwarden-testbed/attacker:1

images=(sockwarden-testbed/pause:1 sockwarden-testbed/attacker:1)
while read -r img; do images+=("$img"); done < <(bash scripts/images.sh)
for img in "${images[@]}"; do
  # docker save names images docker.io/...; the pods refer to the same full names.
  docker save "$img" | ctr -a "$sock" -n k8s.io images import --all-platforms - >/dev/null
  echo "$img"
done
