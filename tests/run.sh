#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs every tool the tests need from the
# project's own files (Debian packages, a hash-pinned Python venv), checks formatting and
# lints, then runs the Rust tests (unit + integration against real servers on loopback) and
# the Python tests (grpcio and the grpcurl binary against the real holdup binary).
# PostgreSQL: a throwaway cluster on a loopback port for the Rust tests (tests/it/postgres.rs),
# started here and stopped on exit. Deploy files: tests/python/test_deploy.py validates them,
# tests/python/test_prometheus.py runs every dashboard query against a real Prometheus.
# The real programs the tests talk to (Jaeger v2, current grpcurl, grpc-health-probe, the
# tokio-console TUI) are built from pinned versions by tests/tools.sh into target/tools (cached:
# a second run builds nothing), in the background while the packages install and the Rust code
# builds: on a fresh machine both take minutes, and neither keeps two cores busy all the time.
#
# Node: the @grpc/grpc-js client tests (tests/node, `npm ci` from the committed lock file, skipped
# when the lock file has not changed since the last install) run with `node --test`.
#
# Usage: tests/run.sh            (CI=true makes a missing tool fail instead of skip)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${HOLDUP_TEST_VENV:-target/test-venv}
[[ $venv = /* ]] || venv="$PWD/$venv"
step() { printf '\n== %s\n' "$*"; }

# The two long builds start first, in the background, and run while the packages install:
# the pinned tools the tests talk to (ghz is only for tests/bench/ghz.sh, which builds it) and
# the Rust test binaries. Each in a session of its own, so that an early exit stops it whole.
tools=${HOLDUP_TOOLS_DIR:-$PWD/target/tools}
[[ $tools = /* ]] || tools="$PWD/$tools"
mkdir -p "$tools"
step "Pinned tools (tests/tools.sh): building in the background, log in $tools/build.log"
HOLDUP_TOOLS_DIR="$tools" setsid tests/tools.sh jaeger grpcurl grpc-health-probe tokio-console \
    >"$tools/build.log" 2>&1 &
tools_pid=$!
build_log="$tools/cargo-test-build.log"
step "Rust test binaries (cargo test --no-run): building in the background, log in $build_log"
setsid cargo test --workspace --locked --no-run >"$build_log" 2>&1 &
build_pid=$!
stop_builds() { kill -TERM -- "-$tools_pid" "-$build_pid" 2>/dev/null || true; }
trap stop_builds EXIT

step "Debian packages (prometheus: promtool and a real Prometheus; postgresql; tmux for the console TUI)"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi


step "Python test tools into $venv (hash-pinned: tests/requirements.txt)"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Build tools first, hash-checked, so the grpcurl sdist builds from checked tools only.
awk '/^(setuptools|wheel|packaging)==/{p=1} p{print} p && !/\\$/{p=0}' tests/requirements.txt \
    >"$venv/build-requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    -r "$venv/build-requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    --no-build-isolation -r tests/requirements.txt
export PATH="$venv/bin:$PATH"
grpcurl -version

step "Node test tools (tests/node: npm ci from package-lock.json)"
node_ok=1
for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        node_ok=0
        if [ -n "${CI:-}" ]; then
            echo "$tool is required; install it with: apt-get install -y nodejs npm" >&2
            exit 1
        fi
        echo "SKIPPED: $tool not installed (install with: apt-get install -y nodejs npm)" >&2
    fi
done
if ((node_ok)); then
    stamp=tests/node/node_modules/.holdup-lock.sha256
    want=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        (cd tests/node && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline)
        echo "$want" >"$stamp"
    fi
    echo "node $(node --version), @grpc/grpc-js $(node -p 'require("./tests/node/node_modules/@grpc/grpc-js/package.json").version')"
fi

step "PostgreSQL: a throwaway cluster on a loopback port (HOLDUP_TEST_DATABASE_URL)"
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/holdup-pg.XXXXXX")
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the cluster belongs to the package's postgres user.
    chown postgres: "$pg_dir"
    as_pg=(runuser -u postgres --)
fi
stop_postgres() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
trap 'stop_postgres; stop_builds' EXIT
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$pg_dir/initdb.log" 2>&1 || { cat "$pg_dir/initdb.log" >&2; exit 1; }
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Loopback only, socket in the temp dir; durability off: the cluster lives for one run.
pg_opts="-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 -o "$pg_opts" \
    start >/dev/null || { cat "$pg_dir/server.log" >&2; exit 1; }
# The fault test (tests/it/postgres_restart.rs) stops and starts this very server:
# `sh -c "$HOLDUP_TEST_PG_CTL stop"` / `… start`.
export HOLDUP_TEST_PG_CTL="${as_pg[*]} $pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/server.log -w -t 60 -m fast -o '$pg_opts'"
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres holdup_test
export HOLDUP_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/holdup_test"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') at $HOLDUP_TEST_DATABASE_URL"

step "cargo test: waiting for the build"
if ! wait "$build_pid"; then
    cat "$build_log" >&2
    exit 1
fi
tail -n 3 "$build_log"

step "cargo fmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# holdup-diagnose as a user builds it: no feature on.
cargo clippy -p holdup-diagnose --all-targets --locked -- -D warnings
# ... and without `--cfg tokio_unstable` (this workspace sets it; most users do not): code
# that only the hooks use must not warn there. Its own target directory, or the flag change
# would rebuild everything above.
# The library only: its tests' dependencies (tonic, axum, sqlx) would double the build.
for features in "" "--all-features"; do
    RUSTFLAGS="-D warnings" CARGO_TARGET_DIR=target/no-tokio-unstable \
        cargo check -p holdup-diagnose --lib $features --locked --quiet
done

# Each feature alone, as a user turns one on: code that only another feature uses must not
# warn (`arrival` alone once left the accept loop's helpers unused).
for feature in arrival serve tonic opentelemetry prometheus task-names; do
    cargo clippy -p holdup-diagnose --lib --no-default-features --features "$feature" \
        --locked --quiet -- -D warnings
done

step "holdup-diagnose as a crate people add: its weight in a tonic greeter, and cargo package"
tests/weight/crate_count.sh
cargo package -p holdup-diagnose --locked --allow-dirty --quiet

step "Pinned tools (tests/tools.sh): waiting for the build"
tools_ok=true
wait "$tools_pid" || tools_ok=false
grep -v '^go: downloading' "$tools/build.log" || true
if ! $tools_ok; then
    # Outside CI the tests that need a missing tool skip, each naming its install command.
    [ -z "${CI:-}" ] || { echo "tests/tools.sh failed (log: $tools/build.log)" >&2; exit 1; }
    echo "warning: some tools are missing (above); the tests that need them will skip" >&2
fi
export PATH="$tools/go/bin:$tools/cargo/bin:$PATH"

step "cargo test"
# Under a bound: a test that hangs fails the run with its name on screen instead of using up
# CI's time. The suite takes about 5 minutes on 2 cores.
timeout --kill-after=30 1200 cargo test --workspace --locked

step "Python tests (grpcio, grpcurl, deploy files, Prometheus + dashboards) against target/debug/holdup"
HOLDUP_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/holdup" python -m pytest tests/python -q -p no:cacheprovider

if ((node_ok)); then
    step "Node tests (@grpc/grpc-js) against target/debug/holdup"
    (cd tests/node && HOLDUP_BIN="${CARGO_TARGET_DIR:-$PWD/../../target}/debug/holdup" node --test)
fi
