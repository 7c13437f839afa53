#!/usr/bin/env bash
# CPU time per call of two bare_echo servers, measured in alternating bursts: both servers
# run for the whole measure, and each round sends the same number of h2load calls to one and
# then the other (A then B in odd rounds, B then A in even ones), reading each server's CPU
# time (its threads' schedstat, in ns: user and system) around its burst. A burst of 20 000
# calls takes about half a second, so whatever the shared two-core VM does to the speed of
# the moment, both servers get the same of it; and the rounds are many, so the ratio of the
# totals has an interval that says how far to trust it.
#
# Why not fresh servers in pairs, as this script did before: one run of each per pair, about
# five seconds apart, gave pair ratios from 0.83 to 1.49 for the same two servers (30 pairs),
# a median that moved by three points between runs, and no interval.
#
# The rounds come in two sessions of fresh servers, half each: in the first A's server starts
# first, in the second B's. With one build on both sides, the server started second read
# about 1.5 % cheaper (four runs of 60 rounds: 0.973 to 0.992), a bias toward B that the
# sessions cancel.
#
# Prints each round (µs of CPU per call, user + system, and B against A), then B's total
# against A's with a 95 % bootstrap interval over the rounds, and the rounds' median, min and
# max.
#
# Usage: tests/bench/pairs.sh
#   env: A, B (bare_echo's flags; A="" is the bare server; defaults: --otel, and
#        --otel --diagnose --when-late), ROUNDS=40, CALLS=20000 per burst, WARMUP=20000;
#        A_BIN, B_BIN: another build of bare_echo for A or B (the change an engine commit
#        makes: the same flags, two builds), else this tree's release build;
#        RPS: calls a second per connection (4 of them), for a server below saturation
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

A=${A---otel}
B=${B---otel --diagnose --when-late}
ROUNDS=${ROUNDS:-40}
CALLS=${CALLS:-20000}
WARMUP=${WARMUP:-20000}
for tool in h2load python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install -y nghttp2-client python3" >&2
        exit 1
    }
done
cargo build --release --locked --quiet --example bare_echo
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bare_echo
A_BIN=${A_BIN:-$BIN}
B_BIN=${B_BIN:-$BIN}

# WORK, SERVER_PID and its cleanup, free_port, wait_for_port, fast_frame, fast_calls.
source tests/bench/lib.sh
fast_frame "$WORK/fast.bin"

# Server B's pid: SERVER_PID is A's, stopped by lib.sh's trap; this one stops B as well.
B_PID=""
trap 'if [[ -n "$B_PID" ]]; then kill "$B_PID" 2>/dev/null || true; fi; bench_cleanup' EXIT

start() { # start BIN FLAGS LOG: a server on a free port; sets STARTED_PID and STARTED_PORT
    STARTED_PORT=$(free_port)
    # shellcheck disable=SC2086 # the flags are words
    "$1" "127.0.0.1:$STARTED_PORT" 2 $2 >"$3" 2>&1 &
    STARTED_PID=$!
}

# cpu_ns PID: the CPU time of its threads, in ns. Not /proc/PID/stat's utime and stime:
# those come in clock ticks (10 ms), a few percent of a burst.
cpu_ns() {
    cat /proc/"$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f\n", ns }'
}

# burst PID PORT: CALLS calls to the server; prints the CPU ns they cost it.
burst() {
    local before after out
    before=$(cpu_ns "$1")
    out=$(fast_calls "$2" "$CALLS")
    after=$(cpu_ns "$1")
    grep -q "$CALLS succeeded" <<<"$out" || {
        echo "not every call to the server on port $2 succeeded: $out" >&2
        exit 1
    }
    echo $((after - before))
}

# start_a, start_b: each server on a free port, until it listens. SERVER_PID is A's (stopped by
# lib.sh's trap), B_PID B's.
start_a() {
    start "$A_BIN" "$A" "$WORK/a.log"
    SERVER_PID=$STARTED_PID a_port=$STARTED_PORT
    wait_for_port "$a_port" || { cat "$WORK/a.log" >&2; exit 1; }
}
start_b() {
    start "$B_BIN" "$B" "$WORK/b.log"
    B_PID=$STARTED_PID b_port=$STARTED_PORT
    # wait_for_port watches SERVER_PID for an early exit: B's, for this wait.
    SERVER_PID=$B_PID wait_for_port "$b_port" || { cat "$WORK/b.log" >&2; exit 1; }
}

# session FIRST FROM TO: both servers, FIRST's (a or b) started first, warmed, and rounds FROM
# to TO in turn; then both stopped.
session() {
    if [[ $1 == a ]]; then
        start_a
        start_b
    else
        SERVER_PID=""
        start_b
        start_a
    fi
    fast_calls "$a_port" "$WARMUP" >/dev/null
    fast_calls "$b_port" "$WARMUP" >/dev/null
    local round a b
    for round in $(seq "$2" "$3"); do
        if ((round % 2)); then
            a=$(burst "$SERVER_PID" "$a_port")
            b=$(burst "$B_PID" "$b_port")
        else
            b=$(burst "$B_PID" "$b_port")
            a=$(burst "$SERVER_PID" "$a_port")
        fi
        echo "$a $b" >>"$WORK/rounds"
        awk -v a="$a" -v b="$b" -v n="$CALLS" -v r="$round" -v first="$1" 'BEGIN {
            printf "round %d (%s started first): A %.2f µs, B %.2f µs of CPU per call, B/A %.3f\n",
                r, toupper(first), a / n / 1e3, b / n / 1e3, a ? b / a : 0
        }'
    done
    kill "$B_PID" 2>/dev/null || true
    wait "$B_PID" 2>/dev/null || true
    B_PID=""
    stop_server
}

echo "A: $A_BIN $A"
echo "B: $B_BIN $B"
echo "$ROUNDS rounds of $CALLS calls to each, in two sessions"
: >"$WORK/rounds"
half=$((ROUNDS / 2))
session a 1 "$half"
session b $((half + 1)) "$ROUNDS"
python3 - "$WORK/rounds" <<'EOF'
import random, statistics, sys

rounds = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
def ratio(rs):
    return sum(b for _, b in rs) / max(1, sum(a for a, _ in rs))
# Resampling the rounds, with a fixed seed: the same rounds print the same interval.
rng = random.Random(1)
boots = sorted(ratio(rng.choices(rounds, k=len(rounds))) for _ in range(2000))
per_round = [b / a for a, b in rounds if a]
print(f"B/A, CPU per call: {ratio(rounds):.3f} of the totals "
      f"(95 % interval {boots[50]:.3f}–{boots[1949]:.3f}); rounds: median "
      f"{statistics.median(per_round):.2f} ({min(per_round):.2f}–{max(per_round):.2f}) "
      f"over {len(rounds)}")
EOF
