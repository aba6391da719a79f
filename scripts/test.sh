#!/usr/bin/env bash
# The test suite: set up the environment, run pytest (Triton kernels through TRITON_INTERPRET=1 when there is no
# GPU), then the C++ op tests once more against an AddressSanitizer + UBSan build of the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
venv="${BLINDFAST_VENV:-.venv}"
# The pytest executable, not `python -m pytest`: the latter puts the source tree (which has no built _C) first
# on sys.path, ahead of the installed package.
"$venv/bin/pytest" tests -q -p no:cacheprovider "$@"
bash scripts/test_sanitizers.sh
