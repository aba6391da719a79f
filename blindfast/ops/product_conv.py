"""Product convolution (deepinv's ``product_convolution2d``) that skips the zeros of the multipliers.

deepinv computes ``sum_k h_k conv (w_k * x)`` (or ``sum_k w_k * (h_k conv x)``) with one full-image convolution per
``k``. Real multipliers (the tent maps of a grid of PSFs, a partition of unity) are non-zero on a small part of the
image: with an 8x8 bilinear grid, 16 times less work than deepinv does is useful. Here each ``k`` is convolved only
over the region its multiplier's support influences, and the per-``k`` regions are batched into a few grouped
``F.conv2d`` calls (many channels per call, which is also what makes a CPU depthwise convolution efficient).

Everything is plain torch: the op is differentiable w.r.t. ``x``, ``kernels`` and ``multipliers`` through autograd,
and runs on any device torch runs on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast.ops._checks import check_broadcast, check_padding, check_same, check_tensor, resolve_padding

__all__ = ["product_conv"]

_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect", "circular": "circular"}

# Batching: regions of different sizes share one grouped convolution when padding them to a common size wastes
# at most this fraction of the work; one call holds at most _MAX_BATCH_ELEMS input elements.
_BATCH_WASTE = 0.1
_MAX_BATCH_ELEMS = 1 << 21
# At most this many disjoint support intervals per axis and per k (more are merged, smallest gaps first).
_MAX_RUNS = 4


# ---------------------------------------------------------------------------------------------------------------
# Geometry (host side, on small 1-D arrays).


def _pads(k: int, padding: str) -> tuple[int, int]:
    """Padding before / after along one axis for a kernel of size ``k``: (k-1)//2 and k//2, none for "valid"."""
    return (0, 0) if padding == "valid" else ((k - 1) // 2, k // 2)


def _source_index(n: int, before: int, after: int, padding: str) -> np.ndarray:
    """For each index of the padded axis (length n + before + after), the index of ``x`` it copies; -1 for a zero."""
    i = np.arange(-before, n + after)
    if padding in ("valid", "zeros"):
        return np.where((i >= 0) & (i < n), i, -1)
    if padding == "replicate":
        return np.clip(i, 0, n - 1)
    if padding == "reflect":
        i = np.abs(i)
        return np.where(i >= n, 2 * (n - 1) - i, i)
    return np.mod(i, n)  # circular


def _runs(mask: np.ndarray, merge_gap: int) -> list[list[tuple[int, int]]]:
    """For each row of ``mask`` (K, n), the maximal runs ``[start, stop)`` of True; runs closer than ``merge_gap``
    (and, past _MAX_RUNS, the closest ones) are merged."""
    K, n = mask.shape
    edges = np.diff(mask.astype(np.int8), axis=1, prepend=0, append=0)
    ks, starts = np.nonzero(edges == 1)  # row-major: sorted by k, then by position
    stops = np.nonzero(edges == -1)[1]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(ks, minlength=K))))
    out = []
    for k in range(K):
        st, sp = starts[bounds[k]:bounds[k + 1]], stops[bounds[k]:bounds[k + 1]]
        if len(st) <= 1:
            out.append([(int(st[0]), int(sp[0]))] if len(st) else [])
            continue
        gaps = st[1:] - sp[:-1]
        keep = gaps > merge_gap  # split where the gap is large
        if keep.sum() >= _MAX_RUNS:  # keep only the largest _MAX_RUNS - 1 gaps
            keep = np.zeros_like(keep)
            keep[np.argsort(-gaps, kind="stable")[: _MAX_RUNS - 1]] = True
        cut = np.flatnonzero(keep)
        first, last = np.concatenate(([0], cut + 1)), np.concatenate((cut, [len(st) - 1]))
        out.append([(int(st[a]), int(sp[b])) for a, b in zip(first, last)])
    return out


def _as_index(src: np.ndarray, start: int, stop: int, before: int, n: int) -> tuple[slice, list | None]:
    """How to read the padded pixels ``[start, stop)``, whose sources are ``src[start:stop]`` (an axis of ``n``
    pixels padded by ``before``): the source range they span and, unless they are that range in order, pieces
    ``(first, length, step)`` within it, with step 1 (a slice), -1 (a reversed slice, as reflect makes) or 0 (a
    repeated pixel, as replicate makes). Slices and flips, not gathers: on the CPU, ``index_select`` is ten times
    slower than a copy."""
    if start >= before and stop <= before + n:  # inside the image
        return slice(start - before, stop - before), None
    seg = src[start:stop]
    lo, hi = int(seg.min()), int(seg.max()) + 1
    if hi - lo == len(seg) and np.all(np.diff(seg) == 1):
        return slice(lo, hi), None
    d, pieces, i = np.diff(seg), [], 0
    while i < len(seg):
        step = int(d[i]) if i < len(d) else 1
        if abs(step) > 1:  # a jump (circular): a piece of one pixel
            pieces.append((int(seg[i]) - lo, 1, 1))
            i += 1
            continue
        other = np.flatnonzero(d[i:] != step)
        j = i + int(other[0]) if len(other) else len(seg) - 1  # seg[i..j] moves by step
        pieces.append((int(seg[i]) - lo, j - i + 1, step))
        i = j + 1
    return slice(lo, hi), pieces


def _read(t: Tensor, dim: int, pieces) -> Tensor:
    """Assemble ``t`` along ``dim`` from :func:`_as_index` pieces."""
    if pieces is None:
        return t
    parts = []
    for first, n, step in pieces:
        if step == 1:
            parts.append(t.narrow(dim, first, n))
        elif step == -1:
            parts.append(t.narrow(dim, first - n + 1, n).flip(dim))
        else:
            shape = list(t.shape)
            shape[dim] = n
            parts.append(t.narrow(dim, first, 1).expand(shape))
    return torch.cat(parts, dim) if len(parts) > 1 else parts[0]


def _read_adjoint(t: Tensor, dim: int, pieces, n: int) -> Tensor:
    """Adjoint of :func:`_read` from a range of ``n`` pixels: add each piece back where it was read."""
    if pieces is None:
        return t
    shape = list(t.shape)
    shape[dim] = n
    whole = [i for i, (first, length, step) in enumerate(pieces) if step == 1 and length == n]
    start = sum(p[1] for p in pieces[:whole[0]]) if whole else 0
    out = t.narrow(dim, start, n).clone() if whole else t.new_zeros(shape)
    offset = 0
    for i, (first, length, step) in enumerate(pieces):
        part = t.narrow(dim, offset, length)
        offset += length
        if whole and i == whole[0]:
            continue
        if step == 1:
            out.narrow(dim, first, length).add_(part)
        elif step == -1:
            out.narrow(dim, first - length + 1, length).add_(part.flip(dim))
        else:
            out.narrow(dim, first, 1).add_(part.sum(dim, keepdim=True))
    return out


def _take(t: Tensor, rows, cols) -> Tensor:
    """``t[..., rows, cols]`` for ``rows`` and ``cols`` from :func:`_as_index`."""
    return _read(_read(t[..., rows[0], cols[0]], -2, rows[1]), -1, cols[1])


def _masked_box(x: Tensor, multipliers: Tensor, it) -> Tensor:
    """The box ``it.box`` of ``pad(w_k * x)``: multiply over the source range, then assemble."""
    (rs, rp), (cs, cp) = it.rows, it.cols
    return _read(_read(multipliers[:, :, it.k, rs, cs] * x[..., rs, cs], -2, rp), -1, cp)


@dataclass
class _Item:
    """One convolution: kernel ``k`` over a box.

    ``box`` holds the non-zero data: with mask_first, a box of ``pad(w_k * x)`` in padded-image coordinates
    (gathered from ``x`` and ``w_k`` through ``rows`` / ``cols``); otherwise a box of the output grid (the
    multiplier's support). ``out`` is the output box it contributes to (equal to ``box`` when not mask_first).
    """

    k: int
    box: tuple[int, int, int, int]  # r0, r1, c0, c1
    out: tuple[int, int, int, int]
    rows: object = None
    cols: object = None

    @property
    def size(self) -> tuple[int, int]:
        return self.box[1] - self.box[0], self.box[3] - self.box[2]


_SAME_SIZE_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
                  torch.bfloat16: torch.int16}


def _reduce_rows(v: Tensor, f) -> Tensor:
    """``f(v, dim=-2)`` (amax or amin), through blocks of 16 rows: on the CPU, faster than reducing a strided
    dimension in one go."""
    h, hb = v.shape[-2], v.shape[-2] // 16 * 16
    if hb < 32:
        return f(v, -2)
    r = f(v[..., :hb, :].unflatten(-2, (hb // 16, 16)), -2)
    if hb < h:
        r = torch.cat((r, f(v[..., hb:, :], -2, keepdim=True)), -2)
    return f(r, -2)


def _support(multipliers: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows (K, Hm) and columns (K, Wm) where some multiplier of each k (over its b, c) is non-zero.

    The multipliers are read as integers of the same size (the sign bit stays the sign): non-zero is ``> 0`` or
    ``< 0``, found by max / min reductions, which are fast where a ``!= 0`` map and ``any`` are not. -0.0 counts
    as non-zero (a superset of the support is fine), and so do NaN and inf. Rows take two passes over the
    multipliers; columns are only searched in the rows found."""
    v = multipliers.view(_SAME_SIZE_INT[multipliers.dtype])
    rows = ((v.amax(-1) > 0) | (v.amin(-1) < 0)).flatten(0, 1).any(0).cpu().numpy()  # (K, Hm)
    K, Wm = multipliers.shape[2], multipliers.shape[-1]
    # consecutive k's with the same rows (a row of grid nodes) share one reduction
    hulls = [(int(nz[0]), int(nz[-1]) + 1) if len(nz) else None for nz in map(np.flatnonzero, rows)]
    groups = []  # (k0, k1, r0, r1)
    for k, hull in enumerate(hulls):
        if hull is None:
            continue
        if groups and groups[-1][1] == k and groups[-1][2:] == hull:
            groups[-1] = (groups[-1][0], k + 1, *hull)
        else:
            groups.append((k, k + 1, *hull))
    cols = np.zeros((K, Wm), dtype=bool)
    if groups:
        sub = [v[:, :, k0:k1, r0:r1] for k0, k1, r0, r1 in groups]
        mx = torch.cat([_reduce_rows(t, torch.amax) for t in sub], 2)  # (b, c, found, Wm)
        mn = torch.cat([_reduce_rows(t, torch.amin) for t in sub], 2)
        found = np.concatenate([np.arange(k0, k1) for k0, k1, _, _ in groups])
        cols[found] = ((mx > 0) | (mn < 0)).flatten(0, 1).any(0).cpu().numpy()
    return rows, cols


def _plan(multipliers: Tensor, kh: int, kw: int, image_hw, padding: str, mask_first: bool) -> list[_Item]:
    """Split each multiplier's support (over its b, c) into a few boxes and list the convolutions to run.

    When the multipliers require a gradient, the support is the whole grid: their gradient is dense (it does not
    vanish where they do), and autograd only sees what the boxes cover."""
    H, W = image_hw
    (pt, pb), (pl, pr) = _pads(kh, padding), _pads(kw, padding)
    Ho, Wo = H + pt + pb - kh + 1, W + pl + pr - kw + 1
    if multipliers.requires_grad and torch.is_grad_enabled():
        rows_nz = np.ones(multipliers.shape[2:4], dtype=bool)
        cols_nz = np.ones((multipliers.shape[2], multipliers.shape[4]), dtype=bool)
    else:
        rows_nz, cols_nz = _support(multipliers)
    items = []
    if mask_first:
        src_r = _source_index(H, pt, pb, padding)
        src_c = _source_index(W, pl, pr, padding)
        # support of pad(w_k * x) along each padded axis
        runs_r = _runs((src_r >= 0) & rows_nz[:, np.maximum(src_r, 0)], kh - 1)
        runs_c = _runs((src_c >= 0) & cols_nz[:, np.maximum(src_c, 0)], kw - 1)
        for k in range(multipliers.shape[2]):
            boxes = [(r, c) for r in runs_r[k] for c in runs_c[k]]
            for (r0, r1), (c0, c1) in boxes:
                rows, cols = _as_index(src_r, r0, r1, pt, H), _as_index(src_c, c0, c1, pl, W)
                if len(boxes) > 1 and not bool(_take(multipliers[:, :, k], rows, cols).ne(0).any()):
                    continue
                out = (max(0, r0 - kh + 1), min(Ho, r1), max(0, c0 - kw + 1), min(Wo, c1))
                items.append(_Item(k, (r0, r1, c0, c1), out, rows, cols))
    else:
        runs_r, runs_c = _runs(rows_nz, kh - 1), _runs(cols_nz, kw - 1)
        for k in range(multipliers.shape[2]):
            boxes = [(r, c) for r in runs_r[k] for c in runs_c[k]]
            for (r0, r1), (c0, c1) in boxes:
                if len(boxes) > 1 and not bool(multipliers[:, :, k, r0:r1, c0:c1].ne(0).any()):
                    continue
                items.append(_Item(k, (r0, r1, c0, c1), (r0, r1, c0, c1)))
    return items


def _batches(items: list[_Item], planes: int) -> list[tuple[list[_Item], int, int]]:
    """Group items into batches of one box size ``(h, w)`` (the largest of the batch): ``[(items, h, w)]``.

    Sorted by area, an item joins the current batch while padding all boxes to the batch's size wastes at most
    _BATCH_WASTE of the batch's work, and the batch holds at most _MAX_BATCH_ELEMS elements."""
    order = sorted(items, key=lambda it: (-it.size[0] * it.size[1], -it.size[0], -it.size[1]))
    batches, cur, area, bh, bw = [], [], 0, 0, 0
    for it in order:
        h, w = it.size
        nh, nw, n = max(bh, h), max(bw, w), len(cur) + 1
        if cur and (n * nh * nw > (1 + _BATCH_WASTE) * (area + h * w) or n * planes * nh * nw > _MAX_BATCH_ELEMS):
            batches.append((cur, bh, bw))
            cur, area, nh, nw = [], 0, h, w
        cur.append(it)
        area += h * w
        bh, bw = nh, nw
    if cur:
        batches.append((cur, bh, bw))
    return batches


def _batch_weight(kernels: Tensor, ks: list[int], B: int, C: int) -> Tensor:
    """Grouped-conv weight ``(n * B * C, 1, kh, kw)`` for the kernels ``ks`` (``kernels``: (b, c, K, kh, kw))."""
    kh, kw = kernels.shape[-2:]
    w = kernels[:, :, ks].movedim(2, 0)  # (n, b, c, kh, kw)
    return w.expand(len(ks), B, C, kh, kw).reshape(len(ks) * B * C, 1, kh, kw)


def _conv(inp: Tensor, weight: Tensor) -> Tensor:
    """Grouped (depthwise) valid correlation of ``inp: (n, B, C, h, w)``, one kernel per plane.

    Zero margins are explicit, in the slots: oneDNN's fast depthwise kernels do not take a ``padding=`` of kernel
    size - 1, and float64 transposed convolutions are slow on the CPU."""
    n, B, C, h, w = inp.shape
    g = n * B * C
    out = F.conv2d(inp.reshape(1, g, h, w), weight, groups=g)
    return out.reshape(n, B, C, *out.shape[-2:])


# ---------------------------------------------------------------------------------------------------------------
# The four linear maps. Each item's contribution is computed in a slot of its batch, a (n, B, C, ., .) tensor.
#
# mask_first: the slot holds the box of pad(w_k * x) at (kh - 1, kw - 1), zeros around; its valid convolution is
# the box's full convolution: slot output row j = output row r0 - kh + 1 + j.
# not mask_first: the slot holds the padded image over the output box plus the kernel's halo; a box smaller than
# the batch's reads more of the image (the window slides inward at the border) instead of zeros.


def _pad_adjoint(xp: Tensor, image_hw, kh: int, kw: int, padding: str) -> Tensor:
    """Adjoint of padding ``(B, C, H, W) -> (B, C, Hp, Wp)``: each padded pixel goes back to the pixel it copies."""
    H, W = image_hw
    (pt, pb), (pl, pr) = _pads(kh, padding), _pads(kw, padding)
    if padding in ("valid", "zeros"):
        return xp[..., pt:pt + H, pl:pl + W]
    rows = _as_index(_source_index(H, pt, pb, padding), 0, H + pt + pb, pt, H)[1]
    cols = _as_index(_source_index(W, pl, pr, padding), 0, W + pl + pr, pl, W)[1]
    return _read_adjoint(_read_adjoint(xp, -2, rows, H), -1, cols, W)


class _Slots:
    """The batches' input tensors. Without autograd, one buffer serves every batch (fewer fresh pages: an
    allocator that maps each large block anew makes every first touch a page fault)."""

    def __init__(self, like: Tensor, batches, extra: tuple[int, int], reuse: bool):
        self.like, self.reuse = like, reuse
        planes = like.shape[0] * like.shape[1]
        numel = max((len(b) * planes * (h + extra[0]) * (w + extra[1]) for b, h, w in batches), default=0)
        self.buffer = like.new_empty(numel) if reuse else None

    def empty(self, shape) -> Tensor:
        if self.reuse:
            return self.buffer[:math.prod(shape)].view(shape)
        return self.like.new_empty(shape)

    def zeros(self, shape) -> Tensor:
        return self.empty(shape).zero_() if self.reuse else self.like.new_zeros(shape)


def _product_into(dst: Tensor, a: Tensor, b: Tensor, reuse: bool) -> None:
    """``dst[...] = a * b``, without a temporary when autograd is not involved."""
    if reuse:
        torch.mul(a, b, out=dst)
    else:
        dst.copy_(a * b)


def _forward(x, flipped, multipliers, padding, mask_first, reuse):
    """A convolution is a correlation with the flipped kernel."""
    B, C, H, W = x.shape
    kh, kw = flipped.shape[-2:]
    (pt, pb), (pl, pr) = _pads(kh, padding), _pads(kw, padding)
    Ho, Wo = H + pt + pb - kh + 1, W + pl + pr - kw + 1
    y = x.new_zeros(B, C, Ho, Wo)
    items = _plan(multipliers, kh, kw, (H, W), padding, mask_first) if y.numel() else []
    batches = _batches(items, B * C)
    if mask_first:
        slots = _Slots(x, batches, (2 * (kh - 1), 2 * (kw - 1)), reuse)
    else:
        slots = _Slots(x, batches, (kh - 1, kw - 1), reuse)
        if padding != "valid":
            x = F.pad(x, (pl, pr, pt, pb), mode=_TORCH_PAD_MODE[padding])
    for batch, bh, bw in batches:
        weight = _batch_weight(flipped, [it.k for it in batch], B, C)
        if mask_first:
            inp = slots.zeros((len(batch), B, C, bh + 2 * (kh - 1), bw + 2 * (kw - 1)))
            for i, it in enumerate(batch):
                (h, w), ((rs, rp), (cs, cp)) = it.size, (it.rows, it.cols)
                dst = inp[i, :, :, kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]
                if rp is None and cp is None:
                    _product_into(dst, multipliers[:, :, it.k, rs, cs], x[..., rs, cs], reuse)
                else:
                    dst.copy_(_masked_box(x, multipliers, it))
            out = _conv(inp, weight)
            for i, it in enumerate(batch):
                (o0, o1, u0, u1), r0, c0 = it.out, it.box[0] - kh + 1, it.box[2] - kw + 1
                y[..., o0:o1, u0:u1] += out[i, :, :, o0 - r0:o1 - r0, u0 - c0:u1 - c0]
        else:
            # window (origin a, b) of the padded image, slid inward so that it fits
            origins = [(min(it.box[0], Ho - bh), min(it.box[2], Wo - bw)) for it in batch]
            windows = [x[..., a:a + bh + kh - 1, b:b + bw + kw - 1] for a, b in origins]
            if reuse:
                inp = torch.stack(windows, out=slots.empty((len(batch), B, C, bh + kh - 1, bw + kw - 1)))
            else:
                inp = torch.stack(windows)
            out = _conv(inp, weight)
            for i, (it, (a, b)) in enumerate(zip(batch, origins)):
                r0, r1, c0, c1 = it.box
                y[..., r0:r1, c0:c1].addcmul_(out[i, :, :, r0 - a:r1 - a, c0 - b:c1 - b],
                                              multipliers[:, :, it.k, r0:r1, c0:c1])
    return y


def _adjoint(y, kernels, multipliers, padding, mask_first, image_hw, reuse):
    """The transposed convolution is a correlation with the kernel itself (not flipped) over a zero-padded slot."""
    B, C = y.shape[:2]
    kh, kw = kernels.shape[-2:]
    H, W = image_hw
    (pt, pb), (pl, pr) = _pads(kh, padding), _pads(kw, padding)
    xp = y.new_zeros(B, C, H + pt + pb, W + pl + pr)
    items = _plan(multipliers, kh, kw, (H, W), padding, mask_first) if xp.numel() else []
    batches = _batches(items, B * C)
    slots = _Slots(y, batches, (kh - 1, kw - 1) if mask_first else (2 * (kh - 1), 2 * (kw - 1)), reuse)
    for batch, bh, bw in batches:
        weight = _batch_weight(kernels, [it.k for it in batch], B, C)
        if mask_first:  # the slot: y from row r0 - kh + 1 (zero outside the output box), gives the box directly
            inp = slots.zeros((len(batch), B, C, bh + kh - 1, bw + kw - 1))
            for i, it in enumerate(batch):
                (o0, o1, u0, u1), r0, c0 = it.out, it.box[0] - kh + 1, it.box[2] - kw + 1
                inp[i, :, :, o0 - r0:o1 - r0, u0 - c0:u1 - c0] = y[..., o0:o1, u0:u1]
            out = _conv(inp, weight)
            for i, it in enumerate(batch):
                (r0, r1, c0, c1), (h, w) = it.box, it.size
                xp[..., r0:r1, c0:c1].addcmul_(out[i, :, :, :h, :w], _take(multipliers[:, :, it.k], it.rows, it.cols))
        else:  # the slot: w_k * y over the box at (kh - 1, kw - 1), zeros around; gives the box plus the halo
            inp = slots.zeros((len(batch), B, C, bh + 2 * (kh - 1), bw + 2 * (kw - 1)))
            for i, it in enumerate(batch):
                (r0, r1, c0, c1), (h, w) = it.box, it.size
                _product_into(inp[i, :, :, kh - 1:kh - 1 + h, kw - 1:kw - 1 + w], y[..., r0:r1, c0:c1],
                              multipliers[:, :, it.k, r0:r1, c0:c1], reuse)
            out = _conv(inp, weight)
            for i, it in enumerate(batch):
                (r0, r1, c0, c1), (h, w) = it.box, it.size
                xp[..., r0:r1 + kh - 1, c0:c1 + kw - 1] += out[i, :, :, :h + kh - 1, :w + kw - 1]
    return _pad_adjoint(xp, image_hw, kh, kw, padding)


# ---------------------------------------------------------------------------------------------------------------


def _check(x, kernels, multipliers, padding: str, mask_first: bool, adjoint: bool) -> tuple[int, int]:
    """Validate; return the image size (H, W) of the forward op."""
    name = "y" if adjoint else "x"
    check_tensor(name, x, 4, "(B, C, H, W)")
    check_tensor("kernels", kernels, 5, "(B|1, C|1, K, kh, kw)")
    check_tensor("multipliers", multipliers, 5, "(B|1, C|1, K, H, W)")
    check_same((name, "kernels", "multipliers"), (x, kernels, multipliers))
    check_padding(padding)
    B, C = x.shape[:2]
    for arg, t in (("kernels", kernels), ("multipliers", multipliers)):
        check_broadcast(arg, t.shape[0], B, "batch")
        check_broadcast(arg, t.shape[1], C, "channel")
    if kernels.shape[2] != multipliers.shape[2]:
        raise ValueError(f"kernels and multipliers must have the same K (dim 2), got K={kernels.shape[2]} for "
                         f"kernels and K={multipliers.shape[2]} for multipliers")
    kh, kw = kernels.shape[-2:]
    if kh < 1 or kw < 1:
        raise ValueError(f"kernels must have a non-empty spatial size (kh, kw) >= (1, 1), got ({kh}, {kw})")
    H, W = x.shape[-2:]
    if adjoint and padding == "valid":
        H, W = H + kh - 1, W + kw - 1
    if kh > H or kw > W:
        raise ValueError(f"kernel size ({kh}, {kw}) must fit in the image, got image size ({H}, {W})")
    if padding == "valid" and not mask_first:
        expected, grid = (H - kh + 1, W - kw + 1), "the output grid (H - kh + 1, W - kw + 1)"
    else:
        expected, grid = (H, W), "the image grid (H, W)"
    if tuple(multipliers.shape[-2:]) != expected:
        raise ValueError(f"multipliers must live on {grid} = {expected} for padding={padding!r}, "
                         f"mask_first={mask_first}, got spatial size {tuple(multipliers.shape[-2:])}")
    return H, W


def _keyword_operands(positional: tuple, kernels, multipliers) -> tuple[Tensor, Tensor]:
    """``kernels`` and ``multipliers`` of a call that may still pass them by position (deprecated, with a
    FutureWarning: deepinv's ``product_convolution2d`` takes them in the other order, so a position is ambiguous).

    Raises:
        TypeError: more than two positional operands, one given twice, or one missing.
    """
    if positional:
        if len(positional) > 2:
            raise TypeError(f"product_conv takes x and the keywords kernels=, multipliers=, got {len(positional) + 1} "
                            f"positional arguments")
        warnings.warn("product_conv(x, kernels, multipliers) by position is deprecated: pass kernels= and "
                      "multipliers= by keyword (deepinv's product_convolution2d takes them in the other order, "
                      "(x, multipliers, kernels))", FutureWarning, stacklevel=3)
        keywords = (kernels, multipliers)
        for name, given in zip(("kernels", "multipliers"), keywords[:len(positional)]):
            if given is not None:
                raise TypeError(f"product_conv got {name} both by position and by keyword")
        kernels, multipliers = (*positional, *keywords[len(positional):])
    for name, value in (("kernels", kernels), ("multipliers", multipliers)):
        if value is None:
            raise TypeError(f"product_conv needs {name}= (a tensor), got none")
    return kernels, multipliers


def product_conv(x: Tensor, *positional: Tensor, kernels: Tensor | None = None, multipliers: Tensor | None = None,
                 mask_first: bool = True, padding: str | None = None, adjoint: bool = False) -> Tensor:
    r"""Product convolution, a sum of convolutions masked by multiplier maps: deepinv's ``product_convolution2d``.

    .. math:: y = \sum_{k=1}^K h_k \ast \operatorname{pad}(w_k \odot x) \quad (\text{mask_first}), \qquad
              y = \sum_{k=1}^K w_k \odot \bigl(h_k \ast \operatorname{pad}(x)\bigr) \quad (\text{otherwise})

    where :math:`\ast` is a convolution (the kernel is flipped) with deepinv's ``conv2d`` convention: ``pad`` adds
    ``(k-1)//2`` before and ``k//2`` after along each axis, so the output has the image's size and the kernel centre
    is at index ``k//2``; with ``padding="valid"`` nothing is padded and the output is
    ``(H - kh + 1, W - kw + 1)``. Same result as ``deepinv.physics.functional.product_convolution2d(x, multipliers,
    kernels, padding, mask_first=mask_first)`` (and ``SpaceVaryingBlur``), but each ``k`` is only convolved over the
    region its multiplier's non-zeros influence (boxes around the support, found at each call), so sparse
    multipliers (grids of tent maps, partitions of unity) cost a fraction of deepinv's full-image convolutions;
    dense multipliers cost about what deepinv's do. Pixels where every multiplier is 0 are never read (a NaN or an
    inf there does not propagate, unlike deepinv).

    Differentiable w.r.t. ``x``, ``kernels`` and ``multipliers`` (plain torch ops, autograd). The gradient w.r.t.
    the multipliers is dense (it does not vanish where they do): when they require a gradient, every ``k`` is
    convolved over the whole image, as deepinv does. The support is found on the host (data-dependent shapes), so
    the op is not traceable by ``torch.compile`` / ``torch.func`` transforms without graph breaks.

    Args:
        x: (B, C, H, W) image; with ``adjoint=True``, (B, C, Ho, Wo) on the output grid.
        *positional: deprecated. ``product_conv(x, kernels, multipliers)`` still works, with a FutureWarning; the
            operands are keyword-only, as deepinv's ``product_convolution2d(x, multipliers, kernels)`` takes them in
            the other order.
        kernels: (B|1, C|1, K, kh, kw) filters :math:`h_k`, with ``kh <= H`` and ``kw <= W``.
        multipliers: (B|1, C|1, K, H, W) maps :math:`w_k` on the image grid; with ``mask_first=False`` they live on
            the output grid, which is (B|1, C|1, K, H - kh + 1, W - kw + 1) for ``padding="valid"``.
        mask_first: multiply before (True, deepinv's default) or after (False) convolving.
        padding: the boundary (README, "Boundaries"): "valid", "zeros" (alias "constant"), "replicate" ("border"),
            "reflect" ("reflection") or "circular". Not given: "valid" (deepinv's default), with a FutureWarning,
            as the default becomes "reflect", every operator's default.
        adjoint: apply the exact adjoint (transpose) of the operator instead, as deepinv's
            ``product_convolution2d_adjoint`` does.
    Returns:
        (B, C, H, W); (B, C, H - kh + 1, W - kw + 1) for "valid". With ``adjoint=True``, the image
        (B, C, H, W), where for "valid" ``(H, W) = (Ho + kh - 1, Wo + kw - 1)``.
    Raises:
        TypeError: a non-tensor argument, a dtype that is not floating (float32 / float64 on the CPU), mixed dtypes,
            an operand missing or given twice.
        ValueError: wrong number of dimensions, mixed devices, unknown padding, b / c that do not broadcast to
            B / C, K differing between kernels and multipliers, multipliers of the wrong spatial size, a kernel
            larger than the image.
    """
    kernels, multipliers = _keyword_operands(positional, kernels, multipliers)
    padding = resolve_padding(padding, "product_conv", "valid")
    image_hw = _check(x, kernels, multipliers, padding, bool(mask_first), bool(adjoint))
    # without autograd, the batches share one input buffer and products are written in place
    reuse = not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, kernels, multipliers)))
    if adjoint:
        return _adjoint(x, kernels, multipliers, padding, bool(mask_first), image_hw, reuse)
    return _forward(x, torch.flip(kernels, (-2, -1)), multipliers, padding, bool(mask_first), reuse)
