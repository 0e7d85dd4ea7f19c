#!/usr/bin/env bash
# README command 2: set up from nothing, then check and test everything, including real
# attacks from real Docker containers under the real eBPF probe (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
# step NAME COMMAND...: runs it and keeps its wall time; the times are printed last, so the
# tail of a CI log says where the time went (and where it stopped).
times=()
step() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  times+=("$(printf '%5ss  %s' $((SECONDS - t0)) "$name")")
}
summary() {
  local rc=$?
  echo "[test.sh] wall time per step (exit $rc after ${SECONDS}s):"
  printf '  %s\n' "${times[@]}"
}
trap summary EXIT
step setup bash scripts/setup.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets --locked -- -D warnings
# No module imports one above it in the data flow (ARCHITECTURE.md, "Layers").
step layers python3 scripts/check-layers.py --self-test
step layers python3 scripts/check-layers.py
step "cargo test" cargo test --workspace --exclude probe-ebpf --locked -- --skip debian_vm
# The static release binaries for x86-64 and arm64 (the arm64 VMs run the arm64 probe; the
# images carry both)
step build-static bash scripts/build-static.sh
# The kernel matrix: every backend on Debian's amd64 and arm64 kernels in VMs; prints each
# cell's results and overhead
step "VM kernel matrix" cargo test -p probe --test vm_backends --locked -- --nocapture
# The CRD generator leaves the committed CRDs unchanged, and they pass the Kubernetes
# apiextensions schema (strict: no unknown fields).
step crdgen cargo run -q --locked -p api --bin crdgen
step crdgen git diff --exit-code -- crds/ charts/sockwarden/crds/
step crdgen kubernetes-validate --strict crds/*.yaml
# Helm chart, plain manifests, schema refusals, checkov
step check-chart bash scripts/check-chart.sh
# README command 1 end to end, then the container images (probe image with the DaemonSet's spec)
step smoke-standalone bash scripts/with-dockerd.sh bash scripts/smoke-standalone.sh
step test-images bash scripts/with-dockerd.sh bash scripts/test-images.sh
# A real Kubernetes (1.20.2 from Debian's sources, built once and cached): helm install to
# findings, Events, status, metrics, policy changes, faults, uninstall, and deploy/
step "kubernetes build (cached)" bash scripts/testbed/build-kube.sh >/dev/null
step e2e bash scripts/with-dockerd.sh bash scripts/testbed/e2e.sh
