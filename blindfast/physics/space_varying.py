"""Space-varying blurs: a bilinearly interpolated grid of PSFs (:func:`blindfast.ops.sv_conv`) and deepinv's
product convolution (:func:`blindfast.ops.product_conv`), with the interpolation made explicit
(:func:`psf_at`, :func:`tent_multipliers`)."""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import product_conv, sv_conv
from blindfast.ops._checks import check_tensor, resolve_padding
from blindfast.physics.base import LinearOperator

__all__ = ["SpaceVaryingBlur", "ProductConvolution", "psf_at", "tent_multipliers"]


def _tent(coordinate: Tensor, nodes: int, pixels: int) -> Tensor:
    """Tent weights of ``nodes`` grid nodes spread over ``pixels`` pixels (node ``i`` at pixel
    ``i (pixels - 1) / (nodes - 1)``), at each coordinate (pixels, may be fractional): (P,) -> (P, nodes).
    A single node weighs 1 everywhere."""
    if nodes == 1:
        return torch.ones(coordinate.shape[0], 1, dtype=coordinate.dtype, device=coordinate.device)
    # node spacing (pixels - 1) / (nodes - 1); nodes <= pixels, so pixels > 1 here
    in_node_units = coordinate * ((nodes - 1) / (pixels - 1))
    node_index = torch.arange(nodes, dtype=coordinate.dtype, device=coordinate.device)
    return (1 - (in_node_units[:, None] - node_index[None, :]).abs()).clamp_min(0)


def tent_multipliers(grid_hw: tuple[int, int], image_hw: tuple[int, int], *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    r"""Dense bilinear (tent) weight maps of a (Gy, Gx) PSF grid on an (H, W) pixel grid, as used by ``sv_conv``.

    .. math:: w_{(i, j)}(r, c) = \Lambda\!\Big(\frac{r (G_y - 1)}{H - 1} - i\Big)\,
              \Lambda\!\Big(\frac{c (G_x - 1)}{W - 1} - j\Big), \qquad \Lambda(t) = \max(0, 1 - |t|)

    (a 1-node axis weighs 1). The maps are a partition of unity; node ``(i, j)`` is map ``i * Gx + j``. With
    ``image_hw`` the output grid of ``sv_conv`` (the image size, or ``(H - kh + 1, W - kw + 1)`` for "valid"),
    ``ProductConvolution(mask_first=False)`` with these multipliers and the grid's kernels reshaped to
    (B|1, C|1, Gy * Gx, kh, kw) is the same operator as ``SpaceVaryingBlur``.

    Args:
        grid_hw: (Gy, Gx) grid nodes, with Gy <= H and Gx <= W.
        image_hw: (H, W) pixels.
        dtype: of the result, a floating dtype; None uses torch's default dtype.
        device: of the result; None uses torch's default device.
    Returns:
        (Gy * Gx, H, W)
    Raises:
        TypeError: sizes that are not pairs of integers, a dtype that is not floating (weights are fractions).
        ValueError: sizes below 1, or more grid nodes than pixels along an axis.
    """
    Gy, Gx = _validate.int_pair("grid_hw", grid_hw, "(Gy, Gx)")
    H, W = _validate.int_pair("image_hw", image_hw, "(H, W)")
    if Gy > H or Gx > W:
        raise ValueError(f"grid_hw must not exceed image_hw (at most one node per pixel), got grid {(Gy, Gx)} "
                         f"on image {(H, W)}")
    dtype = torch.get_default_dtype() if dtype is None else _validate.floating_dtype("dtype", dtype)
    rows = _tent(torch.arange(H, dtype=dtype, device=device), Gy, H)  # (H, Gy)
    cols = _tent(torch.arange(W, dtype=dtype, device=device), Gx, W)  # (W, Gx)
    return torch.einsum("ri,cj->ijrc", rows, cols).reshape(Gy * Gx, H, W)


def psf_at(psf_grid: Tensor, positions: Tensor, image_hw: tuple[int, int]) -> Tensor:
    r"""The PSF that ``sv_conv`` applies at given pixels: the grid's kernels blended with the tent weights there.

    .. math:: K_p = \sum_{i, j} \Lambda\!\Big(\frac{r_p (G_y - 1)}{H - 1} - i\Big)\,
              \Lambda\!\Big(\frac{c_p (G_x - 1)}{W - 1} - j\Big)\, h_{ij}

    so that ``sv_conv(x, psf_grid)[b, c, r, s]`` is the convolution of ``x`` with ``K_p`` evaluated at pixel
    ``p = (r, s)`` (``sv_conv``'s formula with ``K_{ij} = K_p``). Positions may be fractional.

    The layout ``(B|1, C|1, P, kh, kw)`` keeps the grid's batch and channel broadcasting and puts the positions
    where :func:`blindfast.ops.product_conv` takes its K kernels, so the result can be used as ``kernels`` there.

    Args:
        psf_grid: (B|1, C|1, Gy, Gx, kh, kw) kernels at the grid nodes.
        positions: (P, 2) pixel coordinates (row, col), within [0, H - 1] x [0, W - 1]; any real dtype.
        image_hw: (H, W) the pixel grid the nodes are spread over: ``sv_conv``'s output grid, i.e. the image size,
            or (H - kh + 1, W - kw + 1) for "valid".
    Returns:
        (B|1, C|1, P, kh, kw) in ``psf_grid``'s dtype and device; differentiable w.r.t. ``psf_grid``.
    Raises:
        TypeError: non-tensor arguments, an unsupported dtype, complex positions, image_hw not two integers.
        ValueError: wrong shapes, an empty grid or kernel, image_hw below 1, more grid nodes than pixels, positions
            outside the image or not finite.
    """
    check_tensor("psf_grid", psf_grid, 6, "(B|1, C|1, Gy, Gx, kh, kw)")
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor of shape (P, 2), got {type(positions).__name__}")
    if positions.dim() != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (P, 2) as (row, col), got {tuple(positions.shape)}")
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be real (row, col) coordinates, got dtype {positions.dtype}")
    H, W = _validate.int_pair("image_hw", image_hw, "(H, W)")
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    if min(Gy, Gx, kh, kw) < 1:
        raise ValueError(f"psf_grid must have a non-empty grid and kernels, got shape {tuple(psf_grid.shape)}")
    if Gy > H or Gx > W:
        raise ValueError(f"psf grid ({Gy}, {Gx}) must not exceed image_hw {(H, W)}: at most one node per pixel")
    coords = positions.to(device=psf_grid.device, dtype=psf_grid.dtype)
    # a NaN compares False with every bound, so it is caught as not finite
    outside = ~coords.isfinite().all(1) | (coords < 0).any(1) | (coords[:, 0] > H - 1) | (coords[:, 1] > W - 1)
    if bool(outside.any()):
        first = coords[outside.nonzero()[0, 0]].tolist()
        raise ValueError(f"positions must lie in [0, {H - 1}] x [0, {W - 1}] (the image {(H, W)}), got "
                         f"{int(outside.sum())} outside or not finite, e.g. {first}")
    row_weights = _tent(coords[:, 0], Gy, H)  # (P, Gy)
    col_weights = _tent(coords[:, 1], Gx, W)  # (P, Gx)
    return torch.einsum("pi,pj,bcijkl->bcpkl", row_weights, col_weights, psf_grid)


class SpaceVaryingBlur(LinearOperator):
    r"""Blur by a bilinearly interpolated grid of PSFs, :func:`blindfast.ops.sv_conv`:

    .. math:: y_{rs} = \sum_{a, e} K_{rs}[a, e]\, \operatorname{pad}(x)[r + k_h - 1 - a,\ s + k_w - 1 - e],
              \qquad K_{rs} = \sum_{n} w_n(r, s)\, h_n

    with tent weights ``w_n`` (:func:`tent_multipliers`) on the output grid and deepinv's ``conv2d`` padding
    (``(k-1)//2`` before, ``k//2`` after). Equals deepinv's ``SpaceVaryingBlur(mask_first=False)`` with the grid's
    kernels and the tent multipliers. Differentiable w.r.t. ``x`` and ``psf_grid``.

    Args:
        padding: the boundary (README, "Boundaries"): "zeros" (alias "constant"), "valid", "replicate" ("border"),
            "reflect" ("reflection") or "circular". Not given: "zeros", with a FutureWarning, as the default
            becomes "reflect", every operator's default.
    Raises:
        ValueError: an unknown padding.
    """

    params = ("psf_grid",)

    def __init__(self, padding: str | None = None):
        self.padding = resolve_padding(padding, "SpaceVaryingBlur", "zeros")

    def __repr__(self) -> str:
        return f"SpaceVaryingBlur(padding={self.padding!r})"

    def A(self, x: Tensor, *, psf_grid: Tensor) -> Tensor:
        """Blur ``x``.

        Args:
            x: (B, C, H, W)
            psf_grid: (B|1, C|1, Gy, Gx, kh, kw), kh <= H, kw <= W, and at most one node per output pixel.
        Returns:
            (B, C, H, W); (B, C, H - kh + 1, W - kw + 1) for "valid".
        Raises:
            TypeError, ValueError: as :func:`blindfast.ops.sv_conv`.
        """
        return sv_conv(x, psf_grid, padding=self.padding)

    def A_adjoint(self, y: Tensor, *, psf_grid: Tensor) -> Tensor:
        """Exact transpose of :meth:`A`.

        Args:
            y: (B, C, Ho, Wo) on A's output grid.
            psf_grid: (B|1, C|1, Gy, Gx, kh, kw)
        Returns:
            (B, C, H, W): (Ho, Wo), or (Ho + kh - 1, Wo + kw - 1) for "valid".
        Raises:
            TypeError, ValueError: as :func:`blindfast.ops.sv_conv`.
        """
        return sv_conv(y, psf_grid, padding=self.padding, adjoint=True)


class ProductConvolution(LinearOperator):
    r"""Product convolution, deepinv's ``SpaceVaryingBlur`` / ``product_convolution2d``
    (:func:`blindfast.ops.product_conv`):

    .. math:: y = \sum_k h_k \ast \operatorname{pad}(w_k \odot x) \quad (\text{mask_first}), \qquad
              y = \sum_k w_k \odot \big(h_k \ast \operatorname{pad}(x)\big) \quad (\text{otherwise})

    Args:
        padding: the boundary (README, "Boundaries"): "valid", "zeros" (alias "constant"), "replicate" ("border"),
            "reflect" ("reflection") or "circular". Not given: "valid" (deepinv's default), with a FutureWarning,
            as the default becomes "reflect", every operator's default.
        mask_first: multiply by the multipliers before (True, deepinv's default) or after convolving.
    Raises:
        ValueError: an unknown padding.
        TypeError: ``mask_first`` not a bool.
    """

    params = ("kernels", "multipliers")

    def __init__(self, padding: str | None = None, mask_first: bool = True):
        self.padding = resolve_padding(padding, "ProductConvolution", "valid")
        self.mask_first = _validate.boolean("mask_first", mask_first)

    def __repr__(self) -> str:
        return f"ProductConvolution(padding={self.padding!r}, mask_first={self.mask_first})"

    def A(self, x: Tensor, *, kernels: Tensor, multipliers: Tensor) -> Tensor:
        """Apply the operator.

        Args:
            x: (B, C, H, W)
            kernels: (B|1, C|1, K, kh, kw)
            multipliers: (B|1, C|1, K, H, W); with ``mask_first=False`` on the output grid, which is
                (B|1, C|1, K, H - kh + 1, W - kw + 1) for "valid".
        Returns:
            (B, C, H, W); (B, C, H - kh + 1, W - kw + 1) for "valid".
        Raises:
            TypeError, ValueError: as :func:`blindfast.ops.product_conv`.
        """
        return product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=self.mask_first,
                            padding=self.padding)

    def A_adjoint(self, y: Tensor, *, kernels: Tensor, multipliers: Tensor) -> Tensor:
        """Exact transpose of :meth:`A`.

        Args:
            y: (B, C, Ho, Wo) on A's output grid.
            kernels: (B|1, C|1, K, kh, kw)
            multipliers: as in :meth:`A`.
        Returns:
            (B, C, H, W): (Ho, Wo), or (Ho + kh - 1, Wo + kw - 1) for "valid".
        Raises:
            TypeError, ValueError: as :func:`blindfast.ops.product_conv`.
        """
        return product_conv(y, kernels=kernels, multipliers=multipliers, mask_first=self.mask_first,
                            padding=self.padding, adjoint=True)
