#!/usr/bin/env bash
# Builds the images and proves them: both answer --version; the probe image, run with exactly
# the privileges, host mounts and arguments of the operator's DaemonSet, detects an attack
# from another container. Run under scripts/with-dockerd.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
bash scripts/images.sh >/dev/null
grep -qx "sockwarden-probe $version" <<<"$(docker run --rm "sockwarden-probe:$version" --version)"
grep -qx "sockwarden-operator $version" <<<"$(docker run --rm "sockwarden-operator:$version" --version)"
echo "[images] sockwarden-probe:$version and sockwarden-operator:$version answer --version"

# Each tag is an OCI image index with exactly linux/amd64 and linux/arm64, and each
# architecture's image, loaded from the index by itself, answers --version with its own
# binary: arm64's runs under qemu user emulation (binfmt_misc), which this registers.
bash scripts/binfmt-arm64.sh
for name in probe operator; do
  archive="target/images/sockwarden-$name-$version.oci.tar"
  python3 scripts/check-image-index.py "$archive" "$version"
  for arch in amd64 arm64; do
    tag="sockwarden-$name:$version-$arch"
    skopeo copy -q --override-arch "$arch" "oci-archive:$archive:$version" "docker-daemon:$tag"
    [ "$(docker image inspect -f '{{.Architecture}}' "$tag")" = "$arch" ]
    out=$(docker run --rm "$tag" --version 2>/dev/null)
    [ "$out" = "sockwarden-$name $version" ] || { echo "[images] $tag --version said: $out" >&2; exit 1; }
    docker rmi -f "$tag" >/dev/null
    echo "[images] sockwarden-$name:$version resolves to linux/$arch, which answers --version"
  done
done

# The chart's default image references are these tags.
grep -q "^appVersion: \"$version\"" charts/sockwarden/Chart.yaml

opts=()
args=()
seen_sep=""
while IFS= read -r line; do
  if [ "$line" = "--" ]; then seen_sep=1; continue; fi
  if [ -n "$seen_sep" ]; then args+=("$line"); else opts+=("$line"); fi
done < <("target/x86_64-unknown-linux-musl/release/sockwarden-operator" render-daemonset \
           --probe-image "sockwarden-probe:$version" | python3 scripts/daemonset-to-docker.py)

name=sw-probe-image-test
# The container's log, captured whole: `docker logs | grep -q` fails under pipefail when
# grep exits early and docker logs is still writing (SIGPIPE), which made this check flaky.
logs() { docker logs "$name" 2>&1; }
docker rm -f "$name" >/dev/null 2>&1 || true
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" "${opts[@]}" "sockwarden-probe:$version" "${args[@]}" >/dev/null
for _ in $(seq 1 120); do
  grep -q "watching socket" <<<"$(logs)" && break
  sleep 0.5
done
grep -q "watching socket" <<<"$(logs)" || { logs >&2; echo "[images] the probe never watched a socket" >&2; exit 1; }
# Its self-test (a canary connect its backend must report) passed with the DaemonSet's mounts.
if grep -q 'self-test' <<<"$(logs)"; then
  echo "[images] the probe's self-test failed with the DaemonSet's pod spec" >&2
  docker logs "$name" >&2
  exit 1
fi

bash scripts/attacker-image.sh sockwarden-smoke:latest
cid=$(docker run -d --network none -v /var/run/docker.sock:/tmp/innocent.sock \
  sockwarden-smoke:latest /swclient connect /tmp/innocent.sock)
for _ in $(seq 1 40); do
  grep -q "\"id\":\"$cid\"" <<<"$(logs)" && break
  sleep 0.25
done
docker rm -f "$cid" >/dev/null
if grep "\"id\":\"$cid\"" <<<"$(logs)" | grep '"requestedPath":"/tmp/innocent.sock"' >/dev/null; then
  echo "[images] the probe image with the DaemonSet's pod spec detected container ${cid:0:12}: ok"
else
  echo "[images] no finding for $cid from the probe image" >&2
  docker logs "$name" >&2
  exit 1
fi
