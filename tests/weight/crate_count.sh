#!/usr/bin/env bash
# What holdup-diagnose weighs in a user's build: the crates `cargo tree` lists (normal and
# build dependencies) for a plain tonic greeter, and for the same greeter with the crate added
# (features off). Fails past the bound: the crate must stay something people add and leave on.
#
# Usage: tests/weight/crate_count.sh        (MAX_WITH=115 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
crate=$PWD/crates/holdup-diagnose
max_with=${MAX_WITH:-115}
work=$(mktemp -d "${TMPDIR:-/tmp}/holdup-weight.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A greeter as tonic's README makes one: tonic with its default features, prost, tokio with
# a multi-thread runtime and macros, tonic-prost-build to compile its proto.
greeter() {
    local dir=$1 extra=$2
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "greeter"
version = "0.1.0"
edition = "2024"

[dependencies]
tonic = "0.14"
tonic-prost = "0.14"
prost = "0.14"
tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
$extra

[build-dependencies]
tonic-prost-build = "0.14"
TOML
    echo 'fn main() {}' >"$dir/src/main.rs"
    # The workspace's lock file: the same versions holdup is tested with.
    cp Cargo.lock "$dir/Cargo.lock"
}

count() {
    (cd "$1" && cargo tree -q -e normal,build --prefix none 2>/dev/null) |
        awk '{print $1, $2}' | sort -u | wc -l
}

greeter "$work/plain" ""
greeter "$work/with" "holdup-diagnose = { path = \"$crate\" }"
plain=$(count "$work/plain")
with=$(count "$work/with")
echo "crates in a tonic greeter: $plain; with holdup-diagnose (features off): $with (bound: $max_with)"
if ((with > max_with)); then
    echo "holdup-diagnose adds $((with - plain)) crates; the bound is $max_with in all" >&2
    (cd "$work/with" && cargo tree -q -e normal,build -i holdup-diagnose --prefix none) >&2 || true
    exit 1
fi
