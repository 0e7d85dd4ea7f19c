#!/usr/bin/env bash
# Makes the attacker test image without a registry: busybox-static plus the static client.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-sockwarden-smoke:latest}
work=$(mktemp -d /tmp/sw-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/var/run" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
gcc -static -O2 -o "$work/rootfs/swclient" probe/tests/client/swclient.c
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
docker import "$work/rootfs.tar" "$tag" >/dev/null
