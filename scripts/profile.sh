#!/usr/bin/env bash
# Runs ON the GPU machine, from the bundle of scripts/build-gpu-bundle.sh: Nsight Compute
# (ncu) on one decode launch at each of the points of docs/PROFILE.md, inside `bench`'s CUDA
# graph (the 41st decode launch: past the eager call and the warm-up), clocks and caches
# left as the bench runs them. Writes one raw CSV per point (every metric of the sections
# below) and prints the figures docs/PROFILE.md tabulates.
#
# Usage: profile.sh OUT_DIR [DIST_DIR]   (needs python3 for the summary lines)
# Environment:
#   NCU                the ncu executable (else PATH, then /usr/local/cuda/bin/ncu)
#   ETAP_PROFILE_ONLY  numbers of the points to run (default: all), e.g. "1 3"
#   ETAP_PROFILE_POINTS
#                      other points instead of docs/PROFILE.md's, separated by ';', each
#                      "PRECISION BENCH_POINT", e.g. "accurate b=16,h_q=64,s_k=65536"
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [DIST_DIR]" >&2
    exit 2
fi
out="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 2 ]; then
    dist="$2"
elif [ -x "$here/flashmla-etap" ]; then
    dist="$here" # the copy inside dist/
else
    dist="$here/../dist" # scripts/profile.sh in a checkout
fi
bin="$dist/flashmla-etap"
ncu="${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}"
for f in "$bin" "$ncu"; do
    if [ ! -x "$f" ]; then
        echo "error: $f is missing (build the bundle with scripts/build-gpu-bundle.sh; set NCU)" >&2
        exit 2
    fi
done
mkdir -p "$out"
"$ncu" --version | tail -1

points=(
    "fast b=16,h_q=16,s_k=65536"
    "fast b=16,h_q=32,s_k=65536"
    "fast b=32,h_q=128,s_k=8192"
    "accurate b=32,h_q=128,s_k=8192"
    "fast b=16,h_q=16,s_k=512"
)
if [ -n "${ETAP_PROFILE_POINTS:-}" ]; then
    IFS=';' read -r -a points <<<"$ETAP_PROFILE_POINTS"
fi
failed=0
for i in "${!points[@]}"; do
    n=$((i + 1))
    if [ -n "${ETAP_PROFILE_ONLY:-}" ] && ! grep -qw "$n" <<<"$ETAP_PROFILE_ONLY"; then
        continue
    fi
    read -r precision point <<<"${points[$i]}"
    csv="$out/point$n.csv"
    if ! timeout 300 "$ncu" --clock-control none --cache-control none \
        --kernel-name regex:etap_decode --launch-skip 40 --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --section WarpStateStats \
        --section SchedulerStats --section LaunchStats --section Occupancy \
        --csv --page raw --log-file "$csv" \
        "$bin" bench --point "$point" --precision "$precision" --settle-ms 0 \
        >"$out/point$n.bench.txt" 2>&1; then
        echo "point $n ($precision $point): ncu failed, see $out/point$n.bench.txt" >&2
        failed=1
        continue
    fi
    python3 - "$csv" "$precision $point" <<'PY' || failed=1
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 50]
m = dict(zip(rows[0], rows[2]))
num = lambda k: float(m[k].replace(",", ""))
stall = lambda s: num(f"smsp__average_warps_issue_stalled_{s}_per_issue_active.ratio")
print(
    f"{sys.argv[2]}: {m['Kernel Name']} grid {m['Grid Size']}, "
    f"{num('gpu__time_duration.sum') / 1e3:.1f} us at {num('gpc__cycles_elapsed.avg.per_second') / 1e9:.2f} GHz; "
    f"DRAM {num('gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed'):.1f} % "
    f"({num('dram__bytes.sum.per_second') / 1e9:.0f} GB/s), "
    f"L2 {num('lts__throughput.avg.pct_of_peak_sustained_elapsed'):.1f} %, "
    f"tensor pipe {num('sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active'):.1f} %, "
    f"issue {num('smsp__issue_active.avg.pct_of_peak_sustained_active'):.1f} %; "
    "stalls per issue: "
    + ", ".join(
        f"{s} {stall(s):.2f}"
        for s in ["long_scoreboard", "barrier", "wait", "gmma", "short_scoreboard", "no_instruction"]
    )
)
PY
done
exit "$failed"
