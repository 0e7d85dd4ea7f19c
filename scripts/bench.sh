#!/usr/bin/env bash
# The probe's benchmarks (needs root):
#  1. unrelated open()/connect() cost with and without the probe attached (ratios, side by
#     side in one run) and detection latency;
#  2. the user-space pipeline under a flood: events/s on one core and resident memory;
#  3. hostile load: one cgroup floods ENXIO opens under --detect-open while another connects
#     100 times to a watched socket; fails unless all 100 connects are reported;
#  4. hostile keys: 10,000 distinct 4 KiB findings with the API server down; fails unless RSS
#     stays <= 128 MiB and another pod's finding is written once the API server is back.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p probe --bins --example bench --example pipeline_bench --example flood_bench --example keys_bench
./target/release/examples/bench
./target/release/examples/pipeline_bench
./target/release/examples/flood_bench
./target/release/examples/keys_bench
