"""patchify / overlap_add: ours vs the torch composition (F.unfold + the layout change + normalisation; F.fold) and
that composition under torch.compile ("torch_compile").

Memory-bound: each entry reports GB/s of the minimum traffic (image read + patches written, or the reverse) and
its fraction of this run's copy bandwidth (benchmarks/conftest.py `machine`). "blindfast_out" writes into a
preallocated batch: a fresh batch's pages fault in on first write, which for the large batches costs more than
the copy (the caller avoids it by reusing a buffer across diffusion steps). float32 rows everywhere, bfloat16 rows
on CUDA (conftest.py DTYPES).
Run: python -m pytest benchmarks/bench_patchify.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import pytest
import torch
from conftest import DTYPES, compiled, compiled_baseline, record_bandwidth

from blindfast.ops.patchify import overlap_add, patchify
from blindfast.ops.reference.patchify import overlap_add_reference, patchify_reference

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# (B, C, H, W, size, stride): a batch of 256^2 estimates (66 MB of patches), one 1024^2 image (47 MB), and a batch
# of small images with heavily overlapping patches (ceil(size / stride)^2 = 16 per pixel; 33 MB).
CONFIGS = [(8, 3, 256, 256, 64, 16), (1, 3, 1024, 1024, 64, 32), (16, 3, 128, 128, 32, 8)]
CONFIG_IDS = ["{}x{}x{}x{}-k{}s{}".format(*c) for c in CONFIGS]
QUICK_CONFIGS = [pytest.param(c, marks=pytest.mark.quick) if c == CONFIGS[2] else c for c in CONFIGS]


def make_inputs(device, config, dtype=torch.float32):
    B, C, H, W, size, stride = config
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, H, W, generator=g).to(device, dtype)
    patches = patchify(x, size, stride, mean=MEAN, std=STD)
    return x, patches


@pytest.mark.parametrize("impl", ["blindfast", "blindfast_out", "reference", compiled_baseline()])
@pytest.mark.parametrize("config", QUICK_CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_patchify(benchmark, device, machine, dtype, config, impl):
    size, stride = config[-2:]
    x, patches = make_inputs(device, config, dtype)
    out = torch.empty_like(patches)
    reference = compiled(patchify_reference) if impl == "torch_compile" else patchify_reference
    fn = {"blindfast": lambda: patchify(x, size, stride, mean=MEAN, std=STD),
          "blindfast_out": lambda: patchify(x, size, stride, mean=MEAN, std=STD, out=out),
          "reference": lambda: reference(x, size, stride, MEAN, STD),
          "torch_compile": lambda: reference(x, size, stride, MEAN, STD)}[impl]
    benchmark.group = f"patchify-{CONFIG_IDS[CONFIGS.index(config)]}"
    # the normalisation: a subtraction and a multiplication per patch element
    record_bandwidth(benchmark, fn, device, machine, x.nbytes + patches.nbytes, flops=2 * patches.numel())


@pytest.mark.parametrize("impl", ["blindfast", "reference", compiled_baseline()])
@pytest.mark.parametrize("config", QUICK_CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_overlap_add(benchmark, device, machine, dtype, config, impl):
    H, W, size, stride = config[2:]
    x, patches = make_inputs(device, config, dtype)
    reference = compiled(overlap_add_reference) if impl == "torch_compile" else overlap_add_reference
    fn = {"blindfast": lambda: overlap_add(patches, (H, W), stride, std=STD),
          "reference": lambda: reference(patches, (H, W), stride, STD),
          "torch_compile": lambda: reference(patches, (H, W), stride, STD)}[impl]
    benchmark.group = f"overlap_add-{CONFIG_IDS[CONFIGS.index(config)]}"
    # an addition per patch element, a division per pixel
    record_bandwidth(benchmark, fn, device, machine, x.nbytes + patches.nbytes, flops=patches.numel() + x.numel())
