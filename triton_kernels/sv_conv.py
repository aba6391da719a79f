"""Triton (CUDA) kernels of the space-varying convolution ``blindfast.ops.sv_conv``.

Semantics (see ``blindfast/ops/reference/sv_conv.py``, the ground truth): with ``xp`` the padded image and (Ho, Wo) the
output size,

    y[b, c, i, j] = sum_{a < kh, e < kw} K_ij[a, e] * xp[b, c, i + kh - 1 - a, j + kw - 1 - e]
    K_ij = sum_{gy, gx} wy_gy(i) * wx_gx(j) * psf_grid[b|0, c|0, gy, gx]

with tent (bilinear, align_corners) weights on the output grid. A pixel lies in one cell of the grid per axis, so
only the 2 x 2 nodes of that cell have a non-zero weight.

Forward (per-node accumulation): the blend is linear and does not depend on the tap, so
y = sum_n wy_n(i) wx_n(j) (h_n * xp)(i, j) over the NODES_Y x NODES_X nodes a tile of output pixels meets (2 x 2
when it lies in one cell). A program accumulates one tile-sized sum per node, each tap of a node being one scalar
(uniform over the tile), and blends once at the end. Per pixel and tap: one image load and NODES FMAs (4 for a tile
in one cell, 1 for a 1 x 1 grid), where the gathered form did 4 PSF loads, 3 lerps and one FMA. At 1024^2 RGB,
k31, with 16 x 32 tiles (6144 programs) each in one cell: 4 x 961 x 6144 = 23.6M uniform PSF loads instead of
4 x 961 x 3.1M = 12.1G gathered ones. Windows of more than ``MAX_NODES`` nodes (small frames with many nodes) keep
the gathered form (registers stay bounded: the accumulator holds NODES tiles).

PSF gradient (no atomics): a program owns (plane, grid cell, split of the cell's rows, block of taps). Its pixels
all weight the same 4 nodes, so it accumulates, per pixel block, an im2col block of image taps (BLOCK_R, BLOCK_C,
BLOCK_T) times g times each node's (separable) tent weight in registers: one image load and 4 FMAs per pixel and
tap. It reduces once and stores 4 x BLOCK_T partial sums in its own slot; torch adds the slots onto the nodes in a
fixed order, so the result has the same bits on every run, whatever ``torch.use_deterministic_algorithms`` says
(the atomic form needed a separate ordered path for that). At 1024^2 RGB, k31, a 1 x 1 grid: before, 6144 tiles x
961 taps = 5.9M vector atomics (and 11.8M cross-warp reductions), all on 961 addresses; after, 0 atomics and
3 planes x 22 row splits x 4 corners x 961 taps = 253,704 plain stores (2046 programs at BLOCK_T = 32, 4
reductions each).

Padding codes are those of ``blindfast.ops._checks.PADDING_CODES`` (0 valid, 1 zeros, 2 replicate, 3 reflect,
4 circular). The kernels never materialise the padded image: they map padded coordinates to source coordinates
(:func:`_pad_source`) and mask the zeros.

Dtypes: float16 / bfloat16 / float32 accumulate in float32, float64 in float64. Every launch uses a 1-D grid (no
65535 limit on the number of planes); plane offsets are computed in int64. Block sizes and warps are tuned per shape
(``triton_kernels/tuning.py``; under the interpreter the first config runs); each wrapper takes ``config=`` to run
one given config.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .tuning import tuned

__all__ = ["sv_conv_forward", "sv_conv_adjoint", "sv_conv_grad_psf"]

# Padding codes, the same as blindfast.ops._checks.PADDING_CODES; constexpr copies for use inside the kernels.
VALID, ZEROS, REPLICATE, REFLECT, CIRCULAR = range(5)
_ZEROS: tl.constexpr = tl.constexpr(ZEROS)
_REPLICATE: tl.constexpr = tl.constexpr(REPLICATE)
_REFLECT: tl.constexpr = tl.constexpr(REFLECT)
_CIRCULAR: tl.constexpr = tl.constexpr(CIRCULAR)

# The forward accumulates per node up to this window size (its accumulator holds MAX_NODES tiles); larger windows
# blend the gathered PSF taps per pixel instead.
MAX_NODES = 16
_MAX_NODES: tl.constexpr = tl.constexpr(MAX_NODES)

# Candidate block sizes and warps (not tuned on a GPU yet: each keeps the accumulators at <= 64 float32 registers
# per thread). The first of each list is what the interpreter runs. Every kernel writes each element of its output
# once per launch and reads no buffer it writes, so the tuner's timing runs need no reset_to_zero / restore_value.
# The keys are exact sizes, not tuning.size_class: how many grid nodes a tile meets (_nodes_per_tile) depends on the
# exact Ho / Wo per block, so the fastest block can change within a power-of-two range; a photo restored in tiles
# has a handful of tile sizes, a training run one patch size.
FORWARD_CONFIGS = [
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 64}, num_warps=4),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=8),
]
ADJOINT_CONFIGS = [
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=8),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 64}, num_warps=8),
]
FOLD_CONFIGS = [
    triton.Config({"BLOCK_L": 16, "BLOCK_M": 32}, num_warps=4),
    triton.Config({"BLOCK_L": 32, "BLOCK_M": 64}, num_warps=4),
    triton.Config({"BLOCK_L": 8, "BLOCK_M": 128}, num_warps=4),
]
GRAD_CONFIGS = [
    triton.Config({"BLOCK_R": 1, "BLOCK_C": 32, "BLOCK_T": 32}, num_warps=4),
    triton.Config({"BLOCK_R": 1, "BLOCK_C": 64, "BLOCK_T": 32}, num_warps=4),
    triton.Config({"BLOCK_R": 2, "BLOCK_C": 32, "BLOCK_T": 32}, num_warps=4),
    triton.Config({"BLOCK_R": 1, "BLOCK_C": 32, "BLOCK_T": 64}, num_warps=8),
]
# The PSF gradient splits a cell's rows until about this many programs run (counting blocks of SPLIT_TAPS taps).
TARGET_PROGRAMS = 1024
SPLIT_TAPS = 64


# ---------------------------------------------------------------------------------------------------------------
# Device helpers


@triton.jit
def _pad_source(p, n, PAD: tl.constexpr):
    """Index in the unpadded axis of length ``n`` that padded coordinates ``p`` (shifted by the leading pad) read.

    Replicate / reflect / circular map every ``p`` into [0, n), so their loads need no mask. Zeros returns ``p``:
    the caller masks ``0 <= p < n``. Valid clamps: only the pixels of a partial tile that lie past the output go
    past the image, and their results are discarded.
    """
    if PAD == _REPLICATE:
        src = tl.minimum(tl.maximum(p, 0), n - 1)
    elif PAD == _REFLECT:
        # Mirror without repeating the edge (torch "reflect"): period 2(n - 1), guarded for n == 1.
        period = tl.maximum(2 * n - 2, 1)
        r = ((p % period) + period) % period  # a non-negative remainder whatever the sign convention of %
        src = tl.where(r < n, r, period - r)
    elif PAD == _CIRCULAR:
        src = ((p % n) + n) % n
    elif PAD == _ZEROS:
        src = p
    else:  # valid
        src = tl.minimum(p, n - 1)
    return src


@triton.jit
def _tent_axis(n, G, ACC: tl.constexpr):
    """Tent interpolation of ``G`` nodes over ``n`` pixels (align_corners): node coordinate per pixel, last cell.

    Pixel i sits at u = i * scale, scale = (G - 1) / max(n - 1, 1), computed in the accumulation dtype (a Python
    float argument would be float32 even for float64 data).
    """
    scale = tl.cast(G - 1, ACC) / tl.cast(tl.maximum(n - 1, 1), ACC)
    return scale, tl.maximum(G - 2, 0)


@triton.jit
def _tent_cell(i, scale, last_cell, ACC: tl.constexpr):
    """Cell and fractional position of pixels ``i`` (see :func:`_tent_axis`).

    Node ``cell`` has weight ``1 - frac`` and node ``cell + 1`` weight ``frac``; for a single node (scale = 0)
    cell = frac = 0 and the caller reads node 0 twice. Pixels past the end of the axis (partial tiles) still get a
    valid cell, so the PSF loads need no mask.
    """
    u = i.to(ACC) * scale
    cell = tl.minimum(u.to(tl.int32), last_cell)  # u >= 0: truncation is floor
    return cell, u - cell.to(ACC)


@triton.jit
def _interpolated_tap(h_ptr, d_right, d_down, tx, ty, ACC: tl.constexpr):
    """Bilinear blend of one kernel tap over a pixel's 4 cell nodes: ``h_ptr`` points at the tap of the top-left
    node, ``d_right`` / ``d_down`` step to the node on the right / below, ``tx, ty`` are the in-cell fractions."""
    h00 = tl.load(h_ptr).to(ACC)
    h01 = tl.load(h_ptr + d_right).to(ACC)
    h10 = tl.load(h_ptr + d_down).to(ACC)
    h11 = tl.load(h_ptr + (d_down + d_right)).to(ACC)
    k_top = h00 + tx * (h01 - h00)
    k_bot = h10 + tx * (h11 - h10)
    return k_top + ty * (k_bot - k_top)


@triton.jit
def _tent_weights(node, cell, frac, G):
    """Tent weights (NODES, BLOCK) of pixels in ``cell`` at ``frac`` (see :func:`_tent_cell`) on the grid nodes
    ``node`` (NODES,): 1 - frac on node cell, frac on node cell + 1 (both on node 0 when G == 1), 0 elsewhere."""
    w = tl.where(cell[None, :] == node[:, None], 1 - frac[None, :], 0)
    return w + tl.where(tl.minimum(cell + 1, G - 1)[None, :] == node[:, None], frac[None, :], 0)


@triton.jit
def _cell_span(c, n, G, ACC: tl.constexpr):
    """Pixels [lo, hi) of an axis of ``n`` pixels and ``G`` nodes that hold every pixel of cell ``c`` (see
    :func:`_tent_cell`): cell c covers u = i (G - 1) / (n - 1) in [c, c + 1), plus a pixel of margin on each side
    for the rounding of u; the caller masks the pixels of other cells."""
    width = tl.cast(n - 1, ACC) / tl.cast(tl.maximum(G - 1, 1), ACC)
    lo = tl.maximum((c.to(ACC) * width).to(tl.int32) - 1, 0)
    hi = tl.minimum(((c + 1).to(ACC) * width).to(tl.int32) + 2, n)
    return lo, hi


# ---------------------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _program_tile(C, Ho, Wo, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's plane (batch b, channel c) and its tile's row and column indices; program id =
    plane * n_tiles + tile, tiles row-major over the (Ho, Wo) plane."""
    n_tiles_w = tl.cdiv(Wo, BLOCK_W)
    n_tiles = tl.cdiv(Ho, BLOCK_H) * n_tiles_w
    pid = tl.program_id(0)
    plane = pid // n_tiles
    tile = pid % n_tiles
    rows = (tile // n_tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = (tile % n_tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    return plane, plane // C, plane % C, rows, cols


@functools.cache
def _nodes_per_tile(n: int, G: int, block: int) -> int:
    """Upper bound (a power of 2) on the grid nodes with a non-zero weight in a tile of ``block`` of ``n`` pixels.

    Pixel i sits at u = i (G - 1) / (n - 1); a tile [i0, i1] touches nodes floor(u0) .. floor(u1) + 1. The kernel
    rounds u (to float32 for half / float32 data), which can move a floor by one where u is near an integer: the
    floors here take a margin ``eps`` well above that rounding (a wider window only costs a masked node; a
    narrower one would drop a node).
    """
    if G == 1:
        return 1
    scale = (G - 1) / max(n - 1, 1)
    eps = 1e-5 * G
    most = 1
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n) - 1
        lo = max(math.floor(i0 * scale - eps), 0)
        hi = min(math.floor(i1 * scale + eps) + 1, G - 1)
        most = max(most, hi - lo + 1)
    return triton.next_power_of_2(most)


@tuned(FORWARD_CONFIGS, key=["Ho", "Wo", "Gy", "Gx", "kh", "kw", "PAD"])
@triton.heuristics({"NODES_Y": lambda args: _nodes_per_tile(args["Ho"], args["Gy"], args["BLOCK_H"]),
                    "NODES_X": lambda args: _nodes_per_tile(args["Wo"], args["Gx"], args["BLOCK_W"])})
@triton.jit
def _sv_conv_fwd_kernel(
    x_ptr, psf_ptr, y_ptr,
    C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, psf_sb, psf_sc,
    PAD: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    NODES_Y: tl.constexpr, NODES_X: tl.constexpr,
):
    """Forward: one program per (plane, BLOCK_H x BLOCK_W tile of output pixels).

    x: (B, C, H, W); psf: (Bg, Cg, Gy, Gx, kh, kw) with element strides psf_sb / psf_sc for b / c (0 when
    broadcast); y: (B, C, Ho, Wo). The tile meets at most NODES_Y x NODES_X nodes (:func:`_nodes_per_tile`, set
    per config), a window starting at its first cell (gy_lo, gx_lo).

    Per node (NODES_Y * NODES_X <= MAX_NODES): acc[n] (BLOCK_H, BLOCK_W) = sum_taps h_n[a, e] * xp[...], with
    h_n[a, e] one scalar per program (NODES scalar loads per tap), then y = sum_n wy_n(i) wx_n(j) acc[n].
    Gathered (larger windows): per pixel and tap, the four PSF taps of the pixel's cell, blended.
    """
    plane, b, c, i, j = _program_tile(C, Ho, Wo, BLOCK_H, BLOCK_W)
    ok_i = i < Ho
    ok_j = j < Wo

    KK = kh * kw
    scale_y, last_y = _tent_axis(Ho, Gy, ACC)
    scale_x, last_x = _tent_axis(Wo, Gx, ACC)
    gy0, ty = _tent_cell(i, scale_y, last_y, ACC)
    gx0, tx = _tent_cell(j, scale_x, last_x, ACC)
    psf_tap = psf_ptr + b * psf_sb + c * psf_sc  # tap (a, e) of node (0, 0); taps are visited in memory order
    if NODES_Y * NODES_X <= _MAX_NODES:
        # The window's nodes, flattened (row-major), and their tent weights on the tile's rows and columns. Pixels
        # outside the output may weight nodes outside the window: they are not stored.
        n = tl.arange(0, NODES_Y * NODES_X)
        node_y = tl.min(tl.where(ok_i, gy0, Gy - 1), axis=0) + n // NODES_X
        node_x = tl.min(tl.where(ok_j, gx0, Gx - 1), axis=0) + n % NODES_X
        wy = _tent_weights(node_y, gy0, ty, Gy)  # (NODES, BLOCK_H)
        wx = _tent_weights(node_x, gx0, tx, Gx)  # (NODES, BLOCK_W)
        node_off = (node_y * Gx + node_x) * KK
        node_ok = (node_y < Gy) & (node_x < Gx)  # the window may reach past the grid's last node
        acc = tl.zeros((NODES_Y * NODES_X, BLOCK_H, BLOCK_W), dtype=ACC)
    else:
        # The cell of each pixel does not depend on the tap: the offset of its top-left node (relative to the
        # current tap of node (0, 0)) and its fractional position are computed once. The other three nodes are at
        # fixed distances: +KK to the right, +Gx*KK below (0 on an axis with a single node).
        off00 = (gy0 * (Gx * KK))[:, None] + (gx0 * KK)[None, :]
        d_right = tl.where(Gx > 1, KK, 0)
        d_down = tl.where(Gy > 1, Gx * KK, 0)
        acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)

    x_plane = x_ptr + plane.to(tl.int64) * H * W
    for a in range(kh):
        # Padded row i + kh - 1 - a reads source row src_r (the padding rule is separable: rows, then columns).
        p_r = i + (kh - 1 - a - top)
        x_row = x_plane + _pad_source(p_r, H, PAD)[:, None] * W
        if PAD == _ZEROS:
            ok_r = ((p_r >= 0) & (p_r < H))[:, None]
        q = j + (kw - 1 - left)  # padded column of tap e, minus the leading pad
        for e in range(kw):
            if PAD == _ZEROS:
                xv = tl.load(x_row + q[None, :], mask=ok_r & ((q >= 0) & (q < W))[None, :], other=0)
            else:  # every padded position reads a pixel (out-of-tile pixels read clamped indices)
                xv = tl.load(x_row + _pad_source(q, W, PAD)[None, :])
            if NODES_Y * NODES_X <= _MAX_NODES:
                h = tl.load(psf_tap + node_off, mask=node_ok, other=0).to(ACC)  # this tap of each node
                acc += h[:, None, None] * xv.to(ACC)[None, :, :]
            else:
                acc += xv.to(ACC) * _interpolated_tap(psf_tap + off00, d_right, d_down, tx[None, :], ty[:, None],
                                                      ACC)
            psf_tap += 1
            q -= 1
    if NODES_Y * NODES_X <= _MAX_NODES:
        acc = tl.sum((wy[:, :, None] * wx[:, None, :]) * acc, axis=0)  # the blend, once per pixel
    y_plane = y_ptr + plane.to(tl.int64) * Ho * Wo
    tl.store(y_plane + i[:, None] * Wo + j[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=ok_i[:, None] & ok_j[None, :])


@tuned(ADJOINT_CONFIGS, key=["Hb", "Wb", "Gy", "Gx", "kh", "kw"])
@triton.jit
def _sv_conv_adj_kernel(
    y_ptr, psf_ptr, out_ptr,
    C, Ho, Wo, Gy, Gx, kh, kw, p0, q0, Hb, Wb, psf_sb, psf_sc,
    ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Adjoint on the padded grid, by gathering: one program per (plane, tile of padded pixels).

    y: (B, C, Ho, Wo); psf: (Bg, Cg, Gy, Gx, kh, kw); out: (B, C, Hb, Wb) holds the padded pixels
    [p0, p0 + Hb) x [q0, q0 + Wb) of the padded grid (Ho + kh - 1, Wo + kw - 1):

        out[p, q] = sum_{a, e} K_ij[a, e] * y[i, j],   i = p - (kh - 1 - a), j = q - (kw - 1 - e),

    over the (i, j) inside the output. Each padded pixel is written by exactly one program: no atomics. The output
    pixel read through a tap moves with the tap, so its cell is recomputed per tap row (rows) and per tap
    (columns): 1-D work, next to the 2-D loads and FMAs.
    """
    plane, b, c, pb, qb = _program_tile(C, Hb, Wb, BLOCK_H, BLOCK_W)

    KK = kh * kw
    scale_y, last_y = _tent_axis(Ho, Gy, ACC)
    scale_x, last_x = _tent_axis(Wo, Gx, ACC)
    d_right = tl.where(Gx > 1, KK, 0)
    d_down = tl.where(Gy > 1, Gx * KK, 0)
    y_plane = y_ptr + plane.to(tl.int64) * Ho * Wo
    psf_tap = psf_ptr + b * psf_sb + c * psf_sc  # tap (a, e) of node (0, 0); taps are visited in memory order
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for a in range(kh):
        # Output rows read through tap row a; clamped for the address and cell, masked for the value.
        i = pb + (p0 - (kh - 1 - a))
        ok_i = ((i >= 0) & (i < Ho))[:, None]
        i = tl.minimum(tl.maximum(i, 0), Ho - 1)
        gy0, ty = _tent_cell(i, scale_y, last_y, ACC)
        row_off = (gy0 * (Gx * KK))[:, None]
        ty = ty[:, None]
        y_row = y_plane + i[:, None] * Wo
        jj = qb + (q0 - (kw - 1))  # output columns of tap e = 0
        for e in range(kw):
            ok = ok_i & ((jj >= 0) & (jj < Wo))[None, :]
            j = tl.minimum(tl.maximum(jj, 0), Wo - 1)
            gx0, tx = _tent_cell(j, scale_x, last_x, ACC)
            tx = tx[None, :]
            yv = tl.load(y_row + j[None, :], mask=ok, other=0)
            h_ptr = psf_tap + (row_off + (gx0 * KK)[None, :])
            acc += yv.to(ACC) * _interpolated_tap(h_ptr, d_right, d_down, tx, ty, ACC)
            psf_tap += 1
            jj += 1
    out_plane = out_ptr + plane.to(tl.int64) * Hb * Wb
    tl.store(out_plane + pb[:, None] * Wb + qb[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(pb < Hb)[:, None] & (qb < Wb)[None, :])


@tuned(FOLD_CONFIGS, key=["L", "Lp", "M", "PAD"])
@triton.jit
def _fold_axis_kernel(
    src_ptr, dst_ptr,
    L, Lp, M, lead,
    src_sn, src_sl, src_sm, dst_sn, dst_sl, dst_sm,
    PAD: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Transpose of the padding along one axis, by gathering: dst[n, r, m] = sum_{p : source(p) = r} src[n, p, m].

    src: (N, Lp, M) with element strides (src_sn, src_sl, src_sm), the padded axis of length Lp = lead + L + trail;
    dst: (N, L, M) with strides (dst_sn, dst_sl, dst_sm). Pixel r receives its interior copy p = r + lead plus the
    halo positions (Lp - L of them, fewer than the kernel size) whose padding source is r; each program scans the
    short halo with masked loads. Each dst element is written by one program: deterministic, no atomics.
    """
    n, _, _, r, m = _program_tile(1, L, M, BLOCK_L, BLOCK_M)
    ok_r = r < L
    ok_m = m < M
    mask = ok_r[:, None] & ok_m[None, :]
    src = src_ptr + n.to(tl.int64) * src_sn + m[None, :] * src_sm
    acc = tl.load(src + (r + lead)[:, None] * src_sl, mask=mask, other=0)
    for h in range(Lp - L):
        pp = tl.where(h < lead, h, h + L)  # halo: the `lead` first padded positions, then the trailing ones
        hit = ok_r & (r == _pad_source(pp - lead, L, PAD))  # zeros: the halo maps outside [0, L), no hit
        acc += tl.load(src + pp * src_sl, mask=hit[:, None] & ok_m[None, :], other=0)
    dst = dst_ptr + n.to(tl.int64) * dst_sn
    tl.store(dst + r[:, None] * dst_sl + m[None, :] * dst_sm, acc.to(dst_ptr.dtype.element_ty), mask=mask)


@tuned(GRAD_CONFIGS, key=["Ho", "Wo", "Gy", "Gx", "kh", "kw", "PAD"])
@triton.jit
def _sv_conv_grad_psf_kernel(
    x_ptr, g_ptr, part_ptr,
    H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, splits,
    PAD: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """PSF gradient partial sums: one program per (plane, cell (cy, cx), split s, block of BLOCK_T taps).

    x: (B, C, H, W); g (= grad_y): (B, C, Ho, Wo); part: (B, C, CY, CX, splits, 2, 2, kh * kw) in ``ACC`` with
    CY = max(Gy - 1, 1) cells per column (CX per row), every element written by one program:

        part[b, c, cy, cx, s, dy, dx, t] = sum_{(i, j) in cell (cy, cx), rows of split s}
                                           wy_{cy+dy}(i) wx_{cx+dx}(j) g[i, j] xp[i + kh - 1 - a, j + kw - 1 - e]

    for tap t = a * kw + e. The program walks the cell's span (:func:`_cell_span`) in pixel blocks of BLOCK_R rows
    x BLOCK_C columns, its split taking every splits-th row block; per block, an im2col block X (BLOCK_R, BLOCK_C,
    BLOCK_T) of image taps and, per corner, acc += (g wy wx) X: one image load and 4 FMAs per pixel and tap, all
    in registers; one reduction per corner at the end. No atomics. Program id = ((((plane * CY + cy) * CX + cx)
    * splits + s) * n_tap_blocks + tap block: the tap blocks of a split run side by side and share its image rows
    in cache.
    """
    KK = kh * kw
    CY = tl.maximum(Gy - 1, 1)
    CX = tl.maximum(Gx - 1, 1)
    n_tap_blocks = tl.cdiv(KK, BLOCK_T)
    pid = tl.program_id(0)
    slot = pid // n_tap_blocks  # ((plane * CY + cy) * CX + cx) * splits + s
    t = (pid % n_tap_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    s = slot % splits
    cx = (slot // splits) % CX
    cy = (slot // (splits * CX)) % CY
    plane = slot // (splits * CX * CY)

    ok_t = t < KK
    t = tl.minimum(t, KK - 1)  # taps past the last one repeat it; their sums are not stored
    row_shift = (kh - 1 - top - t // kw)[None, None, :]  # padded row of a tap = output row + row_shift
    col_shift = (kw - 1 - left - t % kw)[None, None, :]
    scale_y, last_y = _tent_axis(Ho, Gy, ACC)
    scale_x, last_x = _tent_axis(Wo, Gx, ACC)
    r_lo, r_hi = _cell_span(cy, Ho, Gy, ACC)
    c_lo, c_hi = _cell_span(cx, Wo, Gx, ACC)
    x_plane = x_ptr + plane.to(tl.int64) * H * W
    g_plane = g_ptr + plane.to(tl.int64) * Ho * Wo
    acc00 = tl.zeros((BLOCK_R, BLOCK_C, BLOCK_T), dtype=ACC)
    acc01 = tl.zeros((BLOCK_R, BLOCK_C, BLOCK_T), dtype=ACC)
    acc10 = tl.zeros((BLOCK_R, BLOCK_C, BLOCK_T), dtype=ACC)
    acc11 = tl.zeros((BLOCK_R, BLOCK_C, BLOCK_T), dtype=ACC)
    for r0 in range(r_lo + s * BLOCK_R, r_hi, splits * BLOCK_R):
        i = r0 + tl.arange(0, BLOCK_R)
        gy_i, ty = _tent_cell(i, scale_y, last_y, ACC)
        ok_i = (i < r_hi) & (gy_i == cy)
        p_r = i[:, None, None] + row_shift  # (BLOCK_R, 1, BLOCK_T)
        x_rows = x_plane + _pad_source(p_r, H, PAD) * W
        ok_r = ok_i[:, None, None] & ok_t[None, None, :]
        if PAD == _ZEROS:
            ok_r = ok_r & (p_r >= 0) & (p_r < H)
        ty = ty[:, None]
        for c0 in range(c_lo, c_hi, BLOCK_C):
            j = c0 + tl.arange(0, BLOCK_C)
            gx_j, tx = _tent_cell(j, scale_x, last_x, ACC)
            ok_j = (j < c_hi) & (gx_j == cx)
            ok = ok_i[:, None] & ok_j[None, :]
            gv = tl.load(g_plane + i[:, None] * Wo + j[None, :], mask=ok, other=0).to(ACC)  # (BLOCK_R, BLOCK_C)
            q = j[None, :, None] + col_shift  # padded column of each pixel and tap: (1, BLOCK_C, BLOCK_T)
            ok_x = ok_r & ok_j[None, :, None]
            if (c0 - left >= 0) & (c0 + (BLOCK_C + kw - 2 - left) < W):
                # Every column the block reads, c0 - left .. c0 + BLOCK_C - 1 + kw - 1 - left, is in the image: no
                # padding rule (its 2-D index arithmetic, integer remainders for reflect / circular, is per tap).
                xv = tl.load(x_rows + q, mask=ok_x, other=0)
            else:
                if PAD == _ZEROS:
                    ok_x = ok_x & (q >= 0) & (q < W)
                xv = tl.load(x_rows + _pad_source(q, W, PAD), mask=ok_x, other=0)
            xv = xv.to(ACC)
            g1 = gv * ty  # the tent weights are separable (g wy_dy wx_dx): per pixel, not per tap
            g0 = gv - g1
            tx = tx[None, :]
            acc00 += (g0 - g0 * tx)[:, :, None] * xv
            acc01 += (g0 * tx)[:, :, None] * xv
            acc10 += (g1 - g1 * tx)[:, :, None] * xv
            acc11 += (g1 * tx)[:, :, None] * xv
    out = part_ptr + slot.to(tl.int64) * (4 * KK) + t
    tl.store(out, tl.sum(tl.sum(acc00, axis=0), axis=0), mask=ok_t)
    tl.store(out + KK, tl.sum(tl.sum(acc01, axis=0), axis=0), mask=ok_t)
    tl.store(out + 2 * KK, tl.sum(tl.sum(acc10, axis=0), axis=0), mask=ok_t)
    tl.store(out + 3 * KK, tl.sum(tl.sum(acc11, axis=0), axis=0), mask=ok_t)


# ---------------------------------------------------------------------------------------------------------------
# Launch helpers (inputs: contiguous, one dtype, one device; the op layer checks shapes). ``config`` (a
# triton.Config of the kernel's block sizes and warps) runs one given config; None lets the tuner choose.


def _acc_dtype(dtype: torch.dtype):
    """Triton accumulation dtype: float64 stays float64, the rest accumulate in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry(H: int, W: int, kh: int, kw: int, padding: int):
    """(Ho, Wo, top, left) of an (H, W) image: "valid" shrinks, the others pad (k-1)//2 before, k//2 after."""
    if padding == VALID:
        return H - kh + 1, W - kw + 1, 0, 0
    return H, W, (kh - 1) // 2, (kw - 1) // 2


def _psf_strides(psf_grid: torch.Tensor, B: int, C: int) -> tuple[int, int]:
    """Element strides of the psf batch / channel dims for plane (b, c); 0 where psf_grid broadcasts."""
    Bg, Cg = psf_grid.shape[:2]
    plane = psf_grid[0, 0].numel()
    return (Cg * plane if Bg == B and B > 1 else 0), (plane if Cg == C and C > 1 else 0)


def _check_inputs(*tensors: torch.Tensor) -> None:
    """The launch helpers' contract (the op layer guarantees it): contiguous tensors, one dtype, one device."""
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("blindfast Triton kernels expect contiguous tensors")
    if len({t.dtype for t in tensors}) > 1:
        raise TypeError(f"blindfast Triton kernels expect one dtype, got {[t.dtype for t in tensors]}")
    if len({t.device for t in tensors}) > 1:
        raise ValueError(f"blindfast Triton kernels expect one device, got {[str(t.device) for t in tensors]}")


def _tile_grid(planes: int, rows: int, cols: int, block_rows: str, block_cols: str):
    """Launch grid of a tiled kernel: planes x row tiles x column tiles programs (1-D), per config."""
    return lambda meta: (planes * triton.cdiv(rows, meta[block_rows]) * triton.cdiv(cols, meta[block_cols]),)


def sv_conv_forward(x: torch.Tensor, psf_grid: torch.Tensor, padding: int, *,
                    config: triton.Config | None = None) -> torch.Tensor:
    """``y = sv_conv(x, psf_grid)``: x (B, C, H, W), psf_grid (B|1, C|1, Gy, Gx, kh, kw) -> y (B, C, Ho, Wo).
    ``config``: BLOCK_H, BLOCK_W and warps (one of FORWARD_CONFIGS' form); None: tuned."""
    _check_inputs(x, psf_grid)
    B, C, H, W = x.shape
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    Ho, Wo, top, left = _geometry(H, W, kh, kw, padding)
    y = x.new_empty(B, C, Ho, Wo)
    if y.numel() == 0:
        return y
    psf_sb, psf_sc = _psf_strides(psf_grid, B, C)
    _sv_conv_fwd_kernel[_tile_grid(B * C, Ho, Wo, "BLOCK_H", "BLOCK_W")](
        x, psf_grid, y, C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, psf_sb, psf_sc,
        PAD=padding, ACC=_acc_dtype(x.dtype), config=config)
    return y


def _fold_axis(src: torch.Tensor, dst: torch.Tensor, N: int, L: int, Lp: int, M: int, lead: int, src_strides,
               dst_strides, padding: int, config: triton.Config | None) -> None:
    _fold_axis_kernel[_tile_grid(N, L, M, "BLOCK_L", "BLOCK_M")](
        src, dst, L, Lp, M, lead, *src_strides, *dst_strides, PAD=padding, config=config)


def sv_conv_adjoint(y: torch.Tensor, psf_grid: torch.Tensor, padding: int, *, config: triton.Config | None = None,
                    fold_config: triton.Config | None = None) -> torch.Tensor:
    """Exact transpose of :func:`sv_conv_forward`: y (B, C, Ho, Wo) -> x (B, C, H, W).

    (H, W) = (Ho, Wo), or (Ho + kh - 1, Wo + kw - 1) for "valid". For "valid" and "zeros" the gather kernel
    writes x directly (zeros: only the interior of the padded grid). For replicate / reflect / circular, it
    writes the whole padded grid to a temporary in the accumulation dtype, which is folded back onto the image
    (rows, then columns) by the transpose of the padding. ``config`` (BLOCK_H, BLOCK_W, warps) is the gather
    kernel's, ``fold_config`` (BLOCK_L, BLOCK_M, warps) the folds'; None: tuned.
    """
    _check_inputs(y, psf_grid)
    B, C, Ho, Wo = y.shape
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    Hp, Wp = Ho + kh - 1, Wo + kw - 1
    H, W = (Hp, Wp) if padding == VALID else (Ho, Wo)
    top, left = (0, 0) if padding == VALID else ((kh - 1) // 2, (kw - 1) // 2)
    x = y.new_empty(B, C, H, W)
    if x.numel() == 0:
        return x
    psf_sb, psf_sc = _psf_strides(psf_grid, B, C)
    acc = _acc_dtype(y.dtype)

    def gather(out, p0, q0, Hb, Wb):
        _sv_conv_adj_kernel[_tile_grid(B * C, Hb, Wb, "BLOCK_H", "BLOCK_W")](
            y, psf_grid, out, C, Ho, Wo, Gy, Gx, kh, kw, p0, q0, Hb, Wb, psf_sb, psf_sc, ACC=acc, config=config)

    if padding == VALID:
        gather(x, 0, 0, Hp, Wp)
        return x
    if padding == ZEROS:  # the transpose of zero padding is a crop: compute only the interior
        gather(x, top, left, H, W)
        return x
    buf_dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    xp = torch.empty(B, C, Hp, Wp, dtype=buf_dtype, device=y.device)
    gather(xp, 0, 0, Hp, Wp)
    # Fold the rows: (B*C, Hp, Wp) -> (B*C, H, Wp).
    rows = torch.empty(B, C, H, Wp, dtype=buf_dtype, device=y.device)
    _fold_axis(xp, rows, B * C, H, Hp, Wp, top, (Hp * Wp, Wp, 1), (H * Wp, Wp, 1), padding, fold_config)
    # Fold the columns: the folded axis is the contiguous one, the tile's other axis walks the rows.
    _fold_axis(rows, x, B * C, W, Wp, H, left, (H * Wp, 1, Wp), (H * W, 1, W), padding, fold_config)
    return x


def _row_splits(planes: int, cells: int, taps: int, rows_per_cell: int) -> int:
    """How many programs share a cell's rows in the PSF gradient: enough for about TARGET_PROGRAMS programs
    (counting blocks of SPLIT_TAPS taps), at most one per row. It sets the partial buffer's size, so it does not
    depend on the config."""
    wanted = triton.cdiv(TARGET_PROGRAMS, planes * cells * triton.cdiv(taps, SPLIT_TAPS))
    return max(1, min(wanted, rows_per_cell))


def sv_conv_grad_psf(x: torch.Tensor, grad_y: torch.Tensor, psf_grid: torch.Tensor, padding: int, *,
                     config: triton.Config | None = None) -> torch.Tensor:
    """Gradient of ``<sv_conv(x, psf_grid), grad_y>`` w.r.t. psf_grid: x (B, C, H, W), grad_y (B, C, Ho, Wo) ->
    (B|1, C|1, Gy, Gx, kh, kw), summed over the broadcast batch / channel dims (psf_grid's values are not read).

    Accumulates in float32 (float64 for float64), then casts to psf_grid's dtype. The kernel writes per-program
    partial sums (no atomics) and :func:`_sum_partials` adds them up in a fixed order: the same bits on every run.
    ``config``: BLOCK_R x BLOCK_C (pixels per step), BLOCK_T (taps per program) and warps; None: tuned.
    """
    _check_inputs(x, grad_y, psf_grid)
    B, C, H, W = x.shape
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    Ho, Wo, top, left = _geometry(H, W, kh, kw, padding)
    if tuple(grad_y.shape) != (B, C, Ho, Wo):
        raise ValueError(f"grad_y must have shape {(B, C, Ho, Wo)}, got {tuple(grad_y.shape)}")
    if grad_y.numel() == 0:
        return torch.zeros(psf_grid.shape, dtype=psf_grid.dtype, device=x.device)
    buf_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    CY, CX = max(Gy - 1, 1), max(Gx - 1, 1)
    splits = _row_splits(B * C, CY * CX, kh * kw, triton.cdiv(Ho - 1, CY) + 1)
    part = torch.empty(B, C, CY, CX, splits, 2, 2, kh * kw, dtype=buf_dtype, device=x.device)
    programs = B * C * CY * CX * splits
    _sv_conv_grad_psf_kernel[lambda meta: (programs * triton.cdiv(kh * kw, meta["BLOCK_T"]),)](
        x, grad_y, part, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, splits,
        PAD=padding, ACC=_acc_dtype(x.dtype), config=config)
    return _sum_partials(part, psf_grid.shape).to(psf_grid.dtype)


def _sum_partials(part: torch.Tensor, psf_shape) -> torch.Tensor:
    """The gradient kernel's partial sums (B, C, CY, CX, splits, 2, 2, kh * kw) added onto the grid nodes, in a
    fixed order: over the splits, then corner (dy, dx) of cell (cy, cx) onto node (cy + dy, cx + dx) (a single-node
    axis has one cell whose second corner has weight 0 and is dropped), then over the broadcast batch / channel
    dims -> (Bg, Cg, Gy, Gx, kh, kw)."""
    Bg, Cg, Gy, Gx, kh, kw = psf_shape
    B, C, CY, CX = part.shape[:4]
    corners = part.sum(dim=4)
    nodes = part.new_zeros(B, C, CY + 1, CX + 1, kh * kw)
    for dy in (0, 1):
        for dx in (0, 1):
            nodes[:, :, dy:dy + CY, dx:dx + CX] += corners[:, :, :, :, dy, dx]
    nodes = nodes[:, :, :Gy, :Gx]
    if Bg == 1:
        nodes = nodes.sum(dim=0, keepdim=True)
    if Cg == 1:
        nodes = nodes.sum(dim=1, keepdim=True)
    return nodes.reshape(psf_shape)
