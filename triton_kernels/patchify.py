"""Triton (CUDA) kernels of ``blindfast.ops.patchify``: patch extraction with fused normalisation, and its adjoint,
overlap-add, as a gather.

Semantics (see ``blindfast/ops/reference/patchify.py``, the ground truth), with s = stride,
Ly = (H - size) // s + 1, Lx likewise, L = Ly * Lx:

    patches[b*L + py*Lx + px, c, r, q] = (x[b, c, py*s + r, px*s + q] - mean[c]) * (1 / std[c])
    x[b, c, i, j] = (1 / std[c]) * sum_{py, px} patches[b*L + py*Lx + px, c, i - py*s, j - px*s]

over the patches that cover (i, j): py = i // s - ky for ky < ceil(size / s) with 0 <= py < Ly and
i - py*s < size (likewise px), so each output pixel is written by one program and needs no atomics.

Dtypes: float16 / bfloat16 / float32 compute in float32 (mean / std arrive in float32 for half images), float64
in float64. Launches use a 1-D grid (no 65535 limit); patch offsets are computed in int64.

Tile shapes and warps are autotuned (:mod:`.tuning`, :data:`PATCH_CONFIGS`, :data:`IMAGE_CONFIGS`), keyed on the
patch size, the stride and the power-of-two class of the patches' element count; each kernel overwrites its whole
output and reads none of it, so timing runs need no reset. The launch helpers take ``config=`` to force one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import size_class, tuned

__all__ = ["IMAGE_CONFIGS", "PATCH_CONFIGS", "overlap_add", "patchify"]

# Patch rows x elements along the Lx patches of a patch row (BLOCK_R x BLOCK_T), and warps; plausible for sm_90
# (8-32 elements per thread), not timed on a GPU yet. The first one runs under the interpreter.
PATCH_CONFIGS = [
    triton.Config({"BLOCK_R": 16, "BLOCK_T": 128}, num_warps=4),
    triton.Config({"BLOCK_R": 8, "BLOCK_T": 128}, num_warps=4),
    triton.Config({"BLOCK_R": 4, "BLOCK_T": 256}, num_warps=4),
    triton.Config({"BLOCK_R": 16, "BLOCK_T": 256}, num_warps=8),
]
# Image tiles (BLOCK_H x BLOCK_W) of the overlap-add gather, and warps.
IMAGE_CONFIGS = [
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=4),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 128}, num_warps=4),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 64}, num_warps=8),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 128}, num_warps=8),
]


@tuned(PATCH_CONFIGS, key=["size", "stride", "size_class"])
@triton.jit
def _patchify_kernel(
    x_ptr, mean_ptr, std_ptr, out_ptr,
    C, H, W, size, stride, Ly, Lx, size_class,
    HAS_MEAN: tl.constexpr, HAS_STD: tl.constexpr, ACC: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """One program per (image b, patch row py, channel c, BLOCK_R x BLOCK_T tile of (r, t)): patch rows r of the
    Lx patches (b, py, px), with t = px * size + q running along the patch row.

    x: (B, C, H, W); mean, std: (C,) (read only if HAS_MEAN / HAS_STD); out: (B*Ly*Lx, C, size, size). Program
    id = ((b * Ly + py) * C + c) * n_tiles + tile, tiles row-major with n_tiles_t per row. Small patches share a
    program (t spans several of them) instead of leaving most of a tile masked. size_class: the tuning key (the
    bit length of out's element count), unused in the body.
    """
    pid = tl.program_id(0)
    n_tiles_t = tl.cdiv(Lx * size, BLOCK_T)
    n_tiles = tl.cdiv(size, BLOCK_R) * n_tiles_t
    band = pid // n_tiles  # (b * Ly + py) * C + c
    tile = pid % n_tiles
    c = band % C
    b = (band // C) // Ly
    py = (band // C) % Ly
    r = (tile // n_tiles_t) * BLOCK_R + tl.arange(0, BLOCK_R)
    t = (tile % n_tiles_t) * BLOCK_T + tl.arange(0, BLOCK_T)
    px = t // size
    q = t - px * size
    mask = (r < size)[:, None] & (t < Lx * size)[None, :]

    x_plane = x_ptr + (b * C + c).to(tl.int64) * H * W
    v = tl.load(x_plane + (py * stride + r)[:, None] * W + (px * stride + q)[None, :], mask=mask).to(ACC)
    if HAS_MEAN:
        v -= tl.load(mean_ptr + c).to(ACC)
    if HAS_STD:
        v *= 1.0 / tl.load(std_ptr + c).to(ACC)
    first_patch = out_ptr + ((b * Ly + py) * Lx * C + c).to(tl.int64) * size * size  # patch (b, py, 0), channel c
    col_part = px.to(tl.int64) * C * size * size + q
    tl.store(first_patch + (r * size)[:, None] + col_part[None, :], v.to(out_ptr.dtype.element_ty), mask=mask)


@tuned(IMAGE_CONFIGS, key=["size", "stride", "size_class"])
@triton.jit
def _overlap_add_kernel(
    p_ptr, std_ptr, x_ptr,
    C, H, W, size, stride, Ly, Lx, covers, size_class,
    HAS_STD: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Gather: one program per (plane b*C + c, BLOCK_H x BLOCK_W tile of image pixels).

    patches: (B*L, C, size, size); std: (C,) (read only if HAS_STD); x: (B, C, H, W). ``covers`` =
    ceil(size / stride), the most patches covering a pixel along one axis. The patch offset is separable:
    ((b*L + py*Lx + px)*C + c)*size^2 + r*size + q = base + row part (py, r) + column part (px, q). size_class: the
    tuning key (the bit length of the patches' element count), unused in the body.
    """
    pid = tl.program_id(0)
    n_tiles_w = tl.cdiv(W, BLOCK_W)
    n_tiles = tl.cdiv(H, BLOCK_H) * n_tiles_w
    plane = pid // n_tiles
    tile = pid % n_tiles
    b = plane // C
    c = plane % C
    i = (tile // n_tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = (tile % n_tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)

    patch_elems = C * size * size
    base = p_ptr + (b.to(tl.int64) * Ly * Lx * C + c) * size * size
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for ky in range(covers):
        py = i // stride - ky
        r = i - py * stride
        ok_y = (py >= 0) & (py < Ly) & (r < size) & (i < H)
        row_part = py.to(tl.int64) * Lx * patch_elems + r * size
        for kx in range(covers):
            px = j // stride - kx
            q = j - px * stride
            ok_x = (px >= 0) & (px < Lx) & (q < size) & (j < W)
            col_part = px.to(tl.int64) * patch_elems + q
            acc += tl.load(base + row_part[:, None] + col_part[None, :], mask=ok_y[:, None] & ok_x[None, :],
                           other=0).to(ACC)
    if HAS_STD:
        acc *= 1.0 / tl.load(std_ptr + c).to(ACC)
    x_plane = x_ptr + plane.to(tl.int64) * H * W
    tl.store(x_plane + i[:, None] * W + j[None, :], acc.to(x_ptr.dtype.element_ty),
             mask=(i < H)[:, None] & (j < W)[None, :])


# ---------------------------------------------------------------------------------------------------------------
# Launch helpers (inputs: contiguous, on one device; the op layer checks shapes and values). ``config``: a
# triton.Config with the kernel's blocks (powers of 2) to force; by default the autotuner's (the first config under
# the interpreter). Tests under the interpreter pass large blocks.


def _acc_dtype(dtype: torch.dtype):
    """Triton compute dtype: float64 stays float64, the rest compute in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_inputs(*tensors: torch.Tensor) -> None:
    """The launch helpers' contract (the op layer guarantees it): contiguous tensors on one device."""
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("blindfast Triton kernels expect contiguous tensors")
    if len({t.device for t in tensors}) > 1:
        raise ValueError(f"blindfast Triton kernels expect one device, got {[str(t.device) for t in tensors]}")


def patchify(x: torch.Tensor, size: int, stride: int, mean: torch.Tensor | None, std: torch.Tensor | None,
             out: torch.Tensor | None = None, *, config: triton.Config | None = None) -> torch.Tensor:
    """Patches of x (B, C, H, W), normalised with mean / std ((C,) or None) -> (B * L, C, size, size), written
    into ``out`` (contiguous, that shape) when given. ``config``: BLOCK_R (patch rows) x BLOCK_T (elements along
    the Lx patches of a patch row) per program, and warps."""
    B, C, H, W = x.shape
    ly, lx = (H - size) // stride + 1, (W - size) // stride + 1
    out = x.new_empty(B * ly * lx, C, size, size) if out is None else out
    _check_inputs(*(t for t in (x, mean, std, out) if t is not None))
    if out.numel() == 0:
        return out
    bands = B * ly * C

    def grid(meta):
        return (bands * triton.cdiv(size, meta["BLOCK_R"]) * triton.cdiv(lx * size, meta["BLOCK_T"]),)

    _patchify_kernel[grid](
        x, x if mean is None else mean, x if std is None else std, out,
        C, H, W, size, stride, ly, lx, size_class(out.numel()),
        HAS_MEAN=mean is not None, HAS_STD=std is not None, ACC=_acc_dtype(x.dtype), config=config)
    return out


def overlap_add(patches: torch.Tensor, height: int, width: int, stride: int, std: torch.Tensor | None, *,
                config: triton.Config | None = None) -> torch.Tensor:
    """Overlap-add of patches (B * L, C, size, size), divided by std ((C,) or None) -> (B, C, height, width).
    ``config``: the image tile BLOCK_H x BLOCK_W per program, and warps."""
    _check_inputs(*(t for t in (patches, std) if t is not None))
    N, C, size = patches.shape[:3]
    ly, lx = (height - size) // stride + 1, (width - size) // stride + 1
    x = patches.new_empty(N // (ly * lx), C, height, width)
    if x.numel() == 0:
        return x
    planes = x.shape[0] * C

    def grid(meta):
        return (planes * triton.cdiv(height, meta["BLOCK_H"]) * triton.cdiv(width, meta["BLOCK_W"]),)

    _overlap_add_kernel[grid](
        patches, patches if std is None else std, x,
        C, height, width, size, stride, ly, lx, triton.cdiv(size, stride), size_class(patches.numel()),
        HAS_STD=std is not None, ACC=_acc_dtype(patches.dtype), config=config)
    return x
