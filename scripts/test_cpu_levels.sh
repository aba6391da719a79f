#!/usr/bin/env bash
# The C++ op tests once more at every lower CPU level this machine runs (forced by $BLINDFAST_CPU_LEVEL; the main
# pytest run used the best one), then the dispatch tests under emulated older CPUs where qemu-user is installed
# (`apt-get install qemu-user`; .ci/run installs it): Haswell (AVX2 without AVX-512) must get avx2, SandyBridge
# (AVX without AVX2) baseline, and each must compute every op family like the float64 references.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${BLINDFAST_VENV:-.venv}/bin/python"
op_tests=(tests/ops/test_sv_conv.py tests/ops/test_product_conv.py tests/ops/test_flow.py tests/ops/test_patchify.py
          tests/ops/test_info_nce.py tests/ops/test_hqs.py tests/ops/test_cpu_dispatch.py)
lower=$("$py" -c "from blindfast.ops import _backend; print(' '.join(_backend.cpu().supported_levels()[:-1]))")
for level in $lower; do
  echo "== C++ op tests at BLINDFAST_CPU_LEVEL=$level"
  BLINDFAST_CPU_LEVEL=$level "$py" -m pytest -q -p no:cacheprovider "${op_tests[@]}"
done
if [ "$(uname -m)" = x86_64 ] && command -v qemu-x86_64 > /dev/null; then
  for cpu_level in Haswell:avx2 SandyBridge:baseline; do
    echo "== dispatch tests on an emulated ${cpu_level%%:*} CPU (expects ${cpu_level##*:})"
    BLINDFAST_EXPECT_LEVEL=${cpu_level##*:} qemu-x86_64 -cpu "${cpu_level%%:*}" "$py" -m pytest -q -p no:cacheprovider \
      tests/ops/test_cpu_dispatch.py
  done
else
  echo "== emulated-CPU dispatch tests skipped: qemu-x86_64 not installed (apt-get install qemu-user)"
fi
