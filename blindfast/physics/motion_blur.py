r"""Rotation and zoom blur: the image averaged over a path of warps, CL-DPS's non-linear (unknown-operator) blurs.

A camera that rotates about, or zooms toward, a point while the shutter is open records the weighted average of
the scene warped along that path (CL-DPS, Ye et al., ICLR 2026, "rotational and zoom deblurring"):

.. math:: y = \sum_{s=0}^{S-1} w_s\, W_{p_s} x, \qquad \sum_s w_s = 1,

where :math:`W_p` resamples :math:`x` bilinearly at the points a warp with parameter :math:`p` sends the output
pixels to. The blur is linear in :math:`x` but not in its parameters (angle, zoom, centre), which is what makes the
blind problem non-linear. All :math:`S` warps are sampled in a single ``grid_sample`` call, and the result is
differentiable w.r.t. :math:`x`, the centre, the angle or zoom, and the weights.

Conventions shared by both operators:

- ``centre`` is in normalised coordinates ``(x, y)`` of ``grid_sample`` with ``align_corners=False``: ``(-1, -1)``
  is the outer corner of the top-left pixel, ``(1, 1)`` that of the bottom-right one, ``(0, 0)`` the image centre.
  Pixel ``(i, j)`` (row, column) has its centre at ``((2 j + 1) / W - 1, (2 i + 1) / H - 1)``. Normalised
  coordinates make a parameter mean the same on every image size.
- Warps act on pixel distances, so a rotation stays a rotation on non-square images.
- The path fractions are :math:`t_s = s / (S - 1)` (the exposure runs from the unwarped image at :math:`t = 0` to
  the full warp at :math:`t = 1`); a single sample (:math:`S = 1`) is the full warp, :math:`t_0 = 1`.
- ``weights`` (B|1, S) are non-negative dwell times along the path, normalised here to sum 1; ``None`` is uniform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast import _validate
from blindfast.ops._checks import resolve_padding
from blindfast.physics.base import LinearOperator

__all__ = ["RotationBlur", "ZoomBlur", "rotation_params", "zoom_params"]

# The boundaries grid_sample reads as the vocabulary means them; "reflect" and "circular" are made exact by folding
# the sample points into the image first (_fold_into_image), then sampled with "border".
_GRID_SAMPLE_MODE = {"zeros": "zeros", "replicate": "border", "reflect": "border", "circular": "border"}
_REFUSED = {"valid": "a warp keeps the image size, so there is no smaller 'valid' output grid"}


def _check_image(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def _per_item(name: str, value: Tensor, batch: int, like: Tensor) -> Tensor:
    """A per-item scalar parameter of shape (B,), (1,) or () as a finite (B|1,) tensor in x's dtype and device."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({batch},), (1,) or (), got {type(value).__name__}")
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, batch)):
        raise ValueError(f"{name} must have shape ({batch},), (1,) or (), got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite, got {value.detach().cpu().tolist()}")
    return value.reshape(-1).to(dtype=like.dtype, device=like.device)


def _centre(centre: Tensor | None, batch: int, like: Tensor) -> Tensor:
    """The warp centre as a finite (B|1, 2) tensor; ``None`` is the image centre (0, 0)."""
    if centre is None:
        return like.new_zeros(1, 2)
    if not isinstance(centre, Tensor):
        raise TypeError(f"centre must be a torch.Tensor of shape ({batch}, 2) or (1, 2), "
                        f"got {type(centre).__name__}")
    if centre.ndim != 2 or centre.shape[0] not in (1, batch) or centre.shape[1] != 2:
        raise ValueError(f"centre must be (B|1, 2) = ({batch}|1, 2), got shape {tuple(centre.shape)}")
    if not torch.isfinite(centre).all():
        raise ValueError(f"centre must be finite, got {centre.detach().cpu().tolist()}")
    return centre.to(dtype=like.dtype, device=like.device)


def _normalised_weights(weights: Tensor | None, batch: int, samples: int, like: Tensor) -> Tensor:
    """Trajectory weights as a (B|1, S) tensor that sums to 1 along S; ``None`` is uniform."""
    if weights is None:
        return like.new_full((1, samples), 1.0 / samples)
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor of shape ({batch}, {samples}) or (1, {samples}), "
                        f"got {type(weights).__name__}")
    if weights.ndim != 2 or weights.shape[0] not in (1, batch) or weights.shape[1] != samples:
        raise ValueError(f"weights must be (B|1, samples) = ({batch}|1, {samples}), "
                         f"got shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {weights.detach().cpu().tolist()}")
    total = weights.sum(dim=1, keepdim=True)
    if (total <= 0).any():
        raise ValueError(f"each row of weights must have a positive sum, got row sums "
                         f"{total.reshape(-1).detach().cpu().tolist()}")
    return (weights / total).to(dtype=like.dtype, device=like.device)


def _path_fractions(samples: int, like: Tensor) -> Tensor:
    """t_s = s / (S - 1) for s = 0..S-1; a lone sample is the end of the path, t = 1. Shape (S,)."""
    if samples == 1:
        return like.new_ones(1)
    return torch.linspace(0, 1, samples, dtype=like.dtype, device=like.device)


def _fold_into_image(x: Tensor, grid: Tensor, padding: str) -> tuple[Tensor, Tensor]:
    r"""Sample points moved into the image so that bilinear sampling with ``"border"`` reads the extension of ``x``
    that ``padding`` names, exactly.

    Along an axis of n pixels, in pixel units :math:`u = ((g + 1) n - 1) / 2` (pixel centres at 0 .. n - 1):

    - "reflect": :math:`u` goes to the point of [0, n - 1] that the mirrors at the pixel centres 0 and n - 1 send it
      to (period 2 (n - 1)). That is F.pad's "reflect" extension ``x[-k] = x[k]``: between two nodes its bilinear
      interpolant is the line through the same two values as at the folded point.
    - "circular": :math:`u \bmod n`, in [0, n); a point between pixel n - 1 and pixel 0 needs pixel 0 again after
      the last one, so ``x`` is padded circularly by one row and one column and the points are normalised to that.

    Args:
        x: (B, C, H, W) image.
        grid: (B, S H, W, 2) normalised (x, y) sample points (``align_corners=False``), any range.
        padding: "reflect" or "circular".
    Returns:
        ``x`` ((B, C, H + 1, W + 1) for "circular"), and (B, S H, W, 2) the folded points in its normalised
        coordinates.
    """
    sizes = x.new_tensor([x.shape[-1], x.shape[-2]])                                    # (W, H): grid's (x, y) order
    pixels = ((grid + 1) * sizes - 1) / 2
    if padding == "reflect":
        period = 2 * (sizes - 1)
        folded = torch.remainder(pixels, period.clamp_min(1))
        # a 1-pixel axis mirrors onto its only pixel
        pixels = torch.where(sizes > 1, torch.minimum(folded, period - folded), torch.zeros_like(folded))
    else:
        pixels = torch.remainder(pixels, sizes)
        x = F.pad(x, (0, 1, 0, 1), mode="circular")
        sizes = sizes + 1
    return x, (2 * pixels + 1) / sizes - 1


def _average_of_warps(x: Tensor, centre: Tensor, pixel_matrices: Tensor, weights: Tensor, padding: str) -> Tensor:
    r"""``y = sum_s w_s x(c + P_s (p - c))``: x sampled bilinearly at each output pixel ``p`` mapped back by ``P_s``.

    ``P_s`` maps an output pixel's displacement from the centre, in pixels, to that of the input point it reads.
    In the normalised coordinates of ``affine_grid`` a pixel displacement ``(dx, dy)`` is ``(2 dx / W, 2 dy / H)``,
    so the normalised matrix is ``M = D P D^{-1}`` with ``D = diag(2 / W, 2 / H)``, and ``theta = [M | c - M c]``.

    Args:
        x: (B, C, H, W) image.
        centre: (B|1, 2) warp centre in normalised (x, y).
        pixel_matrices: (B|1, S, 2, 2) output-to-input maps of pixel displacements.
        weights: (B|1, S) weights summing to 1 over S.
        padding: a canonical name of the vocabulary other than "valid".
    Returns:
        (B, C, H, W) the weighted average of the S warped images.
    """
    batch, channels, height, width = x.shape
    samples = pixel_matrices.shape[1]
    pixel_matrices = pixel_matrices.expand(batch, -1, -1, -1)
    centre = centre.expand(batch, -1)[:, None, :, None]                                   # (B, 1, 2, 1)
    aspect = x.new_tensor([[1.0, height / width], [width / height, 1.0]])
    matrices = pixel_matrices * aspect                                                     # (B, S, 2, 2)
    translations = centre - matrices @ centre                                              # (B, S, 2, 1)
    theta = torch.cat([matrices, translations], dim=-1).reshape(batch * samples, 2, 3)
    grid = F.affine_grid(theta, [batch * samples, channels, height, width], align_corners=False)
    # Stacking the S grids along the height samples every warp in one call without copying x S times.
    grid = grid.reshape(batch, samples * height, width, 2)
    if padding in ("reflect", "circular"):
        x, grid = _fold_into_image(x, grid, padding)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode=_GRID_SAMPLE_MODE[padding], align_corners=False)
    warped = warped.reshape(batch, channels, samples, height, width)
    return torch.einsum("bcshw,bs->bchw", warped, weights.expand(batch, -1))


class _PathBlur(LinearOperator):
    """Shared body of the path blurs: configuration, checks, A as an average of warps along the path, and the
    adjoint as the exact pullback of A in x. A subclass gives the path's (B|1, S, 2, 2) matrices in
    :meth:`_path_matrices`."""

    def __init__(self, samples: int = 16, padding: str | None = None):
        self.samples = _validate.positive_int("samples", samples)
        self.padding = resolve_padding(padding, type(self).__name__, "replicate", _REFUSED)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(samples={self.samples}, padding={self.padding!r})"

    def _path_matrices(self, path: Tensor, batch: int, like: Tensor) -> Tensor:
        raise NotImplementedError

    def _blur(self, x: Tensor, path: Tensor, centre: Tensor | None, weights: Tensor | None) -> Tensor:
        """``sum_s w_s x(c + P_s (p - c))`` with ``P_s`` the path's matrices for the parameter ``path``."""
        _check_image(x)
        batch = x.shape[0]
        return _average_of_warps(x, _centre(centre, batch, x), self._path_matrices(path, batch, x),
                                 _normalised_weights(weights, batch, self.samples, x), self.padding)

    def _adjoint(self, y: Tensor, params: dict) -> Tensor:
        # A is linear in x, so its adjoint is the pullback (vector-Jacobian product) of A at any point, here 0.
        _check_image(y)
        _, pullback = torch.func.vjp(lambda image: self.A(image, **params), torch.zeros_like(y))
        return pullback(y)[0]


class RotationBlur(_PathBlur):
    r"""Rotational motion blur: the image averaged over a rotation arc about a centre (CL-DPS's rotation blur).

    .. math:: y = \sum_s w_s\, R(\theta_s)\, x, \qquad \theta_s = t_s\, \text{angle},

    where :math:`R(\theta)` rotates the image content by :math:`\theta` radians about ``centre``, positive being
    counter-clockwise as displayed (rows running down), the direction of ``torch.rot90(x, 1, dims=(-2, -1))`` and
    ``scipy.ndimage.rotate``. The output pixel at displacement :math:`(d_x, d_y)` pixels from the centre reads the
    input at :math:`(d_x \cos\theta - d_y \sin\theta,\ d_x \sin\theta + d_y \cos\theta)`, bilinearly.

    Args:
        samples: S, the number of rotations along the arc.
        padding: how points outside the image are read (README, "Boundaries"): "replicate" (alias "border")
            repeats the edge pixels, "reflect" ("reflection") mirrors the image about its edge pixels, "circular"
            wraps around, "zeros" ("constant") reads 0. A camera sees more scene beyond the frame, which the first
            three imitate without the black wedges that give the angle away. Not given: "replicate", with a
            FutureWarning, as the default becomes "reflect", every operator's default. "valid" is refused: a warp
            keeps the image size. (Before the shared vocabulary, "reflection" was ``grid_sample``'s mirror about the
            image border, which repeats the edge pixel; now it is "reflect", as everywhere.)
    Raises:
        TypeError: samples not an integer.
        ValueError: samples < 1, an unknown padding or "valid".
    """

    params = ("centre", "angle", "weights")

    def _path_matrices(self, angle: Tensor, batch: int, like: Tensor) -> Tensor:
        """(B|1, S, 2, 2) rotations by t_s angle."""
        angle = _per_item("angle", angle, batch, like)
        theta = angle[:, None] * _path_fractions(self.samples, like)                    # (B|1, S)
        cos, sin = torch.cos(theta), torch.sin(theta)
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)

    def A(self, x: Tensor, *, angle: Tensor, centre: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
        r"""Blur ``x`` along the rotation arc: ``y = sum_s w_s R(t_s angle) x``.

        Args:
            x: (B, C, H, W) image.
            angle: (B,), (1,) or () total arc in radians (any sign; 0 is the identity).
            centre: (B|1, 2) rotation centre in normalised (x, y); ``None`` is the image centre.
            weights: (B|1, S) non-negative weights of the S rotations, normalised to sum 1; ``None`` is uniform.
        Returns:
            (B, C, H, W) blurred image, in x's dtype and device (the parameters are cast to them).
        Raises:
            TypeError: x or a parameter is not a tensor, or x is not floating point.
            ValueError: a shape does not match, a parameter is not finite, or weights are negative or sum to 0.
        """
        return self._blur(x, angle, centre, weights)

    def A_adjoint(self, y: Tensor, *, angle: Tensor, centre: Tensor | None = None,
                  weights: Tensor | None = None) -> Tensor:
        r"""The exact adjoint in x, ``x' = sum_s w_s R(t_s angle)^T y``, where ``R^T`` splats y back bilinearly.

        Computed as the vector-Jacobian product of :meth:`A` w.r.t. x (exact, since A is linear in x); it is
        differentiable w.r.t. y, and w.r.t. the parameters only as far as torch differentiates ``grid_sample``'s
        backward.

        Args:
            y: (B, C, H, W) measurement.
            angle, centre, weights: as in :meth:`A`.
        Returns:
            (B, C, H, W) the adjoint applied to y.
        Raises:
            TypeError, ValueError: as in :meth:`A`.
        """
        return self._adjoint(y, dict(angle=angle, centre=centre, weights=weights))


class ZoomBlur(_PathBlur):
    r"""Zoom blur: the image averaged over magnifications about a centre (CL-DPS's zoom blur).

    .. math:: y = \sum_s w_s\, Z(z_s)\, x, \qquad z_s = \text{zoom}^{t_s},

    where :math:`Z(z)` magnifies the image content by :math:`z` about ``centre`` (the output pixel at displacement
    :math:`d` from the centre reads the input at :math:`d / z`, bilinearly); ``zoom < 1`` zooms out. The factors are
    spaced geometrically, a constant ratio per step, so zooming in by ``zoom`` and out by ``1 / zoom`` are mirror
    images and the log-magnification (what the eye sees as zoom speed) grows at a constant rate.

    Args:
        samples: S, the number of magnifications along the path.
        padding: as for :class:`RotationBlur` (not given: "replicate", with a FutureWarning); it matters only when
            zooming out.
    Raises:
        TypeError: samples not an integer.
        ValueError: samples < 1, an unknown padding or "valid".
    """

    params = ("centre", "zoom", "weights")

    def _path_matrices(self, zoom: Tensor, batch: int, like: Tensor) -> Tensor:
        """(B|1, S, 2, 2) magnifications by 1 / zoom^{t_s} (output-to-input maps)."""
        zoom = _per_item("zoom", zoom, batch, like)
        if (zoom <= 0).any():
            raise ValueError(f"zoom must be > 0, got {zoom.detach().cpu().tolist()}")
        inverse_factors = zoom[:, None] ** -_path_fractions(self.samples, like)             # (B|1, S): 1 / z_s
        eye = torch.eye(2, dtype=like.dtype, device=like.device)
        return inverse_factors[..., None, None] * eye

    def A(self, x: Tensor, *, zoom: Tensor, centre: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
        r"""Blur ``x`` along the zoom path: ``y = sum_s w_s Z(zoom^{t_s}) x``.

        Args:
            x: (B, C, H, W) image.
            zoom: (B,), (1,) or () final magnification, > 0 (1 is the identity).
            centre: (B|1, 2) zoom centre in normalised (x, y); ``None`` is the image centre.
            weights: (B|1, S) non-negative weights of the S magnifications, normalised to sum 1; ``None`` is uniform.
        Returns:
            (B, C, H, W) blurred image, in x's dtype and device (the parameters are cast to them).
        Raises:
            TypeError: x or a parameter is not a tensor, or x is not floating point.
            ValueError: a shape does not match, a parameter is not finite, zoom <= 0, or weights are negative or
                sum to 0.
        """
        return self._blur(x, zoom, centre, weights)

    def A_adjoint(self, y: Tensor, *, zoom: Tensor, centre: Tensor | None = None,
                  weights: Tensor | None = None) -> Tensor:
        r"""The exact adjoint in x, ``x' = sum_s w_s Z(z_s)^T y``, as the vector-Jacobian product of :meth:`A`.

        Args:
            y: (B, C, H, W) measurement.
            zoom, centre, weights: as in :meth:`A`.
        Returns:
            (B, C, H, W) the adjoint applied to y.
        Raises:
            TypeError, ValueError: as in :meth:`A`.
        """
        return self._adjoint(y, dict(zoom=zoom, centre=centre, weights=weights))


def _draw(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) float64 draws on the generator's device (CPU when None), so a seed gives the same numbers
    whatever device the parameters are moved to."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def _common_params(batch: int, centre_range: float, samples: int, generator: torch.Generator | None,
                   dtype: torch.dtype, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """(centre (B, 2) uniform in [-centre_range, centre_range]^2, weights (B, S) flat-Dirichlet), on device."""
    batch = _validate.positive_int("batch", batch)
    samples = _validate.positive_int("samples", samples)
    centre_range = _validate.real("centre_range", centre_range, 0, 1)
    _validate.generator("generator", generator)
    _validate.floating_dtype("dtype", dtype)
    centre = centre_range * (2 * _draw((batch, 2), generator) - 1)
    # -log U is Exp(1); normalised, the weights are flat-Dirichlet (uniform on the simplex): an erratic dwell time
    # along the path, like a hand-held shake, rather than a constant-speed sweep. 1 - U avoids log(0).
    weights = -torch.log1p(-_draw((batch, samples), generator))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return centre.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def rotation_params(batch: int, *, angle_range: tuple[float, float] = (10.0, 30.0), centre_range: float = 0.1,
                    samples: int = 16, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> dict:
    r"""Random parameters for :class:`RotationBlur`, in the range of CL-DPS's rotation-blur experiments.

    CL-DPS (Ye et al., ICLR 2026) blurs with rotations of 10 to 30 degrees; we draw ``|angle|`` uniformly in
    ``angle_range`` degrees with a random sign (the camera may turn either way), the centre uniformly in the square
    of half-side ``centre_range`` (normalised units) about the image centre, and flat-Dirichlet weights
    (``w = e / sum e``, ``e = -log U``). Draws are made in float64 on the generator's device, in the order centre,
    weights, angle, sign, so a seed gives the same parameters on any target device or dtype.

    Args:
        batch: B, the number of parameter sets.
        angle_range: (low, high) magnitude of the arc in degrees, 0 <= low <= high.
        centre_range: largest offset of the centre from the image centre per axis, in [0, 1] normalised units.
        samples: S, the number of weights; must equal the ``samples`` of the :class:`RotationBlur` they feed.
        generator: the random source; ``None`` uses torch's global generator.
        dtype, device: of the returned tensors.
    Returns:
        dict(centre=(B, 2), angle=(B,) radians, weights=(B, S) summing to 1).
    Raises:
        TypeError: batch or samples not an integer, angle_range not a pair of numbers, centre_range not a number, a
            generator that is not a torch.Generator, a dtype that is not floating.
        ValueError: a range that is not (low, high) with 0 <= low <= high, a centre_range outside [0, 1], or batch
            or samples < 1.
    """
    low, high = _validate.real_range("angle_range", angle_range, 0)
    centre, weights = _common_params(batch, centre_range, samples, generator, dtype, device)
    magnitude = torch.deg2rad(low + (high - low) * _draw((batch,), generator))
    sign = torch.where(_draw((batch,), generator) < 0.5, -1.0, 1.0)
    return dict(centre=centre, angle=(sign * magnitude).to(dtype=dtype, device=device), weights=weights)


def zoom_params(batch: int, *, zoom_range: tuple[float, float] = (1.05, 1.3), centre_range: float = 0.1,
                samples: int = 16, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> dict:
    r"""Random parameters for :class:`ZoomBlur`, CL-DPS-like zoom blurs.

    The zoom factor is drawn log-uniformly in ``zoom_range`` (uniform in zoom speed, matching the geometric
    spacing of :class:`ZoomBlur`). The default (1.05, 1.3) is our choice, as CL-DPS does not publish its range:
    at the border of a 256-pixel image it streaks points by 6 to 30 pixels, the same order as the 10 to 30 degree
    rotations of :func:`rotation_params` near the centre. Centre and weights are drawn as in :func:`rotation_params`
    (in the order centre, weights, zoom).

    Args:
        batch: B, the number of parameter sets.
        zoom_range: (low, high) final magnification, 0 < low <= high.
        centre_range: largest offset of the centre from the image centre per axis, in [0, 1] normalised units.
        samples: S, the number of weights; must equal the ``samples`` of the :class:`ZoomBlur` they feed.
        generator: the random source; ``None`` uses torch's global generator.
        dtype, device: of the returned tensors.
    Returns:
        dict(centre=(B, 2), zoom=(B,), weights=(B, S) summing to 1).
    Raises:
        TypeError: as :func:`rotation_params`, for zoom_range instead of angle_range.
        ValueError: a range that is not (low, high) with 0 < low <= high, a centre_range outside [0, 1], or batch
            or samples < 1.
    """
    low, high = _validate.real_range("zoom_range", zoom_range, 0, open_below=True)
    centre, weights = _common_params(batch, centre_range, samples, generator, dtype, device)
    log_zoom = math.log(low) + (math.log(high) - math.log(low)) * _draw((batch,), generator)
    return dict(centre=centre, zoom=torch.exp(log_zoom).to(dtype=dtype, device=device), weights=weights)
