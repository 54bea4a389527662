#!/usr/bin/env bash
# Instructions corral spends per new connection and per kept-alive request,
# counted by valgrind's callgrind: repeatable whatever else the machine does,
# unlike wall-clock rates on a shared 2-core box.
#
#   benches/instructions/run.sh NEW_BINARY [OLD_BINARY]
#
# For each binary and each mode (close, keep), corral runs under callgrind
# in front of one Python backend; a client makes N1 then N2 requests in two
# runs, and (total(N2) - total(N1)) / (N2 - N1) is the marginal cost, with
# start-up and shutdown cancelled out. Needs valgrind and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
N1=${N1:-1000}
N2=${N2:-3000}
cat > "$work/cfg.toml" <<TOML
[listener]
bind = "127.0.0.1:18500"
[admin]
bind = "127.0.0.1:19500"
[runtime]
threads = 1
[health]
interval = "60s"
[log]
level = "warn"
[[backends]]
name = "s1"
address = "127.0.0.1:18501"
TOML

total() { # binary mode requests
    python3 "$here/backend.py" & local backend=$!
    sleep 0.5
    valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$1" run -c "$work/cfg.toml" \
        > "$work/valgrind.log" 2>&1 &
    local corral=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null 127.0.0.1:19500/healthz && break
        sleep 0.3
    done
    python3 "$here/client.py" 50 "$2"
    python3 "$here/client.py" "$3" "$2"
    kill -TERM "$corral"; wait "$corral" || true
    kill "$backend"; wait "$backend" 2>/dev/null || true
    callgrind_annotate "$work/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}

for binary in "$@"; do
    for mode in close keep; do
        a=$(total "$binary" "$mode" "$N1")
        b=$(total "$binary" "$mode" "$N2")
        echo "$binary $mode: $(( (b - a) / (N2 - N1) )) instructions per request"
    done
done
