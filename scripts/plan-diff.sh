#!/usr/bin/env bash
# Runs here, without a GPU: which bench points two builds of `flashmla-etap` plan
# differently, so that an A-B run (scripts/ab-bench.sh) times only points a planner change
# moves. Prints one `--point ...` argument per such point, ready for `bench` or
# `ab-bench.sh`, and a count on stderr.
# Usage: plan-diff.sh BASE_BIN NEW_BIN [anchors|quick|varlen] [fast|accurate]
# (defaults: varlen, fast).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 BASE_BIN NEW_BIN [anchors|quick|varlen] [fast|accurate]" >&2
    exit 2
fi
base_bin="$1"
new_bin="$2"
sweep="${3:-varlen}"
precision="${4:-fast}"
for b in "$base_bin" "$new_bin"; do
    if [ ! -x "$b" ]; then
        echo "error: $b is not an executable flashmla-etap" >&2
        exit 2
    fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$base_bin" plan --sweep "$sweep" --precision "$precision" >"$tmp/base"
"$new_bin" plan --sweep "$sweep" --precision "$precision" >"$tmp/new"

# One line per point: its header (`b=16 s_q=1 h_q=16 s_k=1024v (Fast, 132 SMs):`) and its
# plan's lines joined, so that the two builds' points compare line by line.
flatten() {
    awk '/^[^ ]/ { if (p != "") print p; p = $0; next } { p = p "|" $0 } END { if (p != "") print p }' "$1"
}
flatten "$tmp/base" >"$tmp/base.flat"
flatten "$tmp/new" >"$tmp/new.flat"
if [ "$(wc -l <"$tmp/base.flat")" != "$(wc -l <"$tmp/new.flat")" ]; then
    echo "error: the two builds planned different point sets" >&2
    exit 1
fi
paste -d '\n' "$tmp/base.flat" "$tmp/new.flat" |
    awk 'NR % 2 == 1 { a = $0; next } a != $0 { split(a, h, " [(]"); gsub(" ", ",", h[1]); print "--point " h[1]; n++ }
         END { printf "%d of %d points planned differently (%s, %s)\n", n, NR / 2, "'"$sweep"'", "'"$precision"'" > "/dev/stderr" }'
