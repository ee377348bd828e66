#!/usr/bin/env bash
# Runs ON the GPU machine: an A-B-B-A benchmark of two builds of `flashmla-etap` in one run
# (the cards of a pool differ by a few percent, so only runs on one card compare), then
# `compare` on the reports. Extra arguments go to every `bench` (e.g. --precision fast
# --only h_q=16 --settle-ms 200: the default second of idle before each point is for
# results runs; here base and new alternate).
# Usage: ab-bench.sh BASE_BIN NEW_BIN OUT_DIR [bench args...]
# Writes OUT_DIR/{base,new}{1,2}.json and prints the comparison (of the runs' median
# replays, then of their fastest, then of their SM cycles a call); ROUNDS=N (default 1)
# repeats the A-B-B-A block.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 BASE_BIN NEW_BIN OUT_DIR [bench args...]" >&2
    exit 2
fi
base_bin="$1"
new_bin="$2"
out="$3"
shift 3
for b in "$base_bin" "$new_bin"; do
    if [ ! -x "$b" ]; then
        echo "error: $b is not an executable flashmla-etap" >&2
        exit 2
    fi
done
mkdir -p "$out"

rounds="${ROUNDS:-1}"
n=0
bases=()
news=()
for _ in $(seq "$rounds"); do
    for side in base new new base; do
        n=$((n + 1))
        k=1
        while [ -e "$out/$side$k.json" ]; do k=$((k + 1)); done
        if [ "$side" = base ]; then bin="$base_bin"; else bin="$new_bin"; fi
        echo "sweep $n: $side ($bin)"
        "$bin" bench --json "$out/$side$k.json" "$@" >"$out/$side$k.txt" 2>&1
        if [ "$side" = base ]; then bases+=("$out/$side$k.json"); else news+=("$out/$side$k.json"); fi
    done
done
join() { local IFS=,; echo "$*"; }
"$new_bin" compare --base "$(join "${bases[@]}")" --new "$(join "${news[@]}")"
# The fastest replays too: under the power cap they show what the medians' spread hides.
"$new_bin" compare --fastest --base "$(join "${bases[@]}")" --new "$(join "${news[@]}")"
# And the SM cycles a call, which the cap's clock steps move less than the medians (builds
# from before the clock probe have no such readings: compare says so).
if ! "$new_bin" compare --cycles --base "$(join "${bases[@]}")" --new "$(join "${news[@]}")"; then
    echo "(no comparison by cycles)"
fi
