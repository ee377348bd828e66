#!/usr/bin/env bash
# The main command: builds everything and runs one MLA decode step on the GPU (`demo`).
# Extra arguments go to `flashmla-etap demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec cargo run --release -- demo "$@"
