#!/usr/bin/env bash
# The test suite: set up the environment, run pytest (Triton kernels through TRITON_INTERPRET=1 when there is no
# GPU), then the C++ op tests at every lower CPU level and on emulated older CPUs, then once more against an
# AddressSanitizer + UBSan build of the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
venv="${BLINDFAST_VENV:-.venv}"
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
bash scripts/test_cpu_levels.sh
bash scripts/test_sanitizers.sh
