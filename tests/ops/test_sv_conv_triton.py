"""Triton kernels of sv_conv against the float64 references.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); its cost grows with the number of programs and operations, so the images are small and, on
the CPU, the blocks cover a whole plane (one program per plane, one row split per grid cell for the PSF gradient)
except in the multi-tile tests and the tests of every tuned config.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402

from blindfast.ops._checks import PADDING_CODES  # noqa: E402
from blindfast.ops.reference import PADDINGS, sv_conv_adjoint_reference, sv_conv_reference  # noqa: E402
from blindfast.triton_kernels import sv_conv as tk  # noqa: E402
from blindfast.triton_kernels import tuning  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = tuning.INTERPRETED
# The kernels' configs per op ("adjoint": the gather kernel's and the folds'). Interpreter: one 64 x 64 tile per
# plane, the PSF gradient's pixel block spanning a cell's rows. CUDA: each kernel's first config (the tuner's choice
# has its own test; tuning every shape of every test would lengthen the device check).
BIG = {
    "forward": triton.Config({"BLOCK_H": 64, "BLOCK_W": 64}),
    "adjoint": (triton.Config({"BLOCK_H": 64, "BLOCK_W": 64}), triton.Config({"BLOCK_L": 64, "BLOCK_M": 64})),
    "grad_psf": triton.Config({"BLOCK_R": 32, "BLOCK_C": 64, "BLOCK_T": 32}),
}
CONFIGS = BIG if DEVICE == "cpu" else {
    "forward": tk.FORWARD_CONFIGS[0],
    "adjoint": (tk.ADJOINT_CONFIGS[0], tk.FOLD_CONFIGS[0]),
    "grad_psf": tk.GRAD_CONFIGS[0],
}
# Several tiles per plane, with tiles that straddle grid cells (tile offsets, masks, node windows); for the PSF
# gradient: one-row pixel blocks, some inside the image (no padding rule) and some at its edges, several blocks of
# taps and, with the default programs target, several row splits.
SMALL = {
    "forward": triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}),
    "adjoint": (triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}), triton.Config({"BLOCK_L": 16, "BLOCK_M": 32})),
    "grad_psf": triton.Config({"BLOCK_R": 1, "BLOCK_C": 8, "BLOCK_T": 8}),
}

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
    # for every tuned config
    "tuned-grid2x3-k3x4": ((1, 2, 21, 27), (1, 2, 2, 3, 3, 4)),
}
MAIN_CASES = [name for name in CASES if not name.startswith(("plane", "tuned"))]
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


def _run_op(op: str, x, g, psf, padding: str, device=DEVICE, configs=None):
    """Triton kernel of ``op`` on ``device`` (forward: x; adjoint: g; grad_psf: x and g), result on the CPU;
    ``configs`` as ``CONFIGS`` (the default)."""
    configs = CONFIGS if configs is None else configs
    code = PADDING_CODES[padding]
    x, g, psf = (t.to(device) for t in (x, g, psf))
    if op == "forward":
        out = tk.sv_conv_forward(x, psf, code, config=configs["forward"])
    elif op == "adjoint":
        config, fold_config = configs["adjoint"]
        out = tk.sv_conv_adjoint(g, psf, code, config=config, fold_config=fold_config)
    else:
        out = tk.sv_conv_grad_psf(x, g, psf, code, config=configs["grad_psf"])
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


TARGET_PROGRAMS = tk.TARGET_PROGRAMS


@pytest.fixture(autouse=True)
def one_split_per_cell(monkeypatch):
    """Under the interpreter the PSF gradient splits no cell's rows (each program walks all of them: fewer programs,
    and the interpreter's cost grows with them), except in the tests that use the ``row_splits`` fixture."""
    if INTERPRETED:
        monkeypatch.setattr(tk, "TARGET_PROGRAMS", 1)


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
def test_several_tiles_per_plane(op, padding, row_splits):
    """Blocks smaller than the image: tile offsets, partial tiles, node windows of several cells; for the PSF
    gradient, blocks of taps (the last one partial) and rows split among programs."""
    case = "plane-grid3x5-k3"
    (x, psf), _ = _inputs(case, torch.float64)
    g, _ = _cotangent(case, padding, torch.float64)
    got = _run_op(op, x, g, psf, padding, configs=SMALL)
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
# Structure: the forward's uniform PSF taps per node, the PSF gradient's atomic-free partial sums, every tuned config.


@pytest.fixture
def interpreter_memory(monkeypatch):
    """Under the interpreter, the addresses every tl.load reads (its unmasked lanes) and the number of atomics."""
    from triton.runtime import interpreter

    record = {"loads": [], "atomics": 0}
    load = interpreter.InterpreterBuilder.create_masked_load
    atomic = interpreter.InterpreterBuilder.create_atomic_rmw

    def recorded_load(self, ptrs, mask, *args):
        record["loads"].append(ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)].copy())
        return load(self, ptrs, mask, *args)

    def recorded_atomic(self, *args):
        record["atomics"] += 1
        return atomic(self, *args)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_load", recorded_load)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_rmw", recorded_atomic)
    return record


def _loads_from(record, tensor: torch.Tensor) -> int:
    """How many elements the recorded loads read from ``tensor``'s memory."""
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    return sum(int(((addresses >= start) & (addresses < end)).sum()) for addresses in record["loads"])


# name: (psf grid (Gy, Gx), forward blocks (BLOCK_H, BLOCK_W), the node window of a tile on a 29 x 37 output). A
# 3 x 3 or 8 x 8 grid on one 64 x 64 tile: more nodes than tiles; the 8 x 8 window is past MAX_NODES, so the gathered
# form runs.
WINDOWS = {
    "1x1": ((1, 1), (64, 64), (1, 1)),
    "2x2": ((2, 2), (64, 64), (2, 2)),
    "4x4": ((3, 5), (8, 8), (4, 4)),
    "4x4-one-tile": ((3, 3), (64, 64), (4, 4)),
    "8x8-gathered": ((8, 8), (64, 64), (8, 8)),
}


@pytest.mark.parametrize("window", WINDOWS)
def test_forward_node_window(window):
    """The window the forward's heuristic gives each config (its constexprs NODES_Y, NODES_X)."""
    (Gy, Gx), (block_h, block_w), nodes = WINDOWS[window]
    assert (tk._nodes_per_tile(29, Gy, block_h), tk._nodes_per_tile(37, Gx, block_w)) == nodes


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("window", WINDOWS)
def test_forward_loads_each_psf_tap_once_per_node_and_program(window, padding, interpreter_memory):
    """Per-node accumulation: a program loads each tap of each node of its window once (uniform over the tile), at
    most programs x NODES x kh x kw PSF loads, where blending per pixel loads 4 taps per pixel and tap (as the
    gathered form still does past MAX_NODES nodes). The result is the reference's in every case."""
    (Gy, Gx), (block_h, block_w), _ = WINDOWS[window]
    kh, kw = 4, 3
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 29, 37, generator=gen, dtype=torch.float64)
    psf = torch.rand(1, 1, Gy, Gx, kh, kw, generator=gen, dtype=torch.float64)
    config = triton.Config({"BLOCK_H": block_h, "BLOCK_W": block_w})
    got = tk.sv_conv_forward(x.to(DEVICE), psf.to(DEVICE), PADDING_CODES[padding], config=config).cpu()
    assert _rel_err(got, sv_conv_reference(x, psf, padding)) < F64_RTOL
    if not INTERPRETED:
        return
    Ho, Wo = got.shape[-2:]
    programs = triton.cdiv(Ho, block_h) * triton.cdiv(Wo, block_w)
    nodes = tk._nodes_per_tile(Ho, Gy, block_h) * tk._nodes_per_tile(Wo, Gx, block_w)
    psf_loads = _loads_from(interpreter_memory, psf)
    if nodes <= tk.MAX_NODES:
        assert programs * kh * kw <= psf_loads <= programs * nodes * kh * kw
    else:
        assert psf_loads == programs * block_h * block_w * 4 * kh * kw


@pytest.mark.skipif(not INTERPRETED, reason="counts the interpreter's atomics")
def test_grad_psf_uses_no_atomics(interpreter_memory):
    (x, psf), _ = _inputs("plane-grid3x5-k3", torch.float64)
    g, _ = _cotangent("plane-grid3x5-k3", "zeros", torch.float64)
    got = _run_op("grad_psf", x, g, psf, "zeros", configs=SMALL)
    assert interpreter_memory["atomics"] == 0
    assert _rel_err(got, _reference("grad_psf", x, g, psf, "zeros")) < F64_RTOL


@pytest.fixture
def row_splits(monkeypatch):
    """The PSF gradient's own row splits (the module's programs target), also under the interpreter."""
    monkeypatch.setattr(tk, "TARGET_PROGRAMS", TARGET_PROGRAMS)


def test_grad_psf_partial_sums_at_1024_rgb_k31(monkeypatch, row_splits):
    """The arithmetic of the module docstring, from the launch (meta tensors, nothing runs): at 1024^2 RGB, k31, a
    1 x 1 grid, 3 planes x 22 row splits x 4 corners x 961 taps = 253,704 partial sums, each stored once, where the
    atomic form added 6144 tiles x 961 taps = 5.9M times into 961 addresses."""
    launches = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((grid, args))

    monkeypatch.setattr(tk, "_sv_conv_grad_psf_kernel", Recorder())
    x = torch.empty(1, 3, 1024, 1024, device="meta")
    grad = tk.sv_conv_grad_psf(x, x, torch.empty(1, 1, 1, 1, 31, 31, device="meta"), PADDING_CODES["zeros"])
    assert grad.shape == (1, 1, 1, 1, 31, 31)
    [(grid, args)] = launches
    partials = args[2]
    assert partials.shape == (1, 3, 1, 1, 22, 2, 2, 961) and partials.numel() == 253_704
    assert grid({"BLOCK_T": 32}) == (3 * 22 * 31,)
    old_atomics = 3 * (1024 // 16) * (1024 // 32) * 961
    assert old_atomics == 5_904_384


@pytest.fixture
def grad_psf_float32(monkeypatch):
    """grad_psf in float32 on a grid broadcast over channels, with several cells, row splits (4 per cell) and
    pixel blocks per program."""
    monkeypatch.setattr(tk, "TARGET_PROGRAMS", 4 * 6 * 2)  # 6 planes, 2 cells
    (x, psf), _ = _inputs("grid2x3-k3x2-Cg1", torch.float32)
    g, _ = _cotangent("grid2x3-k3x2-Cg1", "reflect", torch.float32)
    config = triton.Config({"BLOCK_R": 2, "BLOCK_C": 16, "BLOCK_T": 8})
    return lambda: _run_op("grad_psf", x, g, psf, "reflect", configs={**SMALL, "grad_psf": config})


def test_grad_psf_repeats_bit_for_bit(grad_psf_float32):
    """Partial sums added in a fixed order: every run gives the same bits (on a GPU the atomic form did not)."""
    first = grad_psf_float32()
    for _ in range(2):
        assert torch.equal(grad_psf_float32(), first)


def test_grad_psf_deterministic_mode_gives_the_same_bits(grad_psf_float32):
    """torch.use_deterministic_algorithms(True) needs no separate ordered path: the same computation, the same bits
    (the atomic form switched to per-program stores and index_add_ there, another summation order)."""
    default = grad_psf_float32()
    enabled, warn_only = (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    try:
        deterministic = grad_psf_float32()
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    assert torch.equal(deterministic, default)


# Every config of every tuned kernel, on a small case whose reflect padding makes the adjoint fold.
TUNED_CASE = "tuned-grid2x3-k3x4"
TUNED = ([("forward", c) for c in tk.FORWARD_CONFIGS] + [("adjoint", c) for c in tk.ADJOINT_CONFIGS]
         + [("fold", c) for c in tk.FOLD_CONFIGS] + [("grad_psf", c) for c in tk.GRAD_CONFIGS])


@pytest.mark.parametrize("op, config", TUNED, ids=[f"{op}-{c.kwargs}-w{c.num_warps}" for op, c in TUNED])
def test_every_tuned_config_matches_reference(op, config, row_splits):
    configs = {**BIG, "adjoint": (config, BIG["adjoint"][1]) if op == "adjoint" else BIG["adjoint"]}
    if op == "fold":
        op, configs["adjoint"] = "adjoint", (BIG["adjoint"][0], config)
    elif op != "adjoint":
        configs[op] = config
    (x, psf), _ = _inputs(TUNED_CASE, torch.float64)
    g, _ = _cotangent(TUNED_CASE, "reflect", torch.float64)
    got = _run_op(op, x, g, psf, "reflect", configs=configs)
    assert _rel_err(got, _reference(op, x, g, psf, "reflect")) < F64_RTOL


@pytest.mark.parametrize("op", OPS)
def test_the_tuners_choice_matches_reference(op, row_splits):
    """No config given: the tuner's (the interpreter runs each kernel's first config)."""
    (x, psf), _ = _inputs(TUNED_CASE, torch.float64)
    g, _ = _cotangent(TUNED_CASE, "replicate", torch.float64)
    tuned = {"forward": None, "adjoint": (None, None), "grad_psf": None}
    got = _run_op(op, x, g, psf, "replicate", configs=tuned)
    assert _rel_err(got, _reference(op, x, g, psf, "replicate")) < F64_RTOL


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
