"""Triton (CUDA) kernels of the space-varying convolution ``blindfast.ops.sv_conv``.

Semantics (see ``blindfast/ops/reference/sv_conv.py``, the ground truth): with ``xp`` the padded image and (Ho, Wo) the
output size,

    y[b, c, i, j] = sum_{a < kh, e < kw} K_ij[a, e] * xp[b, c, i + kh - 1 - a, j + kw - 1 - e]
    K_ij = sum_{gy, gx} wy_gy(i) * wx_gx(j) * psf_grid[b|0, c|0, gy, gx]

with tent (bilinear, align_corners) weights on the output grid. A pixel lies in one cell of the grid per axis, so
only the 2 x 2 nodes of that cell have a non-zero weight: the kernels interpolate those four PSF taps per pixel
(~4 * kh * kw loads and FMAs per pixel), never the Gy * Gx dense sum.

Padding codes are those of ``blindfast.ops._checks.PADDING_CODES`` (0 valid, 1 zeros, 2 replicate, 3 reflect,
4 circular). The kernels never materialise the padded image: they map padded coordinates to source coordinates
(:func:`_pad_source`) and mask the zeros.

Dtypes: float16 / bfloat16 / float32 accumulate in float32, float64 in float64. Every launch uses a 1-D grid of
``planes * tiles`` programs (no 65535 limit on the number of planes); plane offsets are computed in int64.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = ["sv_conv_forward", "sv_conv_adjoint", "sv_conv_grad_psf"]

# Padding codes, the same as blindfast.ops._checks.PADDING_CODES; constexpr copies for use inside the kernels.
VALID, ZEROS, REPLICATE, REFLECT, CIRCULAR = range(5)
_ZEROS: tl.constexpr = tl.constexpr(ZEROS)
_REPLICATE: tl.constexpr = tl.constexpr(REPLICATE)
_REFLECT: tl.constexpr = tl.constexpr(REFLECT)
_CIRCULAR: tl.constexpr = tl.constexpr(CIRCULAR)


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


# ---------------------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _program_tile(C, n_tiles_w, n_tiles, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's plane (batch b, channel c) and its tile's row and column indices; program id =
    plane * n_tiles + tile, tiles row-major with n_tiles_w per row."""
    pid = tl.program_id(0)
    plane = pid // n_tiles
    tile = pid % n_tiles
    rows = (tile // n_tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = (tile % n_tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    return plane, plane // C, plane % C, rows, cols


@triton.jit
def _sv_conv_fwd_kernel(
    x_ptr, psf_ptr, y_ptr,
    C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left,
    psf_sb, psf_sc, n_tiles_w, n_tiles,
    PAD: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Forward: one program per (plane, BLOCK_H x BLOCK_W tile of output pixels).

    x: (B, C, H, W); psf: (Bg, Cg, Gy, Gx, kh, kw) with element strides psf_sb / psf_sc for b / c (0 when
    broadcast); y: (B, C, Ho, Wo). Program id = plane * n_tiles + tile. Per pixel and tap: one image load, the
    four PSF taps of the pixel's cell, a bilinear interpolation and one FMA.
    """
    plane, b, c, i, j = _program_tile(C, n_tiles_w, n_tiles, BLOCK_H, BLOCK_W)
    out_mask = (i < Ho)[:, None] & (j < Wo)[None, :]

    # The cell of each pixel does not depend on the tap: the offset of its top-left node (relative to the current
    # tap of node (0, 0)) and its fractional position are computed once. The other three nodes are at fixed
    # distances: +KK to the right, +Gx*KK below (0 on an axis with a single node).
    KK = kh * kw
    scale_y, last_y = _tent_axis(Ho, Gy, ACC)
    scale_x, last_x = _tent_axis(Wo, Gx, ACC)
    gy0, ty = _tent_cell(i, scale_y, last_y, ACC)
    gx0, tx = _tent_cell(j, scale_x, last_x, ACC)
    off00 = (gy0 * (Gx * KK))[:, None] + (gx0 * KK)[None, :]
    d_right = tl.where(Gx > 1, KK, 0)
    d_down = tl.where(Gy > 1, Gx * KK, 0)
    ty = ty[:, None]
    tx = tx[None, :]

    x_plane = x_ptr + plane.to(tl.int64) * H * W
    psf_tap = psf_ptr + b * psf_sb + c * psf_sc  # tap (a, e) of node (0, 0); taps are visited in memory order
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
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
            acc += xv.to(ACC) * _interpolated_tap(psf_tap + off00, d_right, d_down, tx, ty, ACC)
            psf_tap += 1
            q -= 1
    y_plane = y_ptr + plane.to(tl.int64) * Ho * Wo
    tl.store(y_plane + i[:, None] * Wo + j[None, :], acc.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _sv_conv_adj_kernel(
    y_ptr, psf_ptr, out_ptr,
    C, Ho, Wo, Gy, Gx, kh, kw, p0, q0, Hb, Wb,
    psf_sb, psf_sc, n_tiles_w, n_tiles,
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
    plane, b, c, pb, qb = _program_tile(C, n_tiles_w, n_tiles, BLOCK_H, BLOCK_W)

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


@triton.jit
def _fold_axis_kernel(
    src_ptr, dst_ptr,
    L, Lp, M, lead,
    src_sn, src_sl, src_sm, dst_sn, dst_sl, dst_sm,
    n_tiles_m, n_tiles,
    PAD: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Transpose of the padding along one axis, by gathering: dst[n, r, m] = sum_{p : source(p) = r} src[n, p, m].

    src: (N, Lp, M) with element strides (src_sn, src_sl, src_sm), the padded axis of length Lp = lead + L + trail;
    dst: (N, L, M) with strides (dst_sn, dst_sl, dst_sm). Pixel r receives its interior copy p = r + lead plus the
    halo positions (Lp - L of them, fewer than the kernel size) whose padding source is r; each program scans the
    short halo with masked loads. Each dst element is written by one program: deterministic, no atomics.
    """
    n, _, _, r, m = _program_tile(1, n_tiles_m, n_tiles, BLOCK_L, BLOCK_M)
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


@triton.jit
def _sv_conv_grad_psf_kernel(
    x_ptr, g_ptr, grad_ptr, window_ptr,
    C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left,
    psf_sb, psf_sc, n_tiles_w, n_tiles,
    PAD: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    NODES_Y: tl.constexpr, NODES_X: tl.constexpr, ORDERED: tl.constexpr,
):
    """PSF gradient, a reduction over pixels: one program per (plane, tile of output pixels).

    x: (B, C, H, W); g (= grad_y): (B, C, Ho, Wo); grad: (Bg, Cg, Gy, Gx, kh, kw) in ``ACC``, zero-initialised,
    element strides psf_sb / psf_sc (0 when broadcast, so that the broadcast planes sum into one):

        grad[gy, gx, a, e] += sum_{(i, j) in tile} wy_gy(i) wx_gx(j) g[i, j] xp[i + kh - 1 - a, j + kw - 1 - e]

    A tile meets at most NODES_Y x NODES_X nodes (the launcher bounds it; 2 x 2 when the tile lies in one cell),
    starting at (gy_lo, gx_lo). Their tent weights form two small matrices WY (BLOCK_H, NODES_Y) and WX (BLOCK_W,
    NODES_X), computed once; per tap, the product P = g * xp is reduced separably, S = WY^T P WX, and the
    (NODES_Y, NODES_X) partial sums go to ``grad`` with one vector tl.atomic_add.

    ORDERED (no atomics, for torch.use_deterministic_algorithms): ``grad`` is instead (programs, NODES_Y, NODES_X,
    kh, kw), each program storing its partial sums in its own slot, and ``window`` (programs, 2) receives the
    program's first node (gy_lo, gx_lo); the launcher adds the slots up in a fixed order.
    """
    plane, b, c, i, j = _program_tile(C, n_tiles_w, n_tiles, BLOCK_H, BLOCK_W)
    ok_i = i < Ho
    ok_j = j < Wo

    # Node weights of the tile's pixels: 1 - ty on node gy0 and ty on node gy0 + 1 (both on node 0, summing to
    # 1, when Gy == 1). Pixels outside the output get g = 0 below, so their weights need no mask.
    KK = kh * kw
    scale_y, last_y = _tent_axis(Ho, Gy, ACC)
    scale_x, last_x = _tent_axis(Wo, Gx, ACC)
    gy0, ty = _tent_cell(i, scale_y, last_y, ACC)
    gx0, tx = _tent_cell(j, scale_x, last_x, ACC)
    gy_lo = tl.min(tl.where(ok_i, gy0, Gy - 1), axis=0)
    gx_lo = tl.min(tl.where(ok_j, gx0, Gx - 1), axis=0)
    ny = gy_lo + tl.arange(0, NODES_Y)
    nx = gx_lo + tl.arange(0, NODES_X)
    gy0 = gy0[:, None]
    gx0 = gx0[:, None]
    ty = ty[:, None]
    tx = tx[:, None]
    wy = tl.where(gy0 == ny[None, :], 1 - ty, 0) + tl.where(tl.minimum(gy0 + 1, Gy - 1) == ny[None, :], ty, 0)
    wx = tl.where(gx0 == nx[None, :], 1 - tx, 0) + tl.where(tl.minimum(gx0 + 1, Gx - 1) == nx[None, :], tx, 0)
    node_off = (ny[:, None] * Gx + nx[None, :]) * KK
    node_mask = (ny < Gy)[:, None] & (nx < Gx)[None, :]

    gv = tl.load(g_ptr + plane.to(tl.int64) * Ho * Wo + i[:, None] * Wo + j[None, :],
                 mask=ok_i[:, None] & ok_j[None, :], other=0).to(ACC)
    x_plane = x_ptr + plane.to(tl.int64) * H * W
    if ORDERED:
        pid = tl.program_id(0).to(tl.int64)
        grad_tap = grad_ptr + pid * (NODES_Y * NODES_X * KK)  # tap (a, e) of the program's first node
        node_off = (tl.arange(0, NODES_Y)[:, None] * NODES_X + tl.arange(0, NODES_X)[None, :]) * KK
        tl.store(window_ptr + 2 * pid, gy_lo)
        tl.store(window_ptr + 2 * pid + 1, gx_lo)
    else:
        grad_tap = grad_ptr + b * psf_sb + c * psf_sc  # tap (a, e) of node (0, 0); taps are visited in memory order
    for a in range(kh):
        p_r = i + (kh - 1 - a - top)  # the image access is the forward's
        x_row = x_plane + _pad_source(p_r, H, PAD)[:, None] * W
        if PAD == _ZEROS:
            ok_r = ((p_r >= 0) & (p_r < H))[:, None]
        q = j + (kw - 1 - left)
        for e in range(kw):
            if PAD == _ZEROS:
                xv = tl.load(x_row + q[None, :], mask=ok_r & ((q >= 0) & (q < W))[None, :], other=0)
            else:
                xv = tl.load(x_row + _pad_source(q, W, PAD)[None, :])
            prod = gv * xv.to(ACC)  # (BLOCK_H, BLOCK_W); zero outside the output (g = 0 there)
            rows = tl.sum(prod[:, :, None] * wx[None, :, :], axis=1)  # (BLOCK_H, NODES_X)
            part = tl.sum(wy[:, :, None] * rows[:, None, :], axis=0)  # (NODES_Y, NODES_X)
            if ORDERED:
                tl.store(grad_tap + node_off, part)
            else:
                tl.atomic_add(grad_tap + node_off, part, mask=node_mask)
            grad_tap += 1
            q -= 1


# ---------------------------------------------------------------------------------------------------------------
# Launch helpers (inputs: contiguous, one dtype, one device; the op layer checks shapes). BLOCK_H / BLOCK_W (powers
# of 2) are the tile of one program and num_warps its warps. The defaults (16 x 32, 4 warps) compile for sm_90 with
# 64-96 registers per thread and no spills; they are not tuned on a GPU. Tests under the interpreter pass large blocks.


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


def sv_conv_forward(x: torch.Tensor, psf_grid: torch.Tensor, padding: int, *, BLOCK_H: int = 16,
                    BLOCK_W: int = 32, num_warps: int = 4) -> torch.Tensor:
    """``y = sv_conv(x, psf_grid)``: x (B, C, H, W), psf_grid (B|1, C|1, Gy, Gx, kh, kw) -> y (B, C, Ho, Wo)."""
    _check_inputs(x, psf_grid)
    B, C, H, W = x.shape
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    Ho, Wo, top, left = _geometry(H, W, kh, kw, padding)
    y = x.new_empty(B, C, Ho, Wo)
    if y.numel() == 0:
        return y
    n_tiles_w = triton.cdiv(Wo, BLOCK_W)
    n_tiles = triton.cdiv(Ho, BLOCK_H) * n_tiles_w
    psf_sb, psf_sc = _psf_strides(psf_grid, B, C)
    _sv_conv_fwd_kernel[(B * C * n_tiles,)](
        x, psf_grid, y, C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, psf_sb, psf_sc, n_tiles_w, n_tiles,
        PAD=padding, ACC=_acc_dtype(x.dtype), BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, num_warps=num_warps)
    return y


def _fold_axis(src: torch.Tensor, dst: torch.Tensor, N: int, L: int, Lp: int, M: int, lead: int, src_strides,
               dst_strides, padding: int, BLOCK_L: int, BLOCK_M: int, num_warps: int) -> None:
    n_tiles_m = triton.cdiv(M, BLOCK_M)
    n_tiles = triton.cdiv(L, BLOCK_L) * n_tiles_m
    _fold_axis_kernel[(N * n_tiles,)](
        src, dst, L, Lp, M, lead, *src_strides, *dst_strides, n_tiles_m, n_tiles,
        PAD=padding, BLOCK_L=BLOCK_L, BLOCK_M=BLOCK_M, num_warps=num_warps)


def sv_conv_adjoint(y: torch.Tensor, psf_grid: torch.Tensor, padding: int, *, BLOCK_H: int = 16,
                    BLOCK_W: int = 32, num_warps: int = 4) -> torch.Tensor:
    """Exact transpose of :func:`sv_conv_forward`: y (B, C, Ho, Wo) -> x (B, C, H, W).

    (H, W) = (Ho, Wo), or (Ho + kh - 1, Wo + kw - 1) for "valid". For "valid" and "zeros" the gather kernel
    writes x directly (zeros: only the interior of the padded grid). For replicate / reflect / circular, it
    writes the whole padded grid to a temporary in the accumulation dtype, which is folded back onto the image
    (rows, then columns) by the transpose of the padding.
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
        n_tiles_w = triton.cdiv(Wb, BLOCK_W)
        n_tiles = triton.cdiv(Hb, BLOCK_H) * n_tiles_w
        _sv_conv_adj_kernel[(B * C * n_tiles,)](
            y, psf_grid, out, C, Ho, Wo, Gy, Gx, kh, kw, p0, q0, Hb, Wb, psf_sb, psf_sc, n_tiles_w, n_tiles,
            ACC=acc, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, num_warps=num_warps)

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
    _fold_axis(xp, rows, B * C, H, Hp, Wp, top, (Hp * Wp, Wp, 1), (H * Wp, Wp, 1), padding,
               BLOCK_H, BLOCK_W, num_warps)
    # Fold the columns: the folded axis is the contiguous one, the tile's other axis walks the rows.
    _fold_axis(rows, x, B * C, W, Wp, H, left, (H * Wp, 1, Wp), (H * W, 1, W), padding,
               BLOCK_W, BLOCK_H, num_warps)
    return x


def _nodes_per_tile(n: int, G: int, block: int) -> int:
    """Upper bound (a power of 2) on the grid nodes with a non-zero weight in a tile of ``block`` of ``n`` pixels.

    Pixel i sits at u = i (G - 1) / (n - 1); a tile [i0, i1] touches nodes floor(u0) .. floor(u1) + 1. The kernel
    rounds u (to float32 for half / float32 data), which can move a floor by one where u is near an integer: the
    floors here take a margin ``eps`` well above that rounding (a wider window only costs a masked node; a
    narrower one would drop a node's gradient).
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


def sv_conv_grad_psf(x: torch.Tensor, grad_y: torch.Tensor, psf_grid: torch.Tensor, padding: int, *,
                     BLOCK_H: int = 16, BLOCK_W: int = 32, num_warps: int = 4) -> torch.Tensor:
    """Gradient of ``<sv_conv(x, psf_grid), grad_y>`` w.r.t. psf_grid: x (B, C, H, W), grad_y (B, C, Ho, Wo) ->
    (B|1, C|1, Gy, Gx, kh, kw), summed over the broadcast batch / channel dims (psf_grid's values are not read).

    Accumulates in float32 (float64 for float64), then casts to psf_grid's dtype. By default the programs add their
    partial sums into the result with atomics, whose order (and so the rounding) changes from run to run. Under
    ``torch.use_deterministic_algorithms(True)`` each program stores its partial sums instead (programs x 4 nodes
    x kh x kw values when a tile lies in one grid cell) and ``index_add_``, deterministic in that mode, adds them
    up: the same bits on every run, for some extra memory and time.
    """
    _check_inputs(x, grad_y, psf_grid)
    B, C, H, W = x.shape
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    Ho, Wo, top, left = _geometry(H, W, kh, kw, padding)
    if tuple(grad_y.shape) != (B, C, Ho, Wo):
        raise ValueError(f"grad_y must have shape {(B, C, Ho, Wo)}, got {tuple(grad_y.shape)}")
    buf_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if grad_y.numel() == 0:
        return torch.zeros(psf_grid.shape, dtype=psf_grid.dtype, device=x.device)
    n_tiles_w = triton.cdiv(Wo, BLOCK_W)
    n_tiles = triton.cdiv(Ho, BLOCK_H) * n_tiles_w
    psf_sb, psf_sc = _psf_strides(psf_grid, B, C)
    nodes = (_nodes_per_tile(Ho, Gy, BLOCK_H), _nodes_per_tile(Wo, Gx, BLOCK_W))
    ordered = torch.are_deterministic_algorithms_enabled()
    if ordered:
        grad = torch.empty(B * C * n_tiles, *nodes, kh, kw, dtype=buf_dtype, device=x.device)
        window = torch.empty(B * C * n_tiles, 2, dtype=torch.int32, device=x.device)
    else:
        grad = torch.zeros(psf_grid.shape, dtype=buf_dtype, device=x.device)
        window = grad  # not read
    _sv_conv_grad_psf_kernel[(B * C * n_tiles,)](
        x, grad_y, grad, window, C, H, W, Ho, Wo, Gy, Gx, kh, kw, top, left, psf_sb, psf_sc, n_tiles_w, n_tiles,
        PAD=padding, ACC=_acc_dtype(x.dtype), BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, NODES_Y=nodes[0], NODES_X=nodes[1],
        ORDERED=ordered, num_warps=num_warps)
    if ordered:
        grad = _sum_program_partials(grad, window, psf_grid.shape, n_tiles, C, psf_sb > 0, psf_sc > 0)
    return grad.to(psf_grid.dtype)


def _sum_program_partials(partials: torch.Tensor, window: torch.Tensor, psf_shape, n_tiles: int, C: int,
                          per_batch: bool, per_channel: bool) -> torch.Tensor:
    """The ORDERED kernel's per-program partial sums (programs, NODES_Y, NODES_X, kh, kw), added onto their grid
    nodes: (Bg, Cg, Gy, Gx, kh, kw). ``window`` (programs, 2) holds each program's first node; nodes of the window
    past the grid (their partial sums are 0) go to a spare row that is dropped."""
    Bg, Cg, Gy, Gx, kh, kw = psf_shape
    programs, nodes_y, nodes_x = partials.shape[:3]
    device = partials.device
    plane = torch.arange(programs, device=device) // n_tiles  # program id = plane * n_tiles + tile
    batch = plane // C if per_batch else torch.zeros_like(plane)
    channel = plane % C if per_channel else torch.zeros_like(plane)
    grid_index = batch * Cg + channel
    ny = window[:, 0, None].long() + torch.arange(nodes_y, device=device)  # (programs, NODES_Y)
    nx = window[:, 1, None].long() + torch.arange(nodes_x, device=device)  # (programs, NODES_X)
    inside = (ny < Gy)[:, :, None] & (nx < Gx)[:, None, :]
    node = (grid_index[:, None, None] * Gy + ny[:, :, None]) * Gx + nx[:, None, :]
    spare = Bg * Cg * Gy * Gx
    target = torch.where(inside, node, spare).reshape(-1)
    sums = partials.new_zeros(spare + 1, kh * kw).index_add_(0, target, partials.reshape(-1, kh * kw))
    return sums[:spare].reshape(psf_shape)
