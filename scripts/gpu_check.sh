#!/usr/bin/env bash
# One prepared GPU check (issue 18), at most 8 minutes on one GPU machine whose python3 already holds torch, triton,
# pytest and pytest-benchmark (nothing is downloaded): installs blindfast from this working tree, runs the CUDA
# tests (every op's Triton path against the float64 references with every autotuning config, the opchecks, the
# launch and sync checks, the autotuner wrapper), then `blindfast bench --device cuda --quick` (float32 and
# bfloat16 rows; the torch.compile baselines in float32 only, to stay within the time: each compiles for seconds).
# Leaves in the folder given as its argument (default: $OUT, else gpu_check/): gpu.txt, info.txt, cuda_tests.log,
# and bench/ (bench.json, bench.md, roofline.png, the raw JSON). Time limits: 60 + 200 + 200 s, under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${BLINDFAST_PYTHON:-python3}
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt" || exit 1
# The machine's own torch / triton stay: --no-deps, and no build isolation (its scikit-build-core and pybind11).
timeout 60 "$python" -m pip install -q --no-build-isolation --no-deps -e . || { echo "install failed"; exit 1; }
"$python" -m blindfast info | tee "$out/info.txt"
# CUDA tests: the ops' files run on CUDA tensors wherever a GPU exists (DEVICE = "cuda" in them).
# (test_noise's one CUDA test: a generator on another device.)
timeout 200 "$python" -m pytest -q -p no:cacheprovider tests/ops/test_flow_triton.py tests/ops/test_hqs_triton.py \
    tests/ops/test_info_nce_triton.py tests/ops/test_patchify_triton.py tests/ops/test_sv_conv_triton.py \
    tests/ops/test_triton_launches.py tests/ops/test_triton_scalars.py tests/ops/test_triton_tuning.py \
    tests/ops/test_determinism.py tests/physics/test_noise.py::test_error_generator_on_another_device \
    2>&1 | tee "$out/cuda_tests.log" || status=1
timeout 200 "$python" -m blindfast bench --device cuda --quick --select "not (torch_compile and bfloat16)" \
    --out "$out/bench" 2>&1 | tail -40 || status=1
echo "gpu_check: status $status; wrote $out"
exit $status
