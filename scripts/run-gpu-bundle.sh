#!/usr/bin/env bash
# Runs ON the GPU machine (no Rust there): every test binary of the bundle made by
# scripts/build-gpu-bundle.sh, then `flashmla-etap info`. GPU tests must not skip here:
# ETAP_REQUIRE_GPU=1 turns a skip into a failure. Exits non-zero if anything fails.
# Usage: run-gpu-bundle.sh [DIST_DIR] [extra test-harness args, e.g. a test-name filter]
# With ETAP_SANITIZE=1 it also runs sanitize.sh (compute-sanitizer over the fast GPU tests).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 1 ] && [ -d "$1" ]; then
    dist="$1"
    shift
elif [ -d "$here/tests" ] && [ -x "$here/flashmla-etap" ]; then
    dist="$here" # running the copy inside dist/
else
    dist="$here/../dist" # running scripts/run-gpu-bundle.sh in a checkout
fi
if [ ! -d "$dist/tests" ]; then
    echo "error: no test binaries in $dist/tests (build them with scripts/build-gpu-bundle.sh)" >&2
    exit 2
fi

export ETAP_REQUIRE_GPU=1
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
[ -f "$dist/MANIFEST" ] && cat "$dist/MANIFEST"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

passed=0
failed=0
failures=()
for t in "$dist"/tests/*; do
    [ -x "$t" ] || continue
    name="$(basename "$t")"
    printf '\n==== %s\n' "$name"
    if "$t" --test-threads=1 "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
    fi
done

printf '\n==== flashmla-etap info\n'
info_out="$("$dist/flashmla-etap" info 2>&1)"
info_rc=$?
printf '%s\n' "$info_out"
if [ "$info_rc" -ne 0 ]; then
    failed=$((failed + 1))
    failures+=("flashmla-etap info")
elif grep -q "^no usable GPU" <<<"$info_out"; then
    echo "error: flashmla-etap info found no usable GPU" >&2
    failed=$((failed + 1))
    failures+=("flashmla-etap info (no GPU)")
else
    passed=$((passed + 1))
fi

if [ "${ETAP_SANITIZE:-0}" = 1 ]; then
    printf '\n==== sanitize.sh\n'
    sanitize="$dist/sanitize.sh"
    [ -x "$sanitize" ] || sanitize="$here/sanitize.sh"
    if "$sanitize" "$dist"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("sanitize.sh")
    fi
fi

printf '\ngpu bundle: %d binaries passed, %d failed\n' "$passed" "$failed"
if [ "$failed" -ne 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
    exit 1
fi
