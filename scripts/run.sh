#!/usr/bin/env bash
# README command 1: build and start the probe on this machine (standalone, no cluster).
# Findings go to stdout as JSON lines (text on a terminal), logs to stderr.
# Extra arguments go to `sockwarden-probe run`, e.g. --detect-open or --socket PATH=RUNTIME.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
cargo build --release -p probe --bins >&2
exec ./target/release/sockwarden-probe run "$@"
