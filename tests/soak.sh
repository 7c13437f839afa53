#!/usr/bin/env bash
# Soak (not part of the test suite): two minutes of mixed overload against a release
# `holdup serve`, then RSS at start, every 10 s and at the end, and the calls handled by gRPC
# status. tokio-console is on, as by default: its memory must stay bounded whatever the rate.
#
# Usage: tests/soak.sh                       the mixed overload
#        SOAK_FAST_RATE=1000 tests/soak.sh   only Fast, open loop at that rate
#        (env: SOAK_SECONDS=120, SOAK_SERVE_ARGS="--no-console" to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SOAK_SECONDS:-120}
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
bin="$target_dir/release/holdup"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
console_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OTEL_TRACES_EXPORTER=none "$bin" serve --listen 127.0.0.1:0 --workers 2 \
    --metrics-addr "127.0.0.1:$metrics_port" --console-addr "127.0.0.1:$console_port" \
    --db-pool-size 4 --db-acquire-timeout-ms 500 --compute-threads 2 --compute-queue 8 ${SOAK_SERVE_ARGS:-} \
    >"$work/serve.out" 2>"$work/serve.err" &
server=$!
until grep -q "listening on" "$work/serve.out"; do sleep 0.1; done
addr=$(grep -o 'listening on [0-9.:]*' "$work/serve.out" | cut -d' ' -f3)
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$server/status"; }
echo "holdup at $addr (pid $server); RSS at start: $(rss)"

load() { "$bin" load --target "http://$addr" --duration "${seconds}s" --warmup 0s --json "$@"; }
if [[ -n "${SOAK_FAST_RATE:-}" ]]; then
    generators=(fast)
    load fast --rate "$SOAK_FAST_RATE" >"$work/fast.json" &
else
    # Far more than the compute pool takes (8 queue slots, 2 threads), more sleepers than
    # workers, more pool holders than connections, a failing and stalling upstream, the probe.
    generators=(cpu sleep backend upstream fast)
    load cpu --mode COMPUTE_POOL --work-ms 20 --rate 400 >"$work/cpu.json" &
    load sleep --mode BLOCKING --duration-ms 5 --rate 100 >"$work/sleep.json" &
    load backend --hold-ms 50 --query SCAN --key 3 --rate 200 >"$work/backend.json" &
    load upstream --error-rate 0.3 --stall-rate 0.05 --attempt-timeout-ms 100 --max-retries 2 \
        --rate 100 >"$work/upstream.json" &
    load fast --rate 200 >"$work/fast.json" &
fi
peak=0
curve=""
for i in $(seq "$seconds"); do
    now=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    (( now > peak )) && peak=$now
    (( i % 10 == 0 )) && curve+=" ${i}s:$((now / 1024))"
    sleep 1
done
for job in $(jobs -p); do [[ $job == "$server" ]] || wait "$job" 2>/dev/null || true; done
echo "RSS every 10 s, MB:$curve"
echo "RSS at end: $(rss); peak during the soak: $peak kB"
echo "calls handled, by method and status:"
curl -s "http://127.0.0.1:$metrics_port/metrics" \
    | awk '/^grpc_server_handled_total/ { match($0, /grpc_method="[^"]*"/); m = substr($0, RSTART + 13, RLENGTH - 14);
                                          match($0, /grpc_code="[^"]*"/); c = substr($0, RSTART + 11, RLENGTH - 12);
                                          printf "  %-13s %-18s %s\n", m, c, $2 }'
echo "each generator: offered/s, ok, errors by status, p99 ms:"
for f in "${generators[@]}"; do
    python3 - "$work/$f.json" "$f" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["main"]
lat = m.get("latency") or {}
p99 = lat.get("p99_ms", lat.get("p99"))
print(f"  {sys.argv[2]:9} {m['offered_rate']}/s ok={m['ok']} errors={m['errors']} p99={p99}")
PY
done
kill -TERM "$server"; wait "$server"; echo "holdup exit code after SIGTERM: $?"
