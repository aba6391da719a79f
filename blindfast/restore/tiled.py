r"""Any solver on overlapping tiles of a large photo, blended (:func:`blindfast.data.apply_tiled`), in memory that
depends on the tile, not the image.

A PSF grid stays tied to absolute image positions: each tile gets a grid of its own whose kernels are the full
field's kernels (:func:`blindfast.physics.psf_at`) at nodes spread over the tile, at least twice as dense as the
full grid's and at most :data:`TILE_NODE_SPACING` pixels apart, so the tile sees its own part of the field. The
full field is bilinear between its nodes; the tile's grid re-interpolates it between samples, exact wherever no
node of the full grid falls between two of the tile's, and off by at most the field's kink times the spacing
elsewhere (4x4 lens grid, 13 px kernels on 128^2, a 64 px tile: 4.5e-3 with 16 px spacing, 3.5e-3 with 8 px,
1.6e-3 with 4 px, 0 with 1 px, where the blurred values are ~0.5). Each tile
is solved with the operator's own padding at its borders, where it is wrong; the overlap (by default the kernel
size) carries the blend past them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from blindfast.data import apply_tiled, tile_slices
from blindfast.physics import Blur, LinearOperator, SpaceVaryingBlur, psf_at
from blindfast.restore.validation import check_blur_params, check_measurement

__all__ = ["restore_tiled", "tile_params"]

Solver = Callable[[Tensor, dict], Tensor]

# Node spacing of a tile's grid, pixels. sv_conv's cost grows with the node count (512^2 RGB, 13x13, forward +
# adjoint: 12 ms with an 8x8 grid, 34 ms with 65x65 nodes, i.e. 8 px apart), while the field's error falls slowly
# with the spacing (module docstring): 32 px gives a 512 px tile 17x17 nodes.
TILE_NODE_SPACING = 32


def _tile_nodes(start: int, length: int, nodes: int, pixels: int) -> Tensor:
    """Positions of a tile's nodes on one axis: at least twice the full grid's density and one per
    :data:`TILE_NODE_SPACING` pixels, at least 2, at most one per pixel (1 node when the full grid has 1)."""
    if nodes == 1:
        return torch.tensor([start + (length - 1) / 2], dtype=torch.float64)
    spacing = (pixels - 1) / (nodes - 1)
    count = min(length, max(2, 2 * math.ceil((length - 1) / spacing) + 1,
                            math.ceil((length - 1) / TILE_NODE_SPACING) + 1))
    return start + torch.linspace(0, length - 1, count, dtype=torch.float64)


def tile_params(op: LinearOperator, params: dict, image_hw: tuple[int, int], rows: slice, cols: slice) -> dict:
    """The operator's parameters for the tile ``(rows, cols)`` of an image of ``image_hw``.

    Args:
        op: a :class:`Blur` (parameters unchanged) or :class:`SpaceVaryingBlur` (a grid for the tile).
        params: the full image's parameters.
        image_hw: (H, W) of the full image.
        rows, cols: the tile's slices.
    Returns:
        the tile's parameter dict.
    """
    if isinstance(op, Blur):
        return params
    psf_grid = params["psf_grid"]
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    node_rows = _tile_nodes(rows.start, rows.stop - rows.start, Gy, image_hw[0])
    node_cols = _tile_nodes(cols.start, cols.stop - cols.start, Gx, image_hw[1])
    positions = torch.cartesian_prod(node_rows, node_cols)               # (gy * gx, 2), raster order
    kernels = psf_at(psf_grid, positions, image_hw)                       # (B|1, C|1, gy * gx, kh, kw)
    return {"psf_grid": kernels.reshape(*kernels.shape[:2], len(node_rows), len(node_cols), kh, kw)}


def restore_tiled(solve: Solver, y: Tensor, op: LinearOperator, params: dict, *, tile: int,
                  overlap: int | None = None) -> Tensor:
    """``solve(y_tile, tile_params)`` on overlapping tiles of ``y``, blended.

    Args:
        solve: restores one (B, C, th, tw) tile given its parameters, e.g.
            ``lambda y, p: cg_tikhonov(y, op, p, lam=0.01)``.
        y: (B, C, H, W) the measurement.
        op: a :class:`Blur` or :class:`SpaceVaryingBlur` whose padding keeps the size (not "valid").
        params: its parameters for the full image.
        tile: tile side, at least the kernel size.
        overlap: the tiles' overlap; default the kernel size (at most tile // 2).
    Returns:
        (B, C, H, W) the blended restoration.
    Raises:
        TypeError: another operator.
        ValueError: "valid" padding, a tile smaller than the kernel, bad parameters.
    """
    if not isinstance(op, (Blur, SpaceVaryingBlur)):
        raise TypeError(f"restore_tiled needs a Blur or SpaceVaryingBlur, got {type(op).__name__}")
    if op.padding == "valid":
        raise ValueError("restore_tiled needs a padding that keeps the image size, got 'valid'")
    check_measurement(y)
    check_blur_params(op, params, y)
    kernel = params["kernel"] if isinstance(op, Blur) else params["psf_grid"]
    size = max(kernel.shape[-2:])
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < size:
        raise ValueError(f"tile must be an int at least the kernel size {size}, got {tile!r}")
    overlap = min(size, tile // 2) if overlap is None else overlap
    image_hw = tuple(y.shape[-2:])
    slices = iter(tile_slices(image_hw, tile, overlap))

    def solve_tile(y_tile: Tensor) -> Tensor:
        rows, cols = next(slices)    # apply_tiled visits tile_slices' tiles in this order
        if y_tile.shape[-2:] != (rows.stop - rows.start, cols.stop - cols.start):
            raise RuntimeError("apply_tiled and tile_slices disagree on the tiles")
        return solve(y_tile, tile_params(op, params, image_hw, rows, cols))

    return apply_tiled(solve_tile, y, tile, overlap)
