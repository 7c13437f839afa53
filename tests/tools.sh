#!/usr/bin/env bash
# The outside programs the tests talk to, built here from pinned versions (DESIGN.md, "Peers
# the tests talk to"):
#
#   jaeger             Jaeger v2 all-in-one (tests/it/jaeger.rs; config: tests/jaeger.yaml)
#   grpcurl            the current grpcurl, beside the 1.8.6 of tests/requirements.txt
#   ghz                the gRPC load tool, for tests/bench/ghz.sh
#   grpc-health-probe  what Kubernetes' gRPC probes do, run by hand (tests/python)
#   tokio-console      the console TUI, driven in tmux (tests/it/console_tui.rs)
#
# Go tools: the module at its pinned version, checked against the h1: hash pinned below (and by
# `go` against the checksum database), built with its own go.mod and go.sum, which pin every
# dependency. tokio-console: `cargo install --locked`, its own Cargo.lock, crates.io's checksums.
#
# Everything lands under target/tools (HOLDUP_TOOLS_DIR): binaries in go/bin and cargo/bin
# (put both on PATH), Go's module and build caches in go/mod and go/cache. A binary that is
# already there from its pinned version (target/tools/stamps) is not rebuilt.
#
# Usage: tests/tools.sh [NAME...]      (default: every tool; prints how long each build took)
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${HOLDUP_TOOLS_DIR:-$PWD/target/tools}
[[ $tools = /* ]] || tools="$PWD/$tools"

# name | module | package under the module | version | h1: hash of the module (go.sum style) |
# -ldflags -X value: the version string each project's own release build sets |
# optimised: "yes" for ghz, whose speed is what its benchmark measures; "no" for the others,
# which answer a test's few calls: compiled with -gcflags=all=-N -l (no optimisation, no
# inlining), which costs about 30 % less CPU to build (grpcurl: 122 against 174 CPU-seconds).
GO_TOOLS=(
    # v1.75.0 of the module is the Jaeger 2.12.0 release (v1 and v2 share the repository).
    "jaeger|github.com/jaegertracing/jaeger|cmd/jaeger|v1.75.0|h1:OWj6uKRJ8QaH+AVypRwqINGi3Q/WOchbEfp53FJK0Xk=|github.com/jaegertracing/jaeger/internal/version.latestVersion=v2.12.0|no"
    "grpcurl|github.com/fullstorydev/grpcurl|cmd/grpcurl|v1.9.4|h1:7bC3tlRwS7dPyfhBo0Xmigns8hWH/K4fg9NrafpY57k=|main.version=v1.9.4|no"
    "ghz|github.com/bojand/ghz|cmd/ghz|v0.121.0|h1:CmXNDxDChmTI8eq6cs6ob3N+OUQIXeLQPCaKsw4oXXg=|main.version=v0.121.0|yes"
    "grpc-health-probe|github.com/grpc-ecosystem/grpc-health-probe|.|v0.4.62|h1:aTsuyg+EuPZ5xElFjFtxq4VPB0b6Ms3WPhN2iAhvGj8=|main.versionTag=v0.4.62|no"
)
# The oldest Go that builds all of them (grpc-health-probe v0.4.62 declares `go 1.26.0`).
GO_MIN=1.26
TOKIO_CONSOLE_VERSION=0.1.14

wanted=("$@")
want() { ((${#wanted[@]} == 0)) || [[ " ${wanted[*]} " == *" $1 "* ]]; }

export GOBIN="$tools/go/bin" GOMODCACHE="$tools/go/mod" GOCACHE="$tools/go/cache"
# A writable module cache, so that `rm -rf target/tools` works without root; static binaries.
export GOFLAGS="${GOFLAGS:-} -modcacherw" CGO_ENABLED=0
cargo_root="$tools/cargo"

failed=()
fail() { echo "tools.sh: $*" >&2; failed+=("$1"); }

# What a tool was built from: its pin line, kept beside the binaries. A binary whose stamp
# matches its pin is current; anything else is rebuilt.
stamp() { echo "$tools/stamps/$1"; }
current() { [ -x "$2" ] && [ -f "$(stamp "$1")" ] && [ "$(cat "$(stamp "$1")")" = "$3" ]; }
record() { mkdir -p "$tools/stamps" && printf '%s\n' "$2" >"$(stamp "$1")"; }

go_ok() {
    command -v go >/dev/null || return 1
    local have
    have=$(go env GOVERSION | sed 's/^go//')
    [ "$(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n 1)" = "$GO_MIN" ]
}

# Downloads the module (hash checked against the pin), then builds the package inside it as
# the main module, as each project's own release build does (`go install pkg@version` would
# refuse Jaeger, whose go.mod has a replace directive). -mod=readonly: the module's go.mod and
# go.sum are used exactly as published.
install_go_tool() {
    local entry=$1 name module package version sum ldflag optimised
    IFS='|' read -r name module package version sum ldflag optimised <<<"$entry"
    local again="tests/tools.sh $name"
    if current "$name" "$GOBIN/$name" "$entry"; then
        echo "$name $version: cached"
        return 0
    fi
    if ! go_ok; then
        fail "$name" "needs Go >= $GO_MIN (https://go.dev/dl/), then: $again"
        return 0
    fi
    local start=$SECONDS info dir got
    info=$(go mod download -json "$module@$version") || {
        fail "$name" "cannot download $module@$version from $(go env GOPROXY); then: $again"
        return 0
    }
    dir=$(awk -F'"' '$2 == "Dir" { print $4 }' <<<"$info")
    got=$(awk -F'"' '$2 == "Sum" { print $4 }' <<<"$info")
    if [ "$got" != "$sum" ]; then
        fail "$name" "$module@$version has hash $got, tests/tools.sh pins $sum"
        return 0
    fi
    local gcflags=()
    [ "$optimised" = yes ] || gcflags=("-gcflags=all=-N -l")
    (cd "$dir" && go build -mod=readonly -trimpath -ldflags="-X $ldflag" "${gcflags[@]}" \
        -o "$GOBIN/$name" "./$package") || {
        fail "$name" "build of $module/$package@$version failed; retry with: $again"
        return 0
    }
    record "$name" "$entry"
    echo "$name $version: built in $((SECONDS - start)) s"
}

install_tokio_console() {
    local bin="$cargo_root/bin/tokio-console" pin="tokio-console|$TOKIO_CONSOLE_VERSION|debug"
    if current tokio-console "$bin" "$pin"; then
        echo "tokio-console $TOKIO_CONSOLE_VERSION: cached"
        return 0
    fi
    local start=$SECONDS
    # Its own build directory (removed afterwards), never this project's target/: the
    # project's CARGO_TARGET_DIR and rustflags are not the console's business. --debug: an
    # unoptimised build compiles in a fraction of the time, and a TUI that redraws once a
    # second does not need the optimiser.
    env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
        cargo install --quiet --locked --debug --force --version "$TOKIO_CONSOLE_VERSION" \
        --root "$cargo_root" tokio-console || {
        fail tokio-console "build failed; retry with: tests/tools.sh tokio-console"
        return 0
    }
    record tokio-console "$pin"
    echo "tokio-console $TOKIO_CONSOLE_VERSION: built in $((SECONDS - start)) s"
}

for entry in "${GO_TOOLS[@]}"; do
    want "${entry%%|*}" || continue
    install_go_tool "$entry"
done
if want tokio-console; then install_tokio_console; fi

if ((${#failed[@]})); then
    echo "tools.sh: not installed: ${failed[*]}" >&2
    exit 1
fi
