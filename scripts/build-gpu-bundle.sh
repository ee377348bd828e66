#!/usr/bin/env bash
# Builds, on this (GPU-less) machine, everything the GPU machine runs, into dist/:
#   dist/tests/<name>        every release test harness of the workspace (lib unit tests,
#                            tests/*.rs, ...); bin unit tests are named bin-<name>
#   dist/flashmla-etap       the release CLI
#   dist/run-gpu-bundle.sh   the runner (a copy of scripts/run-gpu-bundle.sh)
#   dist/sanitize.sh         compute-sanitizer over the fast GPU tests (scripts/sanitize.sh)
#   dist/ab-bench.sh         A-B-B-A benchmark of two builds in one run (scripts/ab-bench.sh)
#   dist/profile.sh          ncu of one decode launch at each point of docs/PROFILE.md
#                            (scripts/profile.sh)
#   dist/sanitizer/          only with ETAP_BUNDLE_SANITIZER=1: compute-sanitizer itself
#                            (the nvidia-cuda-sanitizer-api 13.0 wheel's tool and libraries in bin/, ~20 MB)
#   dist/exp/<ref>/          only with ETAP_BUNDLE_REFS="ref ...": the CLI and the
#                            gpu_decode / gpu_stress harnesses built from each git ref (a
#                            branch to A-B against this checkout with dist/ab-bench.sh;
#                            built in a worktree under target/bundle-refs/)
#   dist/MANIFEST            commit and build facts
# The GPU machine has no Rust toolchain; the binaries load libcuda dynamically.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release --bin flashmla-etap
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --release --workspace --no-run --message-format=json >"$json"

rm -rf dist/tests
mkdir -p dist/tests
python3 - "$json" <<'PY'
import json, os, shutil, sys
seen = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("profile", {}).get("test"):
        continue
    exe = m.get("executable")
    if not exe:
        continue
    t = m["target"]
    name = t["name"]
    if "bin" in t["kind"]:
        name = "bin-" + name
    if name in seen and seen[name] != exe:
        sys.exit(f"two test targets would both be dist/tests/{name}: {seen[name]} and {exe}")
    seen[name] = exe
    shutil.copy2(exe, os.path.join("dist/tests", name))
    print(f"dist/tests/{name:<28} <- {os.path.relpath(exe)}")
if not seen:
    sys.exit("no test executables found in cargo's output")
PY

exe_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
cp "$exe_dir/flashmla-etap" dist/flashmla-etap
cp scripts/run-gpu-bundle.sh dist/run-gpu-bundle.sh
cp scripts/sanitize.sh dist/sanitize.sh
cp scripts/ab-bench.sh dist/ab-bench.sh
cp scripts/profile.sh dist/profile.sh
chmod +x dist/run-gpu-bundle.sh dist/sanitize.sh dist/ab-bench.sh dist/profile.sh dist/flashmla-etap dist/tests/*
rm -rf dist/sanitizer
if [ "${ETAP_BUNDLE_SANITIZER:-0}" = 1 ]; then
    # For machines without a CUDA toolkit. It looks for its injection libraries beside
    # itself, so the wheel's bin/ and lib/ go into one folder. On the H200 pool machines
    # (driver 580) this tool, 13.0 as 12.9, stops at "Target application terminated
    # before first instrumented API call", so sanitize.sh prefers the machine's own.
    san=.tools/sanitizer13/nvidia/cu13
    if [ ! -f "$san/bin/compute-sanitizer" ]; then
        python3 -m pip install --quiet --no-deps --target .tools/sanitizer13 \
            nvidia-cuda-sanitizer-api==13.0.85
    fi
    mkdir -p dist/sanitizer/bin
    cp "$san/bin/compute-sanitizer" "$san"/lib/*.so dist/sanitizer/bin/
    chmod +x dist/sanitizer/bin/compute-sanitizer
fi

rm -rf dist/exp
for ref in ${ETAP_BUNDLE_REFS:-}; do
    name="$(echo "$ref" | sed 's#[^A-Za-z0-9._-]#_#g')"
    work="target/bundle-refs/$name"
    commit="$(git rev-parse --verify "$ref^{commit}")"
    git worktree remove --force "$work/src" 2>/dev/null || rm -rf "$work/src"
    git worktree prune
    git worktree add --force --detach "$work/src" "$commit" >/dev/null
    if [ ! -d "$work/target/release" ]; then
        # Seeded with this checkout's build: the dependencies need not be compiled again.
        # The workspace's own crates are left out: cargo would take this checkout's build
        # script (and so its PTX post-processing) or kernel crate as the ref's. The copy
        # keeps the files' times: with fresh ones cargo sees each dependency's build-script
        # output as newer than the dependency and builds them all again (~5 minutes).
        mkdir -p "$work/target"
        cp -a "$exe_dir" "$work/target/release"
        for crate in flashmla-etap etap-kernel; do
            rm -rf "$work/target/release/build/$crate-"* \
                "$work/target/release/.fingerprint/$crate-"* \
                "$work/target/release/deps/lib${crate//-/_}-"* \
                "$work/target/release/deps/${crate//-/_}-"*
        done
    fi
    mkdir -p "dist/exp/$name/tests"
    (
        # The ref's build uses this checkout's ptxas (scripts/setup.sh installed it here).
        local_ptxas="$PWD/.tools/nvcc/nvidia/cuda_nvcc/bin/ptxas"
        if [ -z "${ETAP_PTXAS:-}" ] && [ -x "$local_ptxas" ]; then
            export ETAP_PTXAS="$local_ptxas"
        fi
        cd "$work/src"
        export CARGO_TARGET_DIR="$PWD/../target"
        cargo build --release --bin flashmla-etap
        cargo test --release --no-run --message-format=json --test gpu_decode --test gpu_stress >../tests.json
    )
    cp "$work/target/release/flashmla-etap" "dist/exp/$name/flashmla-etap"
    python3 - "$work/tests.json" "dist/exp/$name/tests" <<'PY'
import json, shutil, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            shutil.copy2(m["executable"], f"{sys.argv[2]}/{m['target']['name']}")
PY
    echo "$ref: $commit" >"dist/exp/$name/COMMIT"
    echo "dist/exp/$name/ <- $ref ($commit)"
done

{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    echo "rustc: $(rustc --version)"
    glibc="$(objdump -T dist/flashmla-etap dist/tests/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)"
    echo "newest glibc symbol needed: ${glibc:-unknown}"
    for ref in ${ETAP_BUNDLE_REFS:-}; do
        echo "also built: $ref = $(git rev-parse --verify "$ref^{commit}") (dist/exp/)"
    done
} >dist/MANIFEST
cat dist/MANIFEST
du -sh dist
echo "bundle ready: carry dist/ to the GPU machine and run dist/run-gpu-bundle.sh (or scripts/run-gpu-bundle.sh) there"
