"""info_nce: ours (CPU: chunked BLAS + one fused C++ kernel per chunk; CUDA: the flash-decoding Triton kernel) vs
MoCo's reference (einsum + cat + cross_entropy) and that formula under torch.compile ("torch_compile").

MoCo's sizes: D = 128 features, a queue of K = 4096 keys (and MoCo v1/v2's own N = 256 rows against K = 65536, the
shape of issue 18's GPU goal), temperature 0.07, unit vectors; only q requires grad (the keys come from the momentum
encoder). flops = the matrix products: 2 N K D for the forward, twice that with the
backward. Peak memory (extra_info.peak_extra_mb) is the point of the fusion as much as the time: the reference holds
several (N, 1 + K) arrays at once. float32 rows everywhere, bfloat16 rows on CUDA (conftest.py DTYPES).
Run: python -m pytest benchmarks/bench_info_nce.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import pytest
import torch
from conftest import DTYPES, compiled, compiled_baseline, record

from blindfast.ops.info_nce import DEFAULT_CHUNK_ELEMENTS, info_nce
from blindfast.ops.reference.info_nce import info_nce_reference

D, K, TEMPERATURE = 128, 4096, 0.07
# (N, K): two batches against the 4096-key queue, and MoCo's own training shape (N = 256, K = 65536).
SIZES = [pytest.param(4096, K, marks=pytest.mark.quick, id=f"N4096-K{K}"), pytest.param(16384, K, id=f"N16384-K{K}"),
         pytest.param(256, 65536, id="N256-K65536")]


def make_inputs(device, N, dtype=torch.float32, keys=K):
    g = torch.Generator().manual_seed(0)
    q, k_pos, queue = (torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1).to(device, dtype)
                       for n in (N, N, keys))
    return q.requires_grad_(True), k_pos, queue


def operation(loss_fn, op, q, k_pos, queue):
    """A zero-argument callable: the loss alone (op "forward", no grad mode) or the loss and loss.backward()."""
    if op == "forward":
        def forward():
            with torch.no_grad():
                return loss_fn(q, k_pos, queue, TEMPERATURE)
        return forward

    def forward_backward():
        q.grad = None
        loss_fn(q, k_pos, queue, TEMPERATURE).backward()

    return forward_backward


IMPLS = {"blindfast": info_nce, "reference": info_nce_reference, "torch_compile": info_nce_reference}


@pytest.mark.parametrize("impl", ["blindfast", "reference", compiled_baseline()])
@pytest.mark.parametrize("N, keys", SIZES)
@pytest.mark.parametrize("op", ["forward", "forward_backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_info_nce(benchmark, device, machine, dtype, op, N, keys, impl):
    q, k_pos, queue = make_inputs(device, N, dtype, keys)
    benchmark.group = f"info_nce-{op}-N{N}-D{D}-K{keys}"
    flops = 2 * N * keys * D * (2 if op == "forward_backward" else 1)
    input_bytes = sum(t.numel() * t.element_size() for t in (q, k_pos, queue))
    loss_fn = compiled(IMPLS[impl]) if impl == "torch_compile" else IMPLS[impl]
    record(benchmark, operation(loss_fn, op, q, k_pos, queue), device, machine, flops, input_bytes,
           bytes_moved=input_bytes + (q.numel() * q.element_size() if op == "forward_backward" else 0))


@pytest.mark.parametrize("chunk_rows", [32, 64, 128, 256, 512, 1024])
def test_chunk_rows(benchmark, device, machine, chunk_rows):
    """The measurement behind DEFAULT_CHUNK_ELEMENTS (= 512 rows at K = 4096): forward + backward at N = 16384."""
    if device != "cpu":
        pytest.skip("chunks are the CPU path's; the Triton kernel stores no logits")
    N = 16384
    q, k_pos, queue = make_inputs(device, N)
    benchmark.group = f"info_nce-chunk-rows-N{N}-D{D}-K{K}"
    benchmark.extra_info["default"] = chunk_rows * K == DEFAULT_CHUNK_ELEMENTS
    loss_fn = lambda *args: info_nce(*args, chunk_elements=chunk_rows * K)  # noqa: E731
    input_bytes = sum(t.numel() * t.element_size() for t in (q, k_pos, queue))
    record(benchmark, operation(loss_fn, "forward_backward", q, k_pos, queue), device, machine, 4 * N * K * D,
           input_bytes)
