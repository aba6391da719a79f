#!/usr/bin/env bash
# Builds the extension (one -march=native module) with -fsanitize=address,undefined into build-sanitize/ and runs
# the C++ op tests against it (blindfast loads the extension named by BLINDFAST_C_PATH instead of the installed one).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${BLINDFAST_VENV:-.venv}/bin/python"
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLINDFAST_SANITIZE=ON -DBLINDFAST_NATIVE=ON \
  -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" > /dev/null
cmake --build build-sanitize > /dev/null
so=$(ls build-sanitize/_C_native*.so)
sanitized() {
  BLINDFAST_C_PATH="$so" \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$(dirname "$py")/pytest" -q -p no:cacheprovider --capture=sys "$@"
}
# --capture=sys: pytest's default fd capture would swallow a sanitizer report written to fd 2 when the process dies.
# sv_conv's full file takes minutes under ASan: the subset that reaches every kernel and boundary path
sanitized tests/ops/test_sv_conv.py -k "float64 or dot_product or random_shapes or non_contiguous"
sanitized tests/ops/test_flow.py tests/ops/test_patchify.py tests/ops/test_info_nce.py tests/ops/test_hqs.py
# every raw op with malformed, empty, oversize and non-contiguous input: a clear error or the reference's result
sanitized tests/ops/test_raw_ops_fuzz.py
