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
# The build that ships (static, musl: scripts/build-static.sh), which also reuses its
# dependencies instead of compiling a second release tree.
target=x86_64-unknown-linux-musl
cargo build --release --locked --target $target -p probe --bins --example bench --example pipeline_bench --example flood_bench --example keys_bench
./target/$target/release/examples/bench
./target/$target/release/examples/pipeline_bench
./target/$target/release/examples/flood_bench
./target/$target/release/examples/keys_bench
