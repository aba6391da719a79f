#!/usr/bin/env bash
# The main job on embedded data: blur an embedded photo with a synthetic 8x8 lens PSF grid, restore it, write
# outputs/demo/{before_after.png, psf_grid.png, metrics.json}. Extra arguments go to `blindfast demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
"${BLINDFAST_VENV:-.venv}/bin/blindfast" info
"${BLINDFAST_VENV:-.venv}/bin/blindfast" demo "$@"
