"""A synthetic lens: a smooth, field-varying grid of PSFs with astigmatism, coma and lateral chromatic aberration."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.physics.kernels import flush_subnormals

__all__ = ["lens_psf_grid"]


def lens_psf_grid(grid: tuple[int, int] = (8, 8), size: int = 31, channels: int = 3, *,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                  sigma0: float = 0.8, field_blur: float = 1.6, astigmatism: float = 1.2, coma: float = 3.0,
                  lateral_ca: float = 1.5, variation: float = 0.1, decenter: float = 0.05) -> Tensor:
    r"""PSFs of a synthetic lens at a grid of field points, for :func:`blindfast.ops.sv_conv`.

    Node ``(i, j)`` sits at ``p = (u_j, v_i)``, with ``u, v`` evenly spaced in ``[-1, 1]`` (the corner nodes on
    the corner pixels, as in ``sv_conv``). Its field vector ``f = (p - o) / \sqrt 2`` from the optical centre
    ``o`` has radius ``r = |f|`` (about 1 at the corners) and radial direction ``e_r = f / r``, tangential
    ``e_t``. Channel ``c``'s kernel, at pixel offset ``d`` (pixels) from the window centre ``size // 2``, is

    .. math:: h_c(d) \propto \exp\!\Big(-\frac{z_r^2 + z_t^2}{2}\Big)\,\Phi(\alpha z_r), \qquad
              z_r = \frac{d \cdot e_r - s_c\, \kappa\, r}{\sigma_r}, \quad z_t = \frac{d \cdot e_t}{\sigma_t},

    .. math:: \sigma_r = \sigma_0 + \beta r^2, \quad \sigma_t = \sigma_r + \gamma r^2, \quad \alpha = \eta r,

    evaluated at pixel centres (sub-pixel shifts are exact, not rounded), then normalised to sum 1. ``\Phi`` is the
    normal CDF: a skew that grows a coma tail pointing outward. ``s_c`` runs linearly from +1 (first channel, R)
    to -1 (last, B), so R is shifted outward, B inward and the middle channel (G) not at all; one channel: 0.
    Each lens draws its own ``\beta, \gamma, \eta, \kappa`` (scaled by ``1 + variation * U(-1, 1)``) and its
    optical centre ``o`` (``decenter * U(-1, 1)`` per axis) from ``generator``.

    Args:
        grid: (Gy, Gx) number of field points.
        size: kernel window side (odd keeps the window centre on a pixel).
        channels: number of colour channels C.
        generator: seeds the per-lens variations; ``None`` uses torch's global generator.
        dtype: dtype of the result (computed in float64).
        sigma0: PSF standard deviation on the optical axis, pixels.
        field_blur: beta, growth of both standard deviations at r = 1 (field curvature), pixels.
        astigmatism: gamma, extra tangential standard deviation at r = 1, pixels; negative elongates radially.
        coma: eta, skewness of the outward coma tail at r = 1 (0 for a symmetric PSF).
        lateral_ca: kappa, radial shift of the first (R) channel at r = 1, pixels; the last (B) gets minus that.
        variation: relative spread of the per-lens draws of beta, gamma, eta, kappa.
        decenter: largest offset of the optical centre from the image centre, in units of the half image.
    Returns:
        (1, C, Gy, Gx, size, size) non-negative kernels, each summing to 1, without subnormal taps
        (:func:`~blindfast.physics.kernels.flush_subnormals`).
    Raises:
        TypeError: grid not two integers; size or channels not an integer; a width, aberration or spread not a
            real number; a dtype that is not floating; a generator that is not a torch.Generator.
        ValueError: grid, size or channels below 1; sigma0 not > 0; field_blur or decenter negative; variation
            outside [0, 1]; a number that is not finite; a kernel (3 standard deviations around its shifted centre)
            that does not fit in the window.
    """
    grid = _validate.int_pair("grid", grid, "(Gy, Gx)")
    size = _validate.positive_int("size", size)
    channels = _validate.positive_int("channels", channels)
    _validate.generator("generator", generator)
    _validate.floating_dtype("dtype", dtype)
    sigma0 = _validate.real("sigma0", sigma0, 0, low_open=True)
    field_blur = _validate.real("field_blur", field_blur, 0)
    astigmatism, coma, lateral_ca = (_validate.real(name, value) for name, value in (
        ("astigmatism", astigmatism), ("coma", coma), ("lateral_ca", lateral_ca)))
    variation = _validate.real("variation", variation, 0, 1)  # above 1 a draw could flip an aberration's sign
    decenter = _validate.real("decenter", decenter, 0)
    f64 = torch.float64
    draw = 1 + variation * (2 * torch.rand(4, generator=generator, dtype=f64) - 1)
    beta, gamma, eta, kappa = (draw * torch.tensor([field_blur, astigmatism, coma, lateral_ca], dtype=f64)).tolist()
    centre = decenter * (2 * torch.rand(2, generator=generator, dtype=f64) - 1)

    Gy, Gx = grid
    v, u = (torch.linspace(-1, 1, n, dtype=f64) if n > 1 else torch.zeros(1, dtype=f64) for n in (Gy, Gx))
    fx = (u[None, :] - centre[0]) / math.sqrt(2)                   # (1, Gx)
    fy = (v[:, None] - centre[1]) / math.sqrt(2)                   # (Gy, 1)
    r = torch.hypot(fx, fy)                                        # (Gy, Gx)
    angle = torch.atan2(fy, fx)                                    # on the axis any direction will do: r = 0
    er_x, er_y = torch.cos(angle), torch.sin(angle)

    sigma_r = sigma0 + beta * r**2
    sigma_t = sigma_r + gamma * r**2
    if (sigma_t <= 0).any():
        raise ValueError(f"astigmatism={astigmatism} makes the tangential width non-positive; use a value > "
                         f"-(sigma0 + field_blur)")
    shift_scale = torch.linspace(1, -1, channels, dtype=f64) if channels > 1 else torch.zeros(1, dtype=f64)
    shift = shift_scale[:, None, None] * kappa * r                 # (C, Gy, Gx) radial shift, pixels
    reach = (shift.abs() + 3 * torch.maximum(sigma_r, sigma_t)).max().item()
    if reach > size // 2:
        raise ValueError(f"the PSFs reach {reach:.1f} px from the window centre but size={size} holds only "
                         f"{size // 2}: use size >= {2 * math.ceil(reach) + 1} or smaller widths")

    d = torch.arange(size, dtype=f64) - size // 2
    dy, dx = d[:, None], d[None, :]                                # (size, 1), (1, size)
    # (C, Gy, Gx, 1, 1) parameters against (size, size) offsets
    er_x, er_y, sigma_r, sigma_t, r = (t[None, :, :, None, None] for t in (er_x, er_y, sigma_r, sigma_t, r))
    z_r = (dx * er_x + dy * er_y - shift[..., None, None]) / sigma_r
    z_t = (dy * er_x - dx * er_y) / sigma_t
    skew = 0.5 * torch.erfc(-eta * r * z_r / math.sqrt(2))        # Phi(alpha z_r)
    psf = torch.exp(-0.5 * (z_r**2 + z_t**2)) * skew
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    return flush_subnormals(psf.unsqueeze(0), dtype)
