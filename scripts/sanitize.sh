#!/usr/bin/env bash
# Runs ON the GPU machine, from the bundle of scripts/build-gpu-bundle.sh: NVIDIA
# compute-sanitizer's four tools (memcheck, racecheck, synccheck, initcheck) over the GPU
# tests — every test of dist/tests/gpu_primitives and every test of dist/tests/gpu_decode
# but the accuracy comparison (the correctness grid reaches every kernel and plan shape:
# about a minute a tool on an H200) — with `--error-exitcode 1`; racecheck, much slower,
# over `decode_smoke` only, and over `gpu_primitives` but its seesaw hand-off tests.
# Prints one line per tool and binary with the verdict; exits non-zero if any run reports
# errors, fails or times out (2 if compute-sanitizer or the binaries are missing).
#
# Usage: sanitize.sh [DIST_DIR]
# Environment:
#   COMPUTE_SANITIZER            the compute-sanitizer executable (else PATH, then
#                                /usr/local/cuda*/bin, then the bundle's dist/sanitizer/bin/)
#   ETAP_SANITIZE_TOOLS          tools to run (default "memcheck racecheck synccheck initcheck")
#   ETAP_SANITIZE_DECODE_TESTS   gpu_decode test filters (default "decode_smoke graph_replay
#                                checked_api decode_grid pair_clusters back_to_back beyond_the_l2 f16_partial")
#   ETAP_SANITIZE_RACECHECK_DECODE_TESTS
#                                the same for racecheck, which is much slower
#                                (default "decode_smoke")
#   ETAP_SANITIZE_TIMEOUT        seconds per run (default 900)
#   ETAP_SANITIZE_LOGS           folder for the full logs (default DIST_DIR/sanitize-logs)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 1 ] && [ -d "$1" ]; then
    dist="$1"
elif [ -d "$here/tests" ]; then
    dist="$here" # the copy inside dist/
else
    dist="$here/../dist" # scripts/sanitize.sh in a checkout
fi
dist="$(cd "$dist" 2>/dev/null && pwd)" || {
    echo "error: no bundle directory (build it with scripts/build-gpu-bundle.sh)" >&2
    exit 2
}

san="${COMPUTE_SANITIZER:-}"
if [ -z "$san" ]; then
    # The machine's own tool first: the wheel's (bundled) stopped at "Target application
    # terminated before first instrumented API call" on the H200 pool machines (driver 580),
    # whose /usr/local/cuda tool works.
    for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
        /usr/local/cuda-*/bin/compute-sanitizer "$dist/sanitizer/bin/compute-sanitizer"; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            san="$c"
            break
        fi
    done
fi
if [ -z "$san" ] || [ ! -x "$san" ]; then
    echo "error: compute-sanitizer not found: set COMPUTE_SANITIZER, install the CUDA toolkit, or" >&2
    echo "       build the bundle with ETAP_BUNDLE_SANITIZER=1 scripts/build-gpu-bundle.sh" >&2
    echo "       (ships the nvidia-cuda-sanitizer-api 13.0 wheel's tool in dist/sanitizer/)" >&2
    exit 2
fi
for b in gpu_primitives gpu_decode; do
    if [ ! -x "$dist/tests/$b" ]; then
        echo "error: $dist/tests/$b missing (scripts/build-gpu-bundle.sh builds it)" >&2
        exit 2
    fi
done

tools="${ETAP_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}"
decode_tests="${ETAP_SANITIZE_DECODE_TESTS:-decode_smoke graph_replay checked_api decode_grid pair_clusters back_to_back beyond_the_l2 f16_partial}"
race_decode_tests="${ETAP_SANITIZE_RACECHECK_DECODE_TESTS:-decode_smoke}"
limit="${ETAP_SANITIZE_TIMEOUT:-900}"
logs="${ETAP_SANITIZE_LOGS:-$dist/sanitize-logs}"
mkdir -p "$logs"
export ETAP_REQUIRE_GPU=1
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
echo "compute-sanitizer: $san ($("$san" --version 2>/dev/null | grep -o 'Version [^ ]*' || echo '?'))"
echo "logs: $logs"

# Errors a log reports: "========= ERROR SUMMARY: N errors", or racecheck's "RACECHECK
# SUMMARY: H hazards displayed (N errors, W warnings)", whose H stops at the print limit.
count_errors() {
    {
        grep -Eo 'ERROR SUMMARY: [0-9]+' "$1" | grep -Eo '[0-9]+$'
        grep -Eo 'RACECHECK SUMMARY: [0-9]+ hazards displayed \([0-9]+ errors' "$1" |
            grep -Eo '[0-9]+ errors' | grep -Eo '[0-9]+'
    } | awk '{s += $1} END {print s + 0}'
}

bad=0
for tool in $tools; do
    for bin in gpu_primitives gpu_decode; do
        filters=()
        if [ "$bin" = gpu_decode ]; then
            if [ "$tool" = racecheck ]; then
                read -r -a filters <<<"$race_decode_tests"
            else
                read -r -a filters <<<"$decode_tests"
            fi
        elif [ "$tool" = racecheck ]; then
            # The hand-off self-tests exist to show racecheck's crash at exit on kernels
            # of the seesaw's shape (0 hazards, then exit code 11) to be the tool's, and
            # its named barriers to be what it needs: run them alone under racecheck to
            # see it (docs/PERFORMANCE.md).
            filters=(--skip seesaw_handoff)
        fi
        log="$logs/$tool-$bin.log"
        start=$SECONDS
        timeout "$limit" "$san" --tool "$tool" --error-exitcode 1 \
            "$dist/tests/$bin" --test-threads=1 "${filters[@]}" >"$log" 2>&1
        rc=$?
        secs=$((SECONDS - start))
        errors="$(count_errors "$log")"
        ran="$(grep -Eo 'test result: [a-z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | head -n 1)"
        if [ "$rc" -eq 124 ]; then
            verdict="TIMEOUT after ${limit}s"
        elif [ "$errors" -gt 0 ]; then
            verdict="ERRORS: $errors reported"
        elif [ "$rc" -ne 0 ]; then
            verdict="FAILED (exit $rc)"
        elif [ "${ran:-0 passed}" = "0 passed" ]; then
            verdict="NO TEST RAN"
        else
            verdict="clean"
        fi
        printf '%-10s %-15s %-24s %4ds  %s  [%s]\n' "$tool" "$bin" "$verdict" "$secs" \
            "${ran:-0 passed}" "${filters[*]:-all tests}"
        if [ "$verdict" != clean ]; then
            bad=$((bad + 1))
            grep -E '^=========|panicked|FAILED' "$log" | head -n 40 | sed 's/^/    /'
            echo "    (full log: $log)"
        fi
    done
done

if [ "$bad" -ne 0 ]; then
    echo "sanitize: $bad run(s) not clean"
    exit 1
fi
echo "sanitize: all clean"
