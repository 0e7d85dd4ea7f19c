#!/usr/bin/env bash
# README command 2: set up from nothing, then check and test everything, including real
# attacks from real Docker containers under the real eBPF probe (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# No module imports one above it in the data flow (ARCHITECTURE.md, "Layers").
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py
cargo test --workspace --exclude probe-ebpf --locked -- --skip debian_vm
# The static release binaries for x86-64 and arm64 (the arm64 VMs run the arm64 probe; the
# images carry both)
bash scripts/build-static.sh
# The kernel matrix: every backend on Debian's amd64 and arm64 kernels in VMs; prints each
# cell's results and overhead
cargo test -p probe --test vm_backends --locked -- --nocapture
# The CRD generator leaves the committed CRDs unchanged, and they pass the Kubernetes
# apiextensions schema (strict: no unknown fields).
cargo run -q --locked -p api --bin crdgen
git diff --exit-code -- crds/ charts/sockwarden/crds/
kubernetes-validate --strict crds/*.yaml
# Helm chart, plain manifests, schema refusals, checkov
bash scripts/check-chart.sh
# README command 1 end to end, then the container images (probe image with the DaemonSet's spec)
bash scripts/with-dockerd.sh bash scripts/smoke-standalone.sh
bash scripts/with-dockerd.sh bash scripts/test-images.sh
# A real Kubernetes (1.20.2 from Debian's sources, built once and cached): helm install to
# findings, Events, status, metrics, policy changes, faults, uninstall, and deploy/
bash scripts/with-dockerd.sh bash scripts/testbed/e2e.sh
