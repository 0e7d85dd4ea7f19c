#!/usr/bin/env bash
# The probe's benchmark: unrelated open()/connect() cost with and without the probe attached
# (ratios, side by side in one run) and detection latency. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p probe --bins --example bench
exec ./target/release/examples/bench
