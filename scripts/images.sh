#!/usr/bin/env bash
# Builds the container images with the local Docker Engine, from static (musl) binaries;
# nothing comes from a registry. Tags follow the workspace version (= the chart's appVersion).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
target=x86_64-unknown-linux-musl
cargo build --release --locked --target "$target" -p probe -p operator --bins >&2
for name in probe operator; do
  ctx=target/images/$name
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "target/$target/release/sockwarden-$name" "$ctx/"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  docker build -q -t "sockwarden-$name:$version" -f "images/$name.Dockerfile" "$ctx" >&2
  echo "sockwarden-$name:$version"
done
