"""A lens' whole space-varying, chromatic PSF grid from a few dozen smooth, physically meaningful parameters.

A free :class:`~blindfast.physics.parameterisations.PSFGrid` has C x Gy x Gx x k x k taps (18,432 for an 8x8 grid of
13x13 RGB kernels); what a lens varies across its field is far less: the blur width grows with field height (field
curvature), tangential and radial widths part (astigmatism), a tail grows outward (coma), each colour is shifted
radially (lateral colour) and focused differently (longitudinal colour). :class:`LensField` makes those the
parameters, as low-order functions of the field radius, and renders the grid from them differentiably, so a blind
method (DDM, Meanti et al. 2025) can fit the lens first and let a free grid refine from it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from blindfast import _validate

__all__ = ["LensField"]

# pixels: a narrower Gaussian is under-sampled at pixel centres (its taps stop being a smooth function of its
# parameters), and a width that an optimiser pushes through 0 would flip the sign of z
_MIN_WIDTH = 0.25


def _channel_ramp(channels: int, dtype: torch.dtype) -> Tensor:
    """+1 for the first channel (R) to -1 for the last (B), 0 for a single channel: the sign of lateral colour."""
    return torch.linspace(1, -1, channels, dtype=dtype) if channels > 1 else torch.zeros(1, dtype=dtype)


class LensField(nn.Module):
    r"""A PSF grid rendered from a parametric lens: radial widths, astigmatism, coma and colour as polynomials in the
    field radius.

    Node ``(i, j)`` sits at ``p = (u_j, v_i)`` with ``u, v`` evenly spaced in ``[-1, 1]`` (the corner nodes on the
    corner pixels, as in :func:`blindfast.ops.sv_conv`); its field vector from the optical centre ``o`` (learnt) is
    ``f = (p - o) / \sqrt 2``, with radius ``r = |f|`` (about 1 at the corners), radial direction ``e_r`` and
    tangential ``e_t``. Channel ``c``'s kernel at pixel offset ``d`` from the window centre is

    .. math:: h_c(d) \propto \exp\!\Big(-\frac{z_r^2 + z_t^2}{2}\Big)\,\Phi(\alpha z_r), \qquad
              z_r = \frac{d \cdot e_r - s_c}{\sigma_{r,c}}, \quad z_t = \frac{d \cdot e_t}{\sigma_{t,c}},

    .. math:: \sigma_{r,c} = a_{0c} + a_{1c} r^2 + a_{2c} r^4, \quad
              \sigma_{t,c} = \sigma_{r,c} + g_1 r^2 + g_2 r^4, \quad
              \alpha = \eta_1 r + \eta_3 r^3, \quad s_c = \kappa_{1c} r + \kappa_{3c} r^3

    (widths in pixels, each clamped to at least 0.25): per-channel widths (longitudinal colour, field curvature),
    an astigmatic split ``g``, a coma skew ``eta`` and per-channel radial shifts ``kappa`` (lateral colour), 5C + 6
    numbers in all (21 for RGB). :func:`blindfast.physics.lens.lens_psf_grid`'s lenses are the special case
    ``a_2 = g_2 = eta_3 = kappa_3 = 0`` with the same widths in every channel and ``kappa_{1c} = ramp_c kappa``
    (+1 for R to -1 for B): :meth:`set_lens` puts one in exactly.

    Args:
        grid: (Gy, Gx) field points.
        size: the kernel window side k (odd keeps the window centre on a pixel).
        channels: C.
        init_sigma: the width every node starts with (an isotropic Gaussian, no shift, centred optics), pixels.
        dtype: the parameters' dtype.
    """

    def __init__(self, grid: tuple[int, int], size: int, channels: int = 3, init_sigma: float = 1.0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.grid = _validate.int_pair("grid", grid, "(Gy, Gx)")
        self.size = _validate.positive_int("size", size)
        self.channels = _validate.positive_int("channels", channels)
        init_sigma = _validate.real("init_sigma", init_sigma, _MIN_WIDTH, low_open=True)
        _validate.floating_dtype("dtype", dtype)
        channels = self.channels
        zeros = lambda *shape: nn.Parameter(torch.zeros(*shape, dtype=dtype))  # noqa: E731
        self.width = nn.Parameter(torch.tensor([[init_sigma, 0.0, 0.0]] * channels, dtype=dtype))  # (C, 3): a0..a2
        self.astigmatism = zeros(2)          # g1, g2
        self.coma = zeros(2)                 # eta1, eta3
        self.lateral_colour = zeros(channels, 2)  # kappa1, kappa3 per channel
        self.centre = zeros(2)               # optical centre o = (x, y), in units of the half image

    def field(self) -> tuple[Tensor, Tensor, Tensor]:
        """The field radius ``r`` and the radial direction ``(e_x, e_y)`` at every node, each (Gy, Gx)."""
        gy, gx = self.grid
        dtype = self.centre.dtype
        v, u = (torch.linspace(-1, 1, n, dtype=dtype) if n > 1 else torch.zeros(1, dtype=dtype) for n in (gy, gx))
        fx = (u[None, :] - self.centre[0]) / math.sqrt(2)
        fy = (v[:, None] - self.centre[1]) / math.sqrt(2)
        squared = fx**2 + fy**2
        # on the axis (r = 0) every term that needs a direction vanishes: any unit vector will do. sqrt's derivative
        # is infinite at 0 (and 0 * inf = NaN would reach the centre's gradient), so r is taken of a safe value
        # there and set to 0 after: the double-where that keeps the gradient finite (a 1x1 or odd grid has a node
        # on the axis whenever the centre is)
        on_axis = squared == 0
        safe_r = torch.sqrt(torch.where(on_axis, torch.ones_like(squared), squared))
        r = torch.where(on_axis, torch.zeros_like(squared), safe_r)
        e_x = torch.where(on_axis, torch.ones_like(r), fx / safe_r)
        e_y = torch.where(on_axis, torch.zeros_like(r), fy / safe_r)
        return r, e_x, e_y

    def forward(self) -> Tensor:
        """The PSF grid.

        Returns:
            (1, C, Gy, Gx, k, k) non-negative kernels, each summing to 1: ``sv_conv(x, module())``.
        """
        r, e_x, e_y = self.field()                                      # (Gy, Gx)
        powers = torch.stack([torch.ones_like(r), r**2, r**4])          # (3, Gy, Gx)
        radial_poly = torch.einsum("cp,pyx->cyx", self.width, powers)   # (C, Gy, Gx)
        split = self.astigmatism[0] * powers[1] + self.astigmatism[1] * powers[2]
        sigma_r = radial_poly.clamp_min(_MIN_WIDTH)
        sigma_t = (radial_poly + split).clamp_min(_MIN_WIDTH)
        skew = self.coma[0] * r + self.coma[1] * r**3                   # (Gy, Gx)
        shift = self.lateral_colour[:, :1, None] * r + self.lateral_colour[:, 1:, None] * r**3  # (C, Gy, Gx)

        d = torch.arange(self.size, dtype=r.dtype) - self.size // 2
        dy, dx = d[:, None], d[None, :]                                 # (k, 1), (1, k)
        at_node = lambda t: t[..., None, None]  # noqa: E731  (..., Gy, Gx) -> (..., Gy, Gx, 1, 1)
        z_r = (dx * at_node(e_x) + dy * at_node(e_y) - at_node(shift)) / at_node(sigma_r)
        z_t = (dy * at_node(e_x) - dx * at_node(e_y)) / at_node(sigma_t)
        psf = torch.exp(-0.5 * (z_r**2 + z_t**2)) * 0.5 * torch.erfc(-at_node(skew) * z_r / math.sqrt(2))
        return (psf / psf.sum(dim=(-2, -1), keepdim=True)).unsqueeze(0)

    @torch.no_grad()
    def set_lens(self, *, sigma0: float, field_blur: float, astigmatism: float, coma: float, lateral_ca: float,
                 centre: tuple[float, float] = (0.0, 0.0)) -> LensField:
        """Sets the parameters to one of :func:`~blindfast.physics.lens.lens_psf_grid`'s lenses (its arguments, the
        per-lens draws applied, and its optical centre): widths ``sigma0 + field_blur r^2`` in every channel,
        ``astigmatism r^2`` more tangentially, coma ``coma r``, lateral colour ``ramp_c lateral_ca r``. Returns self.
        """
        self.width.copy_(torch.tensor([sigma0, field_blur, 0.0], dtype=self.width.dtype).expand_as(self.width))
        self.astigmatism.copy_(torch.tensor([astigmatism, 0.0], dtype=self.astigmatism.dtype))
        self.coma.copy_(torch.tensor([coma, 0.0], dtype=self.coma.dtype))
        ramp = _channel_ramp(self.channels, torch.float64) * lateral_ca
        self.lateral_colour.copy_(torch.stack([ramp, torch.zeros_like(ramp)], dim=1).to(self.lateral_colour.dtype))
        self.centre.copy_(torch.tensor(centre, dtype=self.centre.dtype))
        return self

    def extra_repr(self) -> str:
        return f"grid={self.grid}, size={self.size}, channels={self.channels}"
