"""Triton kernels of sv_conv against the float64 references.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); its cost grows with the number of programs and operations, so the images are small and, on
the CPU, the blocks cover a whole plane (one program per plane) except in the multi-tile tests.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402

from blindfast.ops._checks import PADDING_CODES  # noqa: E402
from blindfast.ops.reference import PADDINGS, sv_conv_adjoint_reference, sv_conv_reference  # noqa: E402
from blindfast.triton_kernels import sv_conv as tk  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Interpreter: one 64 x 64 tile per plane. CUDA: the launch helpers' default blocks.
BLOCKS = {"BLOCK_H": 64, "BLOCK_W": 64} if DEVICE == "cpu" else {}
# Several tiles per plane, with tiles that straddle grid cells (tile offsets, masks, node windows of grad_psf).
SMALL_BLOCKS = {"BLOCK_H": 16, "BLOCK_W": 32}

# name: (x shape (B, C, H, W), psf_grid shape (Bg, Cg, Gy, Gx, kh, kw)). Odd sizes; grids up to 8 x 8 (at most
# the output size); kernels 1, 3, 4 (even) and 7 x 4 / 3 x 2 (non-square); batch and channel broadcasting.
CASES = {
    "grid3x5-k3-Cg1": ((1, 3, 37, 53), (1, 1, 3, 5, 3, 3)),
    "grid1x1-k1-Bg1Cg1": ((2, 3, 24, 40), (1, 1, 1, 1, 1, 1)),
    "grid8x8-k4": ((1, 1, 31, 45), (1, 1, 8, 8, 4, 4)),
    "grid3x5-k7x4-Bg1": ((2, 1, 25, 39), (1, 1, 3, 5, 7, 4)),
    "grid2x3-k3x2-Cg1": ((2, 3, 26, 38), (2, 1, 2, 3, 3, 2)),
    # one plane, for the multi-tile and half-precision tests
    "plane-grid3x5-k3": ((1, 1, 29, 37), (1, 1, 3, 5, 3, 3)),
}
MAIN_CASES = [name for name in CASES if not name.startswith("plane")]
# float32 checks the accumulation against a tolerance derived from torch; all of the geometry is covered in float64
# (the interpreter is slow).
F32_CASES = ["grid3x5-k3-Cg1", "grid8x8-k4", "grid3x5-k7x4-Bg1"]

F64_RTOL = 1e-12
# Slack on the float32 error of the plain-torch reference (different summation orders), plus a floor of a few
# float32 roundings for the cases where that reference happens to be nearly exact.
F32_FACTOR = 4.0
F32_FLOOR = 4 * torch.finfo(torch.float32).eps


def _inputs(case: str, dtype: torch.dtype, seed: int = 0):
    """x and psf_grid (normalised kernels), drawn in float64 and rounded to ``dtype``: returns the ``dtype``
    tensors and their exact float64 values."""
    x_shape, psf_shape = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    psf = torch.rand(psf_shape, generator=gen, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    low = tuple(t.to(dtype) for t in (x, psf))
    return low, tuple(t.double() for t in low)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (ref in float64)."""
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()


def _grad_psf_reference(x, g, psf, padding):
    _, vjp = torch.func.vjp(lambda h: sv_conv_reference(x, h, padding), psf)
    return vjp(g)[0]


def _run_op(op: str, x, g, psf, padding: str, device=DEVICE, blocks=None):
    """Triton kernel of ``op`` on ``device`` (forward: x; adjoint: g; grad_psf: x and g), result on the CPU."""
    blocks = BLOCKS if blocks is None else blocks
    code = PADDING_CODES[padding]
    x, g, psf = (t.to(device) for t in (x, g, psf))
    if op == "forward":
        out = tk.sv_conv_forward(x, psf, code, **blocks)
    elif op == "adjoint":
        out = tk.sv_conv_adjoint(g, psf, code, **blocks)
    else:
        out = tk.sv_conv_grad_psf(x, g, psf, code, **blocks)
    return out.cpu()


def _reference(op: str, x, g, psf, padding: str):
    """The reference of ``op`` in the dtype of its inputs."""
    if op == "forward":
        return sv_conv_reference(x, psf, padding)
    if op == "adjoint":
        return sv_conv_adjoint_reference(g, psf, padding, x.shape[-2:])
    return _grad_psf_reference(x, g, psf, padding)


def _cotangent(case: str, padding: str, dtype: torch.dtype):
    """A random g on the output grid of ``case`` (rounded to ``dtype``) and its float64 value."""
    x_shape, psf_shape = CASES[case]
    kh, kw = psf_shape[-2:]
    H, W = x_shape[-2:]
    out = (H - kh + 1, W - kw + 1) if padding == "valid" else (H, W)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(*x_shape[:2], *out, generator=gen, dtype=torch.float64).to(dtype)
    return g, g.double()


OPS = ("forward", "adjoint", "grad_psf")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", MAIN_CASES)
@pytest.mark.parametrize("op", OPS)
def test_float64_matches_reference(op, case, padding):
    (x, psf), _ = _inputs(case, torch.float64)
    g, _ = _cotangent(case, padding, torch.float64)
    got = _run_op(op, x, g, psf, padding)
    ref = _reference(op, x, g, psf, padding)
    assert got.shape == ref.shape and got.dtype == torch.float64
    assert _rel_err(got, ref) < F64_RTOL


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", F32_CASES)
@pytest.mark.parametrize("op", OPS)
def test_float32_matches_reference(op, case, padding):
    (x, psf), (x64, psf64) = _inputs(case, torch.float32)
    g, g64 = _cotangent(case, padding, torch.float32)
    exact = _reference(op, x64, g64, psf64, padding)
    # What plain torch gets in float32 on the same inputs sets the scale of an acceptable error.
    torch_err = _rel_err(_reference(op, x, g, psf, padding), exact)
    got = _run_op(op, x, g, psf, padding)
    assert got.dtype == torch.float32
    assert _rel_err(got, exact) <= F32_FACTOR * torch_err + F32_FLOOR


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("op", OPS)
def test_several_tiles_per_plane(op, padding):
    """Blocks smaller than the image: tile offsets, partial tiles, and grad_psf tiles spanning several cells."""
    case = "plane-grid3x5-k3"
    (x, psf), _ = _inputs(case, torch.float64)
    g, _ = _cotangent(case, padding, torch.float64)
    got = _run_op(op, x, g, psf, padding, blocks=SMALL_BLOCKS)
    assert _rel_err(got, _reference(op, x, g, psf, padding)) < F64_RTOL


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", ["grid8x8-k4", "plane-grid3x5-k3"])
def test_adjoint_dot_product(case, padding):
    """<A x, y> = <x, A^T y> for the kernels alone, to float64 rounding."""
    (x, psf), _ = _inputs(case, torch.float64, seed=2)
    y, _ = _cotangent(case, padding, torch.float64)
    ax = _run_op("forward", x, y, psf, padding)
    aty = _run_op("adjoint", x, y, psf, padding)
    assert aty.shape == x.shape
    gap = ((ax * y).sum() - (x * aty).sum()).abs()
    assert gap / (ax.norm() * y.norm()) < 1e-12


@pytest.mark.parametrize("grid", [(1, 4), (3, 1), (1, 1)])
@pytest.mark.parametrize("op", ["forward", "adjoint"])
def test_single_node_axis_reads_nothing_past_the_grid(op, grid):
    """With one node along an axis, the blend's second node on that axis has weight 0 and must not be read: its
    address would lie past the PSF grid (the step to it is 0 then). The grid here is the head of a buffer whose
    rest is NaN, so a read past its end turns the result into NaN instead of adding 0 * garbage."""
    Gy, Gx = grid
    x_shape, kh, kw = (1, 1, 21, 27), 3, 3
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    g = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    psf = torch.rand(1, 1, Gy, Gx, kh, kw, generator=gen, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    buffer = torch.full((2 * psf.numel(),), math.nan, dtype=torch.float64, device=DEVICE)
    buffer[:psf.numel()] = psf.flatten()
    guarded = buffer[:psf.numel()].view(psf.shape)  # contiguous, NaN right after its last tap
    got = _run_op(op, x, g, guarded, "zeros")
    assert _rel_err(got, _reference(op, x, g, psf, "zeros")) < F64_RTOL


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_half_accumulates_in_float32(op, dtype, padding):
    """Half inputs: float32 accumulation and one rounding at the end, so each output is within about one half
    ulp of the exact result (plus the float32 error allowance, for cancellations)."""
    case = "plane-grid3x5-k3"
    (x, psf), (x64, psf64) = _inputs(case, dtype)
    g, g64 = _cotangent(case, padding, dtype)
    exact = _reference(op, x64, g64, psf64, padding)
    (x32, g32, psf32) = (t.float() for t in (x, g, psf))
    f32_allow = F32_FACTOR * _rel_err(_reference(op, x32, g32, psf32, padding), exact) + F32_FLOOR
    got = _run_op(op, x, g, psf, padding)
    assert got.dtype == dtype
    bound = torch.finfo(dtype).eps * exact.abs() + f32_allow * exact.abs().max()
    assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the op's CUDA path needs a GPU")
@pytest.mark.parametrize("padding", PADDINGS)
def test_cuda_op_and_autograd(padding):
    """blindfast.ops.sv_conv dispatches CUDA tensors to these kernels; its autograd uses all three."""
    from blindfast.ops.sv_conv import sv_conv

    (x, psf), _ = _inputs("grid3x5-k7x4-Bg1", torch.float64)
    x, psf = x.cuda().requires_grad_(), psf.cuda().requires_grad_()
    y = sv_conv(x, psf, padding=padding)
    ref = sv_conv_reference(x.detach().cpu(), psf.detach().cpu(), padding)
    assert _rel_err(y.detach().cpu(), ref) < F64_RTOL
    small = (x.detach()[:1, :1, :12, :14].clone().requires_grad_(), psf.detach()[:1, :1].clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, h: sv_conv(a, h, padding=padding), small)


# ---------------------------------------------------------------------------------------------------------------
# torch.use_deterministic_algorithms(True): grad_psf stores per-program partial sums instead of adding them with
# atomics, and adds them up in a fixed order.


@pytest.fixture
def deterministic_algorithms():
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture
def ordered_sums(monkeypatch):
    """Counts the calls of the ordered (atomic-free) summation of grad_psf's partial sums."""
    calls = []
    original = tk._sum_program_partials

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tk, "_sum_program_partials", counted)
    return calls


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("case, blocks", [(name, None) for name in MAIN_CASES] + [("plane-grid3x5-k3", SMALL_BLOCKS)])
def test_grad_psf_deterministic_mode(case, blocks, padding, ordered_sums, deterministic_algorithms):
    """The ordered path gives the reference's result, including broadcast grids (several planes onto one grid) and
    tiles that span several grid cells."""
    (x, psf), _ = _inputs(case, torch.float64)
    g, _ = _cotangent(case, padding, torch.float64)
    got = _run_op("grad_psf", x, g, psf, padding, blocks=blocks)
    assert ordered_sums, "grad_psf added its partial sums with atomics under use_deterministic_algorithms(True)"
    torch.use_deterministic_algorithms(False)  # the reference is no part of the test
    assert _rel_err(got, _reference("grad_psf", x, g, psf, padding)) < F64_RTOL


def test_grad_psf_uses_atomics_by_default(ordered_sums):
    (x, psf), _ = _inputs("plane-grid3x5-k3", torch.float64)
    g, _ = _cotangent("plane-grid3x5-k3", "zeros", torch.float64)
    _run_op("grad_psf", x, g, psf, "zeros")
    assert not ordered_sums


def test_grad_psf_deterministic_mode_repeats_bit_for_bit(deterministic_algorithms):
    """Several tiles per plane and a broadcast grid, float32: every run gives the same bits (on a GPU the atomic
    path does not)."""
    (x, psf), _ = _inputs("grid3x5-k3-Cg1", torch.float32)
    g, _ = _cotangent("grid3x5-k3-Cg1", "reflect", torch.float32)
    first = _run_op("grad_psf", x, g, psf, "reflect", blocks=SMALL_BLOCKS)
    for _ in range(4):
        assert torch.equal(_run_op("grad_psf", x, g, psf, "reflect", blocks=SMALL_BLOCKS), first)


@pytest.mark.parametrize("block", [8, 16, 32])
def test_nodes_per_tile_bounds_every_tile(block):
    """The PSF gradient's per-tile node window: for every tile of ``block`` pixels of ``n``, at least the grid nodes
    any pixel of it weights (pixel i at u = i (G - 1) / (n - 1) weights nodes floor(u) and, when u is not an integer,
    floor(u) + 1), and at most the next power of two above one node more than that (the rounding margin)."""
    for G in range(1, 10):
        for n in range(max(G, 2), 150):
            u = [Fraction(i * (G - 1), n - 1) for i in range(n)]
            touched = [max(math.ceil(u[i]) for i in range(i0, min(i0 + block, n))) -
                       min(math.floor(u[i]) for i in range(i0, min(i0 + block, n))) + 1 for i0 in range(0, n, block)]
            bound = tk._nodes_per_tile(n, G, block)
            assert max(touched) <= bound <= triton.next_power_of_2(max(touched) + 1), (G, n, block, touched, bound)
