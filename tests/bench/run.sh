#!/usr/bin/env bash
# The benchmark of issue 4, part 3. Not a test: it prints measured ratios.
#
#   1. Fast max throughput and p99: `holdup serve` (full instrumentation) vs a bare tonic echo
#      server built from this repo (examples/bare_echo.rs), same closed-loop load.
#   2. The load generator: `holdup load` vs h2load (Debian package nghttp2-client) against the
#      same server, same connections and concurrency: achieved rate. Measured against the bare
#      server (where the generators, not the server, set the pace) and against holdup serve.
#   3. tokio-console's instrumentation: `holdup serve` vs `holdup serve --no-console`.
#
# Servers run one at a time, each loaded alone, so no two measurements share the cores.
# On a small machine the load generator and the server share the cores: the ratios compare
# like with like, the absolute numbers only describe this machine.
#
# Usage: tests/bench/run.sh            (env: DURATION=10 WARMUP=2 CONCURRENCY=32 CONNECTIONS=4)
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"

cargo build --release --quiet --bin holdup --example bare_echo

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

start() { # start NAME COMMAND...: runs a server in the background, waits for its port
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$PORT"
}

stop() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

holdup_serve() { # holdup_serve [EXTRA FLAGS]: full instrumentation unless told otherwise
    # exec: the background job *is* the server, so that stop's signal reaches it.
    exec "$BIN/holdup" serve --listen "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$(free_port)" \
        --console-addr "127.0.0.1:$(free_port)" --seed-rows 1000 "$@"
}

# Closed-loop Fast load with holdup's own generator; prints "throughput p99_ms".
holdup_load() {
    "$BIN/holdup" load --target "http://127.0.0.1:$PORT" fast \
        --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --json >"$WORK/load.json"
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["main"]; print(round(m["throughput"]), m["latency"]["p99_ms"], sum(m["errors"].values()))' "$WORK/load.json"
}

# The same load with h2load; prints its requests per second.
h2load_rate() {
    # One gRPC frame: uncompressed, length 3, FastRequest{message: "x"}.
    printf '\x00\x00\x00\x00\x03\x0a\x01x' >"$WORK/fast.bin"
    h2load -c "$CONNECTIONS" -m $((CONCURRENCY / CONNECTIONS)) -D "$DURATION" --warm-up-time="$WARMUP" \
        -d "$WORK/fast.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$PORT/holdup.v1.Lab/Fast" >"$WORK/h2load.txt"
    awk '/^finished in/ { gsub(",", "", $4); printf "%.0f\n", $4 }' "$WORK/h2load.txt"
}

# h2load's rate, or nothing when h2load is not installed.
maybe_h2load() {
    if command -v h2load >/dev/null; then h2load_rate; fi
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

echo "load: Fast, closed loop, $CONCURRENCY concurrent over $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s; $(nproc) cores"

PORT=$(free_port)
start bare "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2
result=$(holdup_load)
read -r bare_rate bare_p99 bare_errors <<<"$result"
h2_bare=$(maybe_h2load)
stop
echo "bare tonic echo:             ${bare_rate} calls/s, p99 ${bare_p99} ms, ${bare_errors} errors; h2load ${h2_bare:-n/a} req/s"

PORT=$(free_port)
start full holdup_serve
result=$(holdup_load)
read -r full_rate full_p99 full_errors <<<"$result"
h2_full=$(maybe_h2load)
stop
echo "holdup serve (console on):   ${full_rate} calls/s, p99 ${full_p99} ms, ${full_errors} errors; h2load ${h2_full:-n/a} req/s"

PORT=$(free_port)
start quiet holdup_serve --no-console
result=$(holdup_load)
read -r quiet_rate quiet_p99 quiet_errors <<<"$result"
stop
echo "holdup serve --no-console:   ${quiet_rate} calls/s, p99 ${quiet_p99} ms, ${quiet_errors} errors"

echo
echo "holdup (console on) / bare throughput:   $(ratio "$full_rate" "$bare_rate")"
echo "holdup (console on) / bare p99:          $(ratio "$full_p99" "$bare_p99")"
echo "holdup (no console) / bare throughput:   $(ratio "$quiet_rate" "$bare_rate")"
echo "holdup (no console) / bare p99:          $(ratio "$quiet_p99" "$bare_p99")"
if [[ -n "$h2_bare" && -n "$h2_full" ]]; then
    echo "holdup load / h2load rate, bare server:  $(ratio "$bare_rate" "$h2_bare")"
    echo "holdup load / h2load rate, holdup serve: $(ratio "$full_rate" "$h2_full")"
else
    echo "holdup load / h2load rate:               n/a (install h2load: apt-get install nghttp2-client)"
fi
echo "console on / off throughput:             $(ratio "$full_rate" "$quiet_rate")"
