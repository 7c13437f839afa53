#!/usr/bin/env bash
# Instructions per call, counted by callgrind: the engine's cost measured the way a noisy
# two-core machine cannot spoil. CPU time per call wanders by ±15 % between runs here;
# instruction counts repeat to within about 1 %.
#
# Six servers (examples/bare_echo.rs, release): bare, --diagnose, --otel, --otel --diagnose,
# and the two with the engine again with --when-late (its headers only on late calls).
# Each runs under `valgrind --tool=callgrind`; h2load sends WARMUP calls, the counters are
# zeroed, h2load sends CALLS more (4 connections, 8 streams each), and the counters are
# dumped: user-space instructions per call. Kernel time (the same system calls in every
# server) is not in them, so the CPU-time ratios of run.sh come out lower than these.
#
# Under valgrind a call runs about 50x slower. The engine's rules that fire on wall time (a
# CPU-clock read at most every 2 ms, a poll of 200 us or more remembered, the clocks read
# after a poll of 1 ms) would then fire about 50 times as often per call as at full speed:
# 5 136 schedstat reads per 10 000 calls against 208 at full speed (strace), and 34 646 polls
# remembered: about 700 instructions a call that no call pays outside valgrind. So the
# servers are built with `--cfg holdup_under_valgrind`, which scales those three bounds by 50
# (`clock::SLOWDOWN`; then 152 reads and 198 polls remembered), in a target directory of
# their own (`valgrind` under the usual one). The config's 1 ms detail bound is not scaled: a
# few calls pass it and take the full header, 19 of 10 000 in one count (callgrind's call
# count of `Report::header_value`). The counts are those of the brief path, as at full speed.
#
# Not for `holdup serve` or `--arrival`: there requests queue a millisecond or more for a
# worker under valgrind, and the engine then blames them, which it does not do at that rate
# outside valgrind.
#
# Usage: tests/bench/instructions.sh   (env: CALLS=10000 WARMUP=2000)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

CALLS=${CALLS:-10000}
WARMUP=${WARMUP:-2000}
for tool in valgrind callgrind_control callgrind_annotate h2load python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install -y valgrind nghttp2-client python3" >&2
        exit 1
    }
done
VALGRIND_TARGET=${CARGO_TARGET_DIR:-target}/valgrind
# The project's rustflags (`.cargo/config.toml`) and the scaling cfg, in a target directory
# of their own, so that the usual build is not rebuilt.
BUILD=(cargo build --release --locked --quiet --example bare_echo
    --target-dir "$VALGRIND_TARGET"
    --config 'build.rustflags = ["--cfg", "tokio_unstable", "--cfg", "holdup_under_valgrind"]')
"${BUILD[@]}"
BIN=$VALGRIND_TARGET/release/examples/bare_echo

# WORK, SERVER_PID and its cleanup, free_port, wait_for_port, fast_frame, fast_calls, stop_server.
source tests/bench/lib.sh
fast_frame "$WORK/fast.bin"

fail() { # fail MESSAGE: says why, with the server's log, and stops
    echo "$1" >&2
    cat "$WORK/server.log" >&2 || true
    exit 1
}

# count FLAGS...: sets PER_CALL to the server's instructions per call. Not run in a command
# substitution: the server's pid must stay in this shell for the EXIT trap to stop it.
count() {
    local port
    port=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
        "$BIN" "127.0.0.1:$port" 2 "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$port" 300 || fail "bare_echo $* did not listen under valgrind"
    fast_calls "$port" "$WARMUP" >/dev/null
    callgrind_control -z "$SERVER_PID" >"$WORK/control.log" 2>&1 ||
        fail "callgrind_control could not zero the counters: $(cat "$WORK/control.log")"
    local out
    out=$(fast_calls "$port" "$CALLS")
    grep -q "$CALLS succeeded" <<<"$out" || fail "not every call succeeded: $out"
    callgrind_control -d "$SERVER_PID" >"$WORK/control.log" 2>&1 ||
        fail "callgrind_control could not dump the counters: $(cat "$WORK/control.log")"
    sleep 0.5
    stop_server
    local total
    total=$(callgrind_annotate "$WORK/cg.out.1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    [[ "$total" =~ ^[0-9]+$ ]] || fail "no instruction total in the dump of bare_echo $*"
    rm -f "$WORK"/cg.out*
    PER_CALL=$((total / CALLS))
}

count
bare=$PER_CALL
count --diagnose
diagnosed=$PER_CALL
count --otel
otel=$PER_CALL
count --otel --diagnose
otel_diagnosed=$PER_CALL
count --diagnose --when-late
diagnosed_late=$PER_CALL
count --otel --diagnose --when-late
otel_diagnosed_late=$PER_CALL
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "instructions per call ($CALLS calls after $WARMUP):"
echo "| server | per call | ratio |"
echo "|---|---|---|"
echo "| bare | $bare | 1 |"
echo "| bare + engine | $diagnosed | $(ratio "$diagnosed" "$bare") to bare |"
echo "| OpenTelemetry | $otel | $(ratio "$otel" "$bare") to bare |"
echo "| OpenTelemetry + engine | $otel_diagnosed | $(ratio "$otel_diagnosed" "$otel") to OpenTelemetry |"
echo "| bare + engine, WhenLate | $diagnosed_late | $(ratio "$diagnosed_late" "$bare") to bare |"
echo "| OpenTelemetry + engine, WhenLate | $otel_diagnosed_late | $(ratio "$otel_diagnosed_late" "$otel") to OpenTelemetry |"
