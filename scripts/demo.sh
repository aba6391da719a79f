#!/usr/bin/env bash
# The main job on embedded data: DDM learns a synthetic lens' 8x8 RGB PSF grid from unpaired sharp and blurry
# frames of scikit-image's photos, then deblurs two test photos with it; writes outputs/demo/ (the true vs learned
# grid, before/after panels, a report with the baselines, and DDM's own outputs under ddm/). Extra arguments go to
# `blindfast demo` (e.g. --preset quality, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
"${BLINDFAST_VENV:-.venv}/bin/blindfast" info
"${BLINDFAST_VENV:-.venv}/bin/blindfast" demo "$@"
