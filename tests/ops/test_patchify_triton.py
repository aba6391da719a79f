"""Triton kernels of patchify / overlap_add against the float64 references.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); its cost grows with the number of programs, so the images are small and, on the CPU, the
blocks cover whole patch rows / planes except in the multi-tile tests.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from blindfast.ops.reference.patchify import overlap_add_reference, patchify_reference  # noqa: E402
from blindfast.triton_kernels import patchify as tk  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Interpreter: one program per (b, py, c) band / per plane. CUDA: the autotuner's choice.
PATCH_BLOCKS = {"config": triton.Config({"BLOCK_R": 64, "BLOCK_T": 1024})} if DEVICE == "cpu" else {}
IMAGE_BLOCKS = {"config": triton.Config({"BLOCK_H": 64, "BLOCK_W": 64})} if DEVICE == "cpu" else {}
# Several tiles per band / plane: tile offsets, partial tiles, tiles that start inside a patch.
SMALL_PATCH_BLOCKS = {"config": triton.Config({"BLOCK_R": 2, "BLOCK_T": 16})}
SMALL_IMAGE_BLOCKS = {"config": triton.Config({"BLOCK_H": 8, "BLOCK_W": 16})}

# (B, C, H, W, size, stride): odd sizes, size 1, gaps (stride > size), stride == size, size == image.
CASES = [
    (1, 3, 37, 53, 5, 3),
    (2, 1, 17, 23, 1, 1),
    (1, 3, 37, 53, 3, 7),
    (2, 3, 24, 32, 8, 8),
    (2, 1, 20, 20, 20, 5),
    (1, 1, 29, 37, 13, 4),
]
CASE_IDS = ["x".join(map(str, c)) for c in CASES]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
F32_FACTOR = 4.0  # slack on plain torch's float32 error (different operation orders)
F32_FLOOR = 4 * torch.finfo(torch.float32).eps  # a few roundings, where torch happens to be exact


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(case, dtype, seed=0):
    B, C, H, W = case[:4]
    return torch.rand(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _constants(C: int, normalise: bool, dtype=torch.float64):
    """(mean, std) as (C,) tensors of ``dtype``, or (None, None)."""
    if not normalise:
        return None, None
    return torch.tensor(MEAN[:C], dtype=dtype), torch.tensor(STD[:C], dtype=dtype)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (ref in float64)."""
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()


def _patchify(x, size, stride, mean, std, blocks=None):
    on = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return tk.patchify(x.to(DEVICE), size, stride, on(mean), on(std), **(blocks or PATCH_BLOCKS)).cpu()


def _overlap_add(p, H, W, stride, std, blocks=None):
    std = None if std is None else std.to(DEVICE)
    return tk.overlap_add(p.to(DEVICE), H, W, stride, std, **(blocks or IMAGE_BLOCKS)).cpu()


@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_matches_reference(case, normalise):
    B, C, H, W, size, stride = case
    x = _image(case, torch.float64)
    mean, std = _constants(C, normalise)
    p = _patchify(x, size, stride, mean, std)
    torch.testing.assert_close(p, patchify_reference(x, size, stride, mean, std), rtol=1e-14, atol=1e-14)
    v = torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(_overlap_add(v, H, W, stride, std), overlap_add_reference(v, (H, W), stride, std),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5]], ids=[CASE_IDS[0], CASE_IDS[2], CASE_IDS[5]])
def test_float32_within_torch_error(case):
    B, C, H, W, size, stride = case
    x64 = _image(case, torch.float64, seed=2)
    x = x64.float()
    mean64, std64 = _constants(C, True)
    mean, std = mean64.float(), std64.float()
    exact = patchify_reference(x64, size, stride, mean64, std64)
    torch_err = _rel_err(patchify_reference(x, size, stride, mean, std), exact)
    p = _patchify(x, size, stride, mean, std)
    assert p.dtype == torch.float32
    assert _rel_err(p, exact) <= F32_FACTOR * torch_err + F32_FLOOR

    v64 = torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = v64.float()
    exact = overlap_add_reference(v64, (H, W), stride, std64)
    torch_err = _rel_err(overlap_add_reference(v, (H, W), stride, std), exact)
    assert _rel_err(_overlap_add(v, H, W, stride, std), exact) <= F32_FACTOR * torch_err + F32_FLOOR


@pytest.mark.parametrize("case", [CASES[0], CASES[5]], ids=[CASE_IDS[0], CASE_IDS[5]])
def test_several_tiles(case):
    """Blocks smaller than a patch row band / a plane."""
    B, C, H, W, size, stride = case
    x = _image(case, torch.float64, seed=4)
    mean, std = _constants(C, True)
    p = _patchify(x, size, stride, mean, std, blocks=SMALL_PATCH_BLOCKS)
    torch.testing.assert_close(p, patchify_reference(x, size, stride, mean, std), rtol=1e-14, atol=1e-14)
    out = torch.full_like(p, float("nan"), device=DEVICE)  # the out= path of the helper
    assert tk.patchify(x.to(DEVICE), size, stride, mean.to(DEVICE), std.to(DEVICE), out, **PATCH_BLOCKS) is out
    torch.testing.assert_close(out.cpu(), p, rtol=0, atol=0)
    torch.testing.assert_close(_overlap_add(p, H, W, stride, std, blocks=SMALL_IMAGE_BLOCKS),
                               overlap_add_reference(p, (H, W), stride, std), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("index", range(len(tk.PATCH_CONFIGS)))
def test_every_config_of_every_kernel(index):
    """Each autotuning candidate, forced, on one small float64 case per kernel (patches of 5 with stride 3: tiles
    that start inside a patch, partial tiles at the image's edges)."""
    case = (1, 2, 13, 17, 5, 3)
    B, C, H, W, size, stride = case
    x = _image(case, torch.float64, seed=9)
    mean, std = _constants(C, True)
    p = _patchify(x, size, stride, mean, std, blocks={"config": tk.PATCH_CONFIGS[index]})
    torch.testing.assert_close(p, patchify_reference(x, size, stride, mean, std), rtol=1e-14, atol=1e-14)
    got = _overlap_add(p, H, W, stride, std, blocks={"config": tk.IMAGE_CONFIGS[index % len(tk.IMAGE_CONFIGS)]})
    torch.testing.assert_close(got, overlap_add_reference(p, (H, W), stride, std), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=[CASE_IDS[0], CASE_IDS[2]])
def test_adjoint_dot_product(case):
    """<P x, v> = <x, P^T v> for the kernels alone (P = patches of x / std), to float64 rounding."""
    B, C, H, W, size, stride = case
    x = _image(case, torch.float64, seed=5)
    _, std = _constants(C, True)
    px = _patchify(x, size, stride, None, std)
    v = torch.randn(px.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    gap = ((px * v).sum() - (x * _overlap_add(v, H, W, stride, std)).sum()).abs()
    assert gap / (px.norm() * v.norm()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_computes_in_float32(dtype):
    """Half images with float32 constants: float32 arithmetic and one rounding at the end, so each output is within
    one half ulp of the exact result of the rounded inputs (plus a float32 allowance). The interpreter converts
    float32 to bfloat16 by truncation (whatever the rounding mode asked), which costs up to one whole ulp."""
    rounding_ulps = 1.0 if dtype == torch.bfloat16 and DEVICE == "cpu" else 0.5
    case = CASES[0]
    B, C, H, W, size, stride = case
    x = _image(case, dtype, seed=7)
    mean, std = _constants(C, True, torch.float32)
    p = _patchify(x, size, stride, mean, std)
    assert p.dtype == dtype
    exact = patchify_reference(x.double(), size, stride, mean.double(), std.double())
    bound = rounding_ulps * torch.finfo(dtype).eps * exact.abs() + F32_FLOOR * exact.abs().max()
    assert ((p.double() - exact).abs() <= bound).all()

    v = torch.randn(p.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    got = _overlap_add(v, H, W, stride, std)
    assert got.dtype == dtype
    exact = overlap_add_reference(v.double(), (H, W), stride, std.double())
    bound = rounding_ulps * torch.finfo(dtype).eps * exact.abs() + F32_FLOOR * exact.abs().max()
    assert ((got.double() - exact).abs() <= bound).all()


def test_launch_helpers_refuse_non_contiguous():
    x = _image((1, 1, 8, 8), torch.float32).transpose(-1, -2)
    with pytest.raises(ValueError, match="contiguous"):
        tk.patchify(x, 3, 2, None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the op's CUDA path needs a GPU")
def test_cuda_op_and_autograd():
    """blindfast.ops.patchify dispatches CUDA tensors to these kernels; each op's backward is the other kernel."""
    from blindfast.ops.patchify import overlap_add, patchify

    x = _image(CASES[0], torch.float64).cuda().requires_grad_()
    p = patchify(x, 5, 3, mean=MEAN, std=STD)
    torch.testing.assert_close(p.detach().cpu(), patchify_reference(x.detach().cpu(), 5, 3, MEAN, STD),
                               rtol=1e-14, atol=1e-14)
    out = torch.empty_like(p)
    with torch.no_grad():
        patchify(x, 5, 3, mean=MEAN, std=STD, out=out)
    torch.testing.assert_close(out, p, rtol=0, atol=0)
    small = _image((1, 3, 9, 11), torch.float64).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: patchify(a, 3, 2, mean=MEAN, std=STD), (small,))
    patches = torch.randn(4 * 5, 3, 3, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: overlap_add(t, (9, 11), 2, std=STD), (patches,))
