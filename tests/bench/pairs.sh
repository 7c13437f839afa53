#!/usr/bin/env bash
# CPU time per call of two bare_echo servers, in alternating pairs: the same fixed number of
# h2load calls to each, one right after the other, so that both runs of a pair share the
# machine's load of the moment. On a shared two-core VM a server's CPU per call moves by half
# between the rounds of `run.sh`, which runs several servers per round; a pair is over in
# about ten seconds.
#
# Each run: a fresh server, WARMUP calls, then CALLS calls (4 connections, 8 streams each),
# and the server's utime and stime from /proc over those CALLS. Prints each pair (user +
# system µs per call, and B's total against A's), then the ratio's median, min and max.
#
# Usage: tests/bench/pairs.sh
#   env: A="--otel" B="--otel --diagnose --when-late" PAIRS=5 CALLS=200000 WARMUP=20000
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

A=${A---otel}
B=${B---otel --diagnose --when-late}
PAIRS=${PAIRS:-5}
CALLS=${CALLS:-200000}
WARMUP=${WARMUP:-20000}
command -v h2load >/dev/null || {
    echo "h2load is missing: apt-get install -y nghttp2-client" >&2
    exit 1
}
cargo build --release --locked --quiet --example bare_echo
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bare_echo

# WORK, SERVER_PID and its cleanup, free_port, wait_for_port, fast_frame, fast_calls, stop_server.
source tests/bench/lib.sh
fast_frame "$WORK/fast.bin"
TICKS=$(getconf CLK_TCK)

cpu_ticks() { # cpu_ticks PID: its utime and stime, in clock ticks
    awk '{ print $14, $15 }' "/proc/$1/stat"
}

# measure FLAGS: sets USER_US and SYSTEM_US, the server's CPU per call. Not run in a command
# substitution: the server's pid must stay in this shell for the EXIT trap to stop it.
measure() {
    local port before after
    port=$(free_port)
    # shellcheck disable=SC2086 # the flags are words
    "$BIN" "127.0.0.1:$port" 2 $1 >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$port" || { cat "$WORK/server.log" >&2; exit 1; }
    fast_calls "$port" "$WARMUP" >/dev/null
    before=$(cpu_ticks "$SERVER_PID")
    local out
    out=$(fast_calls "$port" "$CALLS")
    after=$(cpu_ticks "$SERVER_PID")
    grep -q "$CALLS succeeded" <<<"$out" || {
        echo "not every call to bare_echo $1 succeeded: $out" >&2
        exit 1
    }
    stop_server
    read -r USER_US SYSTEM_US < <(echo "$before $after" | awk -v t="$TICKS" -v n="$CALLS" \
        '{ printf "%.2f %.2f\n", ($3 - $1) / t / n * 1e6, ($4 - $2) / t / n * 1e6 }')
}

echo "A: bare_echo $A"
echo "B: bare_echo $B"
ratios=()
for pair in $(seq 1 "$PAIRS"); do
    measure "$A"
    a_user=$USER_US a_system=$SYSTEM_US
    measure "$B"
    ratio=$(awk -v au="$a_user" -v as="$a_system" -v bu="$USER_US" -v bs="$SYSTEM_US" \
        'BEGIN { printf "%.3f", (bu + bs) / (au + as) }')
    ratios+=("$ratio")
    echo "pair $pair: A $a_user + $a_system µs, B $USER_US + $SYSTEM_US µs (user + system), B/A $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
    { r[NR] = $1 }
    END {
        median = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "B/A, CPU per call: median %.2f (%.2f–%.2f) over %d pairs\n", median, r[1], r[NR], NR
    }'
