#!/usr/bin/env bash
# ghz beside `holdup load`, against one `holdup serve` (release build), in one run. Not a
# test: it prints a table of measured numbers.
#
#   1. A stall. Fast at a fixed arrival rate (RATE/s for DURATION s) while, STALL_AT s into
#      the run, both lab workers sleep on their threads for STALL_MS (two `Sleep BLOCKING`
#      calls: every Fast call due meanwhile waits). Three generators, one after the other:
#      - holdup load --rate: open loop, each call timed from its *intended* send time;
#      - ghz --rps (ghz's default: 50 workers, each waiting for its reply before the next
#        send): once the workers are stuck, the calls due wait unsent and are timed from
#        their *actual* send after the stall: coordinated omission;
#      - ghz --rps --async: a goroutine per call, sent on schedule, so ghz sees the stall too.
#   2. Closed loop: the highest rate each tool reaches, CONCURRENCY callers over CONNECTIONS
#      connections, DURATION s.
#
# The server runs without tokio-console (--no-console), so that the closed-loop rates are
# about the generators more than about the console's instrumentation. On a small machine the
# generator and the server share the cores: compare the tools with each other, in one run.
#
# Usage: tests/bench/ghz.sh
#        (env: RATE=100 DURATION=10 STALL_AT=3 STALL_MS=2000 CONCURRENCY=32 CONNECTIONS=4)
set -euo pipefail
cd "$(dirname "$0")/../.."

RATE=${RATE:-100}
DURATION=${DURATION:-10}
STALL_AT=${STALL_AT:-3}
STALL_MS=${STALL_MS:-2000}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
BIN="${CARGO_TARGET_DIR:-target}/release/holdup"

tests/tools.sh ghz grpcurl >&2
export PATH="${HOLDUP_TOOLS_DIR:-$PWD/target/tools}/go/bin:$PATH"
cargo build --release --quiet --bin holdup

# WORK, SERVER_PID and its cleanup.
source tests/bench/lib.sh

"$BIN" serve --listen 127.0.0.1:0 --workers 2 --no-console --metrics-addr 127.0.0.1:0 \
    --seed-rows 1000 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    ADDR=$(awk '/^holdup listening on / { print $4 }' "$WORK/serve.out")
    [[ -n "$ADDR" ]] && break
    sleep 0.1
done
[[ -n "$ADDR" ]] || { cat "$WORK/serve.err" >&2; echo "holdup serve did not start" >&2; exit 1; }

# Both lab workers blocked on their threads for STALL_MS, STALL_AT s from now.
stall() {
    sleep "$STALL_AT"
    for _ in 1 2; do
        grpcurl -plaintext -max-time 60 -d "{\"mode\":\"BLOCKING\",\"duration_ms\":$STALL_MS}" \
            "$ADDR" holdup.v1.Lab/Sleep >/dev/null &
    done
    wait
}

holdup_load() { # holdup_load NAME ARGS...: JSON report in $WORK/NAME.json
    local name=$1; shift
    "$BIN" load fast --target "http://$ADDR" --message x --duration "${DURATION}s" \
        --warmup 0s --json "$@" >"$WORK/$name.json"
}

ghz_run() { # ghz_run NAME ARGS...: JSON report in $WORK/NAME.json
    local name=$1; shift
    ghz --insecure --proto proto/holdup/v1/lab.proto --import-paths proto \
        --call holdup.v1.Lab/Fast -d '{"message":"x"}' -z "${DURATION}s" --duration-stop wait \
        --format json --output "$WORK/$name.json" "$@" "$ADDR"
}

with_stall() { # with_stall COMMAND...: runs the load with a stall STALL_AT s into it
    stall &
    local stalling=$!
    "$@"
    wait "$stalling"
}

echo "holdup serve at $ADDR (2 lab workers, no console); $(nproc) cores; $(ghz --version 2>&1 | head -n 1)" >&2
echo "1/5 stall: holdup load --rate $RATE" >&2
with_stall holdup_load stall-holdup --rate "$RATE"
echo "2/5 stall: ghz --rps $RATE" >&2
with_stall ghz_run stall-ghz --rps "$RATE"
echo "3/5 stall: ghz --rps $RATE --async" >&2
with_stall ghz_run stall-ghz-async --rps "$RATE" --async
echo "4/5 closed loop: holdup load --concurrency $CONCURRENCY --connections $CONNECTIONS" >&2
holdup_load closed-holdup --concurrency "$CONCURRENCY" --connections "$CONNECTIONS"
echo "5/5 closed loop: ghz -c $CONCURRENCY --connections $CONNECTIONS" >&2
ghz_run closed-ghz -c "$CONCURRENCY" --connections "$CONNECTIONS"

python3 - "$WORK" "$RATE" "$DURATION" "$STALL_MS" "$CONCURRENCY" "$CONNECTIONS" <<'EOF'
import json, sys
from pathlib import Path

work, rate, duration, stall_ms, concurrency, connections = sys.argv[1:]
work = Path(work)

def holdup(name):
    main = json.loads((work / f"{name}.json").read_text())["main"]
    lat = main["latency"]
    errors = sum(main["errors"].values())
    return dict(calls=main["completed"], errors=errors, rate=main["throughput"],
                p50=lat["p50_ms"], p90=lat["p90_ms"], p99=lat["p99_ms"], max=lat["max_ms"])

def ghz(name):
    """ghz's own summary: its percentiles and its slowest call, as a ghz user reads them."""
    report = json.loads((work / f"{name}.json").read_text())
    pct = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    errors = sum(n for code, n in (report.get("statusCodeDistribution") or {}).items() if code != "OK")
    nan = float("nan")
    return dict(calls=report["count"], errors=errors, rate=report["rps"],
                p50=pct.get(50, nan), p90=pct.get(90, nan), p99=pct.get(99, nan),
                max=report["slowest"] / 1e6)

rows = [
    (f"stall, {rate}/s", "holdup load --rate (from intended send)", holdup("stall-holdup")),
    (f"stall, {rate}/s", "ghz --rps (from actual send)", ghz("stall-ghz")),
    (f"stall, {rate}/s", "ghz --rps --async", ghz("stall-ghz-async")),
    (f"closed loop, {concurrency} callers / {connections} conns", "holdup load --concurrency", holdup("closed-holdup")),
    (f"closed loop, {concurrency} callers / {connections} conns", "ghz -c", ghz("closed-ghz")),
]
print(f"Fast, {duration} s each; stall: both lab workers in Sleep BLOCKING for {stall_ms} ms\n")
print("| scenario | generator | calls | errors | calls/s | p50 ms | p90 ms | p99 ms | max ms |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for scenario, tool, r in rows:
    print(f"| {scenario} | {tool} | {r['calls']} | {r['errors']} | {r['rate']:.0f} | "
          f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.1f} |")
closed = holdup("closed-holdup")["rate"], ghz("closed-ghz")["rate"]
print(f"\nclosed loop, holdup load / ghz rate: {closed[0] / closed[1]:.2f}")
EOF
