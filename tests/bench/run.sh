#!/usr/bin/env bash
# The benchmark of issue 13. Not a test: it prints measured ratios, medians over rounds.
#
# Ten servers, the same closed-loop `Fast` load (`holdup load`), release build (the two
# -late ones only when SERVERS names them):
#   bare      examples/bare_echo.rs: tonic alone, no telemetry, no lab runtime
#   handover  the same, each handler a task on a second runtime of 2 workers, awaited
#             (examples/bare_echo.rs --hand-over): what holdup's design (handlers on a runtime
#             of their own) costs before any measurement; the floor under holdup serve
#   diagnosed the same with holdup's diagnosis engine added as the guide (docs/your-service.md) tells a user to
#             (examples/bare_echo.rs --diagnose): the engine's own cost per call
#   arrival   the same engine, served by holdup_diagnose::arrival::serve (--arrival): kernel
#             receive timestamps, each request stamped in its connection task, one runtime;
#             the serve loop `holdup serve` builds on, without the Lab's own layers
#   otel      the bare echo with an OpenTelemetry layer (trace ids, no export; --otel) and a
#             server span per request with the RPC conventions (tonic's trace_fn), as a
#             service that traces has
#   otel-diagnosed  the same layer with the engine (--otel --diagnose), whose request span is
#             then the server span: the engine's cost on a service that already traces
#   diagnosed-late, otel-diagnosed-late  diagnosed and otel-diagnosed with the engine's
#             headers only on late calls (--when-late: ResponseHeaders::WhenLate)
# SERVERS picks some of them (default: all but the two -late ones), e.g. SERVERS="bare diagnosed otel otel-diagnosed".
#   quiet     holdup serve --no-console
#   default   holdup serve (tokio-console on, as shipped)
# Each round loads every server once, alone, in an order that rotates from round to round
# (so that no server always runs first or last on a machine whose load drifts). Per run:
# throughput, p99, the server's CPU time per call (utime + stime from /proc over the calls
# completed), its RSS after the run, and the rate h2load (and ghz, where installed) reaches
# against the same server with the same connections and concurrency.
#
# The generator and the server share the cores: the ratios compare like with like in the
# same run; the absolute numbers only describe this machine.
#
# Usage: tests/bench/run.sh   (env: ROUNDS=3 DURATION=10 WARMUP=2 CONCURRENCY=32 CONNECTIONS=4)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"
CLK_TCK=$(getconf CLK_TCK)

# Apart: built together, the example's dev-dependencies would change the features (and so
# the code) of holdup's own dependencies; the binary measured is the one users build.
cargo build --release --locked --quiet --bin holdup
cargo build --release --locked --quiet --example bare_echo

# WORK, SERVER_PID and its cleanup, free_port, wait_for_port, fast_frame.
source tests/bench/lib.sh

holdup_serve() { # holdup_serve [EXTRA FLAGS]
    # exec: the background job *is* the server, so that stop's signal reaches it.
    OTEL_TRACES_EXPORTER=none exec "$BIN/holdup" serve --listen "127.0.0.1:$PORT" \
        --metrics-addr "127.0.0.1:$(free_port)" --console-addr "127.0.0.1:$(free_port)" \
        --seed-rows 1000 "$@"
}

start() { # start SERVER: runs it in the background on $PORT, waits for the port
    case $1 in
        bare) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 >"$WORK/$1.log" 2>&1 & ;;
        diagnosed) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --diagnose >"$WORK/$1.log" 2>&1 & ;;
        arrival) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --arrival >"$WORK/$1.log" 2>&1 & ;;
        otel) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --otel >"$WORK/$1.log" 2>&1 & ;;
        otel-diagnosed) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --otel --diagnose >"$WORK/$1.log" 2>&1 & ;;
        diagnosed-late) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --diagnose --when-late >"$WORK/$1.log" 2>&1 & ;;
        otel-diagnosed-late) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --otel --diagnose --when-late >"$WORK/$1.log" 2>&1 & ;;
        handover) "$BIN/examples/bare_echo" "127.0.0.1:$PORT" 2 --hand-over >"$WORK/$1.log" 2>&1 & ;;
        quiet) holdup_serve --no-console >"$WORK/$1.log" 2>&1 & ;;
        default) holdup_serve >"$WORK/$1.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    wait_for_port "$PORT"
}

stop() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$SERVER_PID/status"; }

# Closed-loop Fast load with holdup's own generator, for `seconds`; writes $WORK/load.json.
holdup_load() { # holdup_load SECONDS
    "$BIN/holdup" load --target "http://127.0.0.1:$PORT" fast \
        --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
        --duration "$1s" --warmup 0s --json >"$WORK/load.json"
}

# The same load with h2load; prints its requests per second.
h2load_rate() {
    fast_frame "$WORK/fast.bin"
    h2load -c "$CONNECTIONS" -m $((CONCURRENCY / CONNECTIONS)) -D "$DURATION" --warm-up-time="$WARMUP" \
        -d "$WORK/fast.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$PORT/holdup.v1.Lab/Fast" >"$WORK/h2load.txt"
    awk '/^finished in/ { gsub(",", "", $4); printf "%.0f\n", $4 }' "$WORK/h2load.txt"
}

# The same load with ghz; prints its requests per second.
ghz_rate() {
    ghz --insecure --proto proto/holdup/v1/lab.proto --import-paths proto \
        --call holdup.v1.Lab/Fast --data '{"message":"x"}' \
        --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
        --duration "$((WARMUP + DURATION))s" --format json "127.0.0.1:$PORT" >"$WORK/ghz.json"
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rps"]))' "$WORK/ghz.json"
}

run() { # run ROUND SERVER: one measured run; appends a row to $WORK/rows.tsv
    local round=$1 server=$2
    PORT=$(free_port)
    start "$server"
    holdup_load "$WARMUP" # warm-up: connections, caches, the allocator's pages
    local cpu_before cpu_after rss h2 ghz
    cpu_before=$(cpu_ticks)
    holdup_load "$DURATION"
    cpu_after=$(cpu_ticks)
    rss=$(rss_kb)
    h2=$(if command -v h2load >/dev/null; then h2load_rate; else echo nan; fi)
    ghz=$(if command -v ghz >/dev/null; then ghz_rate; else echo nan; fi)
    stop
    python3 - "$WORK/load.json" "$round" "$server" "$((cpu_after - cpu_before))" "$CLK_TCK" \
        "$rss" "$h2" "$ghz" >>"$WORK/rows.tsv" <<'PY'
import json, sys
path, round_, server, ticks, clk, rss, h2, ghz = sys.argv[1:]
m = json.load(open(path))["main"]
cpu_us = int(ticks) * 1e6 / int(clk) / max(m["completed"], 1)
errors = sum(m["errors"].values())
print(round_, server, round(m["throughput"]), m["latency"]["p99_ms"], errors,
      f"{cpu_us:.1f}", int(rss) // 1024, h2, ghz, sep="\t")
PY
    tail -n 1 "$WORK/rows.tsv" | awk -F'\t' '{ printf "  round %s %-8s %6s calls/s  p99 %5s ms  %s errors  %6s CPU us/call  RSS %4s MB  h2load %s  ghz %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
}

echo "load: Fast, closed loop, $CONCURRENCY concurrent over $CONNECTIONS connections," \
    "${WARMUP}s warm-up + ${DURATION}s, $ROUNDS rounds; $(nproc) cores"
command -v h2load >/dev/null || echo "h2load: not installed (apt-get install nghttp2-client)"
command -v ghz >/dev/null || echo "ghz: not installed; its column stays empty"
read -r -a servers <<<"${SERVERS:-bare handover diagnosed arrival otel otel-diagnosed quiet default}"
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!servers[@]}"; do
        run "$round" "${servers[$(((i + round - 1) % ${#servers[@]}))]}"
    done
done

python3 - "$WORK/rows.tsv" <<'PY'
import math, statistics, sys
from collections import defaultdict

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
cols = ["round", "server", "rate", "p99", "errors", "cpu_us", "rss_mb", "h2load", "ghz"]
runs = defaultdict(dict)  # round -> server -> row
for r in rows:
    row = dict(zip(cols, r))
    for k in cols[2:]:
        row[k] = float(row[k])
    runs[row["round"]][row["server"]] = row

def spread(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    med = statistics.median(values)
    fmt = (lambda v: f"{v:.2f}") if med < 10 else (lambda v: f"{v:.0f}")
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"

names = {"bare": "bare tonic echo", "handover": "bare echo, handlers on a 2nd runtime",
         "diagnosed": "bare echo + diagnosis engine",
         "arrival": "bare echo + engine, served by arrival::serve (kernel-stamped, one runtime)",
         "otel": "bare echo + OpenTelemetry layer and server span (ids, no export)",
         "otel-diagnosed": "bare echo + OpenTelemetry layer + diagnosis engine",
         "diagnosed-late": "bare echo + engine, headers only on late calls",
         "otel-diagnosed-late": "bare echo + OpenTelemetry layer + engine, headers only on late calls",
         "quiet": "holdup serve --no-console",
         "default": "holdup serve (console on)"}
print()
print("medians over rounds (min–max):")
print("| server | calls/s | p99 ms | CPU µs/call | RSS after, MB | h2load req/s | ghz req/s |")
print("|---|---|---|---|---|---|---|")
present = [s for s in names if any(s in runs[r] for r in runs)]
for s in present:
    got = [runs[r][s] for r in runs if s in runs[r]]
    cells = [spread([g[k] for g in got]) for k in ["rate", "p99", "cpu_us", "rss_mb", "h2load", "ghz"]]
    errors = sum(g["errors"] for g in got)
    note = f" ({errors:.0f} errors)" if errors else ""
    print(f"| {names[s]}{note} | " + " | ".join(cells) + " |")

def ratio(s, k, base="bare"):
    return spread([runs[r][s][k] / runs[r][base][k] for r in runs
                   if s in runs[r] and base in runs[r] and runs[r][base][k]])

def row(label, s, k, base="bare"):
    if s in present and base in present:
        print(f"| {label} | {ratio(s, k, base)} |")

print()
print("ratios, each round's runs against each other (median, min–max):")
print("| ratio | value |")
print("|---|---|")
row("handlers on a 2nd runtime / bare, throughput", "handover", "rate")
row("handlers on a 2nd runtime / bare, CPU per call", "handover", "cpu_us")
row("bare + engine / bare, throughput (target >= 0.9)", "diagnosed", "rate")
row("bare + engine / bare, CPU per call (target <= 1.15)", "diagnosed", "cpu_us")
row("bare + engine / bare, p99", "diagnosed", "p99")
row("arrival::serve + engine / bare, throughput", "arrival", "rate")
row("arrival::serve + engine / bare, CPU per call", "arrival", "cpu_us")
row("arrival::serve + engine / bare, p99", "arrival", "p99")
row("OpenTelemetry + engine / OpenTelemetry, CPU per call (target <= 1.1)", "otel-diagnosed", "cpu_us", "otel")
row("OpenTelemetry + engine / OpenTelemetry, throughput", "otel-diagnosed", "rate", "otel")
row("bare + engine, WhenLate / bare, CPU per call", "diagnosed-late", "cpu_us")
row("bare + engine, WhenLate / bare, throughput", "diagnosed-late", "rate")
row("OpenTelemetry + engine, WhenLate / OpenTelemetry, CPU per call", "otel-diagnosed-late", "cpu_us", "otel")
row("OpenTelemetry + engine, WhenLate / OpenTelemetry, throughput", "otel-diagnosed-late", "rate", "otel")
row("--no-console / bare, throughput (target >= 0.85)", "quiet", "rate")
row("--no-console / bare, p99 (target <= 1.3)", "quiet", "p99")
row("--no-console / bare, CPU per call (target <= 1.6)", "quiet", "cpu_us")
row("console on / bare, throughput (target >= 0.6)", "default", "rate")
row("console on / bare, CPU per call", "default", "cpu_us")
for s in present:
    for gen in ["h2load", "ghz"]:
        values = [runs[r][s]["rate"] / runs[r][s][gen] for r in runs
                  if s in runs[r] and runs[r][s][gen] > 0]
        if values:
            print(f"| holdup load / {gen}, rate against {names[s]} | {spread(values)} |")
PY
