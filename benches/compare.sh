#!/usr/bin/env bash
# Side-by-side comparison of corral with HAProxy (TCP mode), nginx's stream
# module and a direct connection, at 1 and 2 proxy threads, plus the Node.js
# worker scenario (corral spawning 2 workers vs HAProxy in front of 2 vs Node's
# cluster module). Builds corral first. See benches/README.md for the figures.
#
#   benches/compare.sh [SECONDS] [--corral-before PATH] [--corral PATH] [compare.py options]
#
#   SECONDS                length of each measurement (default 5); also --seconds S
#   --corral-before PATH   add a row for a second corral binary (e.g. built before
#                          a change) to every table: before/after from one run
#   --corral PATH          measure this binary instead of building target/release/corral
#   anything else          passed to every benches/compare.py run (e.g. --idle 1000)
#
# Needs: apt-get install haproxy nginx libnginx-mod-stream wrk iperf3 nodejs
# Everything listens on 127.0.0.1 and is stopped when a run ends or on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=5
corral=""
before=()
extra=()
case "${1:-}" in ''|*[!0-9]*) ;; *) seconds="$1"; shift ;; esac
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --corral-before) before=(--corral-before "$2"); shift 2 ;;
        --corral-before=*) before=(--corral-before "${1#*=}"); shift ;;
        --corral) corral="$2"; shift 2 ;;
        --corral=*) corral="${1#*=}"; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done

if [ -z "$corral" ]; then
    cargo build --release
    corral=target/release/corral
fi

# Ctrl-C: compare.py stops what it started and exits; then so does this script.
trap 'exit 130' INT TERM

status=0
compare() {
    python3 benches/compare.py --corral "$corral" ${before[@]+"${before[@]}"} --seconds "$seconds" \
        ${extra[@]+"${extra[@]}"} "$@" || status=$?
}

for threads in 1 2; do
    echo
    echo "== proxy scenario, --threads $threads"
    compare --threads "$threads"
done
echo
echo "== node scenario (2 workers)"
compare --scenario node
exit "$status"
