#!/usr/bin/env bash
# Side-by-side comparison of corral with HAProxy and nginx's stream module,
# in one run per thread count, plus the Node.js worker scenario (corral
# spawning 2 workers vs HAProxy in front of 2 vs Node's cluster module).
#
#   benches/compare.sh [seconds]        # default 5 s per figure
#
# Needs: apt-get install haproxy nginx libnginx-mod-stream wrk iperf3 (and
# node for the worker scenario; it is skipped with a message without it).
# The script it drives lives in the project's shared/bench/compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
compare="${CORRAL_COMPARE:-../shared/bench/compare.py}"
[ -f "$compare" ] || { echo "compare.py not found at $compare (set CORRAL_COMPARE)"; exit 1; }
cargo build --release --quiet
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for threads in 1 2; do
    echo
    echo "== --threads $threads"
    python3 "$compare" --corral target/release/corral --threads "$threads" --seconds "$seconds"
done
echo
echo "== node scenario (2 workers)"
python3 "$compare" --corral target/release/corral --scenario node --seconds "$seconds"
