#!/usr/bin/env bash
# Instructions per call, counted by callgrind: the engine's cost measured the way a noisy
# two-core machine cannot spoil. CPU time per call wanders by ±15 % between runs here;
# instruction counts repeat to within about 1 %.
#
# Four servers (examples/bare_echo.rs, release): bare, --diagnose, --otel, --otel --diagnose.
# Each runs under `valgrind --tool=callgrind`; h2load sends WARMUP calls, the counters are
# zeroed, h2load sends CALLS more (4 connections, 8 streams each), and the counters are
# dumped: user-space instructions per call. Kernel time (the same system calls in every
# server) is not in them, so the CPU-time ratios of run.sh come out lower than these.
#
# Not for `holdup serve` or `--arrival`: under valgrind the server is ~50x slower, requests
# queue a millisecond or more for a worker, and the engine then blames them, which it does
# not do at that rate outside valgrind.
#
# Usage: tests/bench/instructions.sh   (env: CALLS=10000 WARMUP=2000)
set -euo pipefail
cd "$(dirname "$0")/../.."

CALLS=${CALLS:-10000}
WARMUP=${WARMUP:-2000}
for tool in valgrind callgrind_control h2load; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install -y valgrind nghttp2-client" >&2
        exit 1
    }
done
cargo build --release --locked --quiet --example bare_echo
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bare_echo

WORK=$(mktemp -d)
PID=""
cleanup() {
    if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# One gRPC frame: uncompressed, length 3, FastRequest{message: "x"}.
printf '\x00\x00\x00\x00\x03\x0a\x01x' >"$WORK/fast.bin"

count() { # count FLAGS...: prints instructions per call
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
        "$BIN" "127.0.0.1:$port" 2 "$@" >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.2
    done
    local load=(h2load -c 4 -m 8 -d "$WORK/fast.bin" -H 'content-type: application/grpc'
        -H 'te: trailers' "http://127.0.0.1:$port/holdup.v1.Lab/Fast")
    "${load[@]}" -n "$WARMUP" >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    "${load[@]}" -n "$CALLS" | grep -q "$CALLS succeeded" || {
        echo "not every call succeeded" >&2
        exit 1
    }
    callgrind_control -d "$PID" >/dev/null 2>&1
    sleep 0.5
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    local total
    total=$(callgrind_annotate "$WORK/cg.out.1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    rm -f "$WORK"/cg.out*
    echo $((total / CALLS))
}

bare=$(count)
diagnosed=$(count --diagnose)
otel=$(count --otel)
otel_diagnosed=$(count --otel --diagnose)
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
echo "instructions per call ($CALLS calls after $WARMUP):"
echo "| server | per call | ratio |"
echo "|---|---|---|"
echo "| bare | $bare | 1 |"
echo "| bare + engine | $diagnosed | $(ratio "$diagnosed" "$bare") to bare |"
echo "| OpenTelemetry | $otel | $(ratio "$otel" "$bare") to bare |"
echo "| OpenTelemetry + engine | $otel_diagnosed | $(ratio "$otel_diagnosed" "$otel") to OpenTelemetry |"
