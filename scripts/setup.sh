#!/usr/bin/env bash
# Installs what the build needs, idempotently (safe to run every time, from any directory):
#  - the nightly's rust-src component (device code is built with -Zbuild-std=core), plus
#    clippy and rustfmt for scripts/test.sh;
#  - ptxas (assembles the sm_90a cubin and reports registers/spills), from the PyPI wheel
#    nvidia-cuda-nvcc-cu12, into .tools/nvcc (git-ignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NVCC_WHEEL="nvidia-cuda-nvcc-cu12==12.9.86"
PTXAS=".tools/nvcc/nvidia/cuda_nvcc/bin/ptxas"

installed="$(rustup component list --toolchain nightly --installed 2>/dev/null || true)"
for comp in rust-src clippy rustfmt; do
    if ! grep -q "^${comp}\b" <<<"$installed"; then
        echo "setup: installing the nightly's ${comp} component"
        rustup component add "$comp" --toolchain nightly
    fi
done

if [ ! -x "$PTXAS" ]; then
    echo "setup: installing ptxas (${NVCC_WHEEL}) into .tools/nvcc"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target .tools/nvcc "$NVCC_WHEEL"
    chmod +x "$PTXAS"
fi
"$PTXAS" --version | tail -n 1
