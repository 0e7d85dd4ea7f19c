#!/usr/bin/env bash
# Builds the container images, amd64 and arm64, from static (musl) binaries; nothing comes
# from a registry. Each image is one tag that resolves to both architectures: buildah builds
# the Dockerfile once per platform into a manifest list, written as an OCI image index to
#   target/images/sockwarden-<name>-<version>.oci.tar   (oci-archive, tag <version>)
# and the host's architecture is loaded from that archive into the local Docker Engine
# (which the tests and the test bed run), so both run the index's image: Docker's image ID
# is the amd64 manifest's config digest.
# Prints the Docker tags. Tags follow the workspace version (= the chart's appVersion).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
bash scripts/build-static.sh
declare -A rust_target=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
for name in probe operator; do
  image="sockwarden-$name:$version"
  archive="target/images/sockwarden-$name-$version.oci.tar"
  # a fresh list each run: buildah would otherwise add to the previous run's entries
  buildah manifest rm "$image" >/dev/null 2>&1 || true
  buildah rmi "$image" >/dev/null 2>&1 || true
  for arch in amd64 arm64; do
    ctx=target/images/$name-$arch
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "target/${rust_target[$arch]}/release/sockwarden-$name" "$ctx/"
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
    buildah build -q --platform "linux/$arch" --manifest "$image" \
      -f "images/$name.Dockerfile" "$ctx" >/dev/null
  done
  rm -f "$archive"
  buildah manifest push -q --all --format oci "$image" "oci-archive:$archive:$version" >&2
  skopeo copy -q "oci-archive:$archive:$version" "docker-daemon:$image" >&2
  echo "$image"
done
