#!/usr/bin/env bash
# Installs everything building and testing sockwarden needs, from nothing.
# Idempotent: each step checks first, so a second run takes seconds.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs Debian packages)" >&2
  exit 1
fi

# --- Debian packages: container runtimes and what test images are made of ---
need_pkgs=()
for pkg in docker.io containerd busybox-static gcc libc6-dev protobuf-compiler qemu-system-x86 cpio binutils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# --- Rust: nightly with rust-src builds the eBPF crate (build-std) ---
command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
  || rustup component add rust-src --toolchain nightly

# --- bpf-linker, built against the LLVM that nightly rustc itself ships ---
# It must match nightly's LLVM, so the check compares the LLVM it was built for.
sysroot=$(rustc +nightly --print sysroot)
llvm_lib=$(cd "$sysroot/lib" && ls libLLVM-*.so 2>/dev/null | head -n1)
[ -n "$llvm_lib" ] || { echo "nightly rustc ships no libLLVM-*.so under $sysroot/lib" >&2; exit 1; }
llvm_major=$(echo "$llvm_lib" | sed -E 's/^libLLVM-([0-9]+).*/\1/')
llvm_name=${llvm_lib#lib}; llvm_name=${llvm_name%.so}
stamp="$HOME/.cargo/bin/.bpf-linker-llvm"
if ! command -v bpf-linker >/dev/null || [ "$(cat "$stamp" 2>/dev/null)" != "$llvm_name" ]; then
  log "building bpf-linker against $llvm_name (about a minute or two)"
  RUSTFLAGS="-L $sysroot/lib -l dylib=$llvm_name -C link-arg=-Wl,-rpath,$sysroot/lib" \
    cargo +nightly install bpf-linker --version 0.13.0 --locked --force \
      --no-default-features --features "llvm-$llvm_major,no-llvm-linking"
  echo "$llvm_name" >"$stamp"
fi
log "toolchain ready (bpf-linker for $llvm_name)"

# --- kubernetes-validate: offline schema checks of the CRDs and manifests ---
if ! python3 -m pip show kubernetes-validate 2>/dev/null | grep -q '^Version: 1.37.0$'; then
  log "installing kubernetes-validate from PyPI"
  python3 -m pip install -q --root-user-action=ignore kubernetes-validate==1.37.0
fi

# --- tracefs: the probe attaches to tracepoints by name ---
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi
