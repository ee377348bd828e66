#!/usr/bin/env bash
# The whole test suite (what CI runs): setup, release build of every target, the ptxas
# resource report of the device code, all tests of the workspace (GPU tests report as
# ignored, with the reason, where there is no GPU), clippy with warnings denied, rustfmt
# check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==== %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "cargo build --release --workspace --all-targets"
# build.rs fails the build if ptxas rejects the generated PTX.
cargo build --release --workspace --all-targets

step "ptxas -v report of the embedded cubin (registers / spills / stack per kernel)"
info="$(cargo run --release --quiet -- info)"
printf '%s\n' "$info"
if grep -q "ptxas not available" <<<"$info"; then
    echo "error: the cubin was not assembled (ptxas missing after setup)" >&2
    exit 1
fi
if grep -E "[1-9][0-9]* bytes spill (stores|loads)" <<<"$info" >/dev/null; then
    echo "warning: some kernel spills registers (see the report above)" >&2
fi

step "cargo test --release --workspace"
cargo test --release --workspace

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings

step "cargo fmt --all --check"
cargo fmt --all --check

step "all checks passed"
