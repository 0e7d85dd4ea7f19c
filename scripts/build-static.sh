#!/usr/bin/env bash
# Builds the static (musl) release binaries, probe and operator, for each architecture the
# images carry: x86_64 natively, aarch64 with Debian's cross gcc (.cargo/config.toml). The
# eBPF object is built from the same sources for each (aya-build passes the target's arch).
# usage: build-static.sh [RUST_TARGET...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
for target in "${targets[@]}"; do
  cargo build --release --locked --target "$target" -p probe -p operator --bins >&2
done
