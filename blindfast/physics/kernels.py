r"""Random blur kernels for synthetic blind-deblurring data: camera-shake motion kernels and rotated Gaussians.

Both generators follow :func:`blindfast.physics.motion_blur.rotation_params`'s conventions: a batch size, a seeded
``torch.Generator`` (``None`` is torch's global one), draws made in float64 on the generator's device so a seed gives
the same kernels whatever the target ``dtype`` and ``device``, and a parameter dict ``{"kernel": (B, 1, k, k)}`` for
:class:`blindfast.physics.blur.Blur`. Every kernel is non-negative, has no subnormal taps (:func:`flush_subnormals`)
and sums to 1, with its centre of mass at the window centre ``((k - 1) / 2, (k - 1) / 2)`` (pixel indices). That is
the centre tap for odd ``k``; for even ``k`` it lies half a pixel before :class:`~blindfast.physics.blur.Blur`'s
centre index ``k // 2`` in each axis, so an even kernel shifts the blurred image by half a pixel, as the kernels of
the ``motionblur`` package do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast import _validate

__all__ = ["motion_kernel", "gaussian_kernel", "gaussian_kernel_params", "flush_subnormals", "SUPERSAMPLE",
           "SMOOTHING"]

# Rasterisation grid of motion_kernel: SUPERSAMPLE x finer than the kernel. The motionblur package draws at 2x and
# resamples with Lanczos, which rings (negative taps, clipped); a bilinear splat on a 4x grid brought down by a
# tent filter is non-negative and keeps the centre of mass exactly.
SUPERSAMPLE = 4
# Standard deviation of motion_kernel's smoothing Gaussian, as a fraction of the window diagonal: the motionblur
# package's blur radius (1% of its canvas diagonal), here without its rounding down to whole canvas pixels.
SMOOTHING = 0.01

# Constants of the motionblur package's random walk (LeviBorodenko/motionblur, motionblur.py): the path length is
# PATH_SCALE * diagonal * (U + U(0, intensity^2)), each step Beta(1, STEP_BETA) * (1 - intensity + PACKAGE_EPS)
# * diagonal long, the sign-flip probability of the directions Beta(2, 20), and the direction magnitudes
# Triangular(0, intensity * max, max + PACKAGE_EPS). PACKAGE_EPS is the package's `eps`, used in both places.
_PATH_SCALE = 0.75
_STEP_BETA = 30
_JITTER_BETA = (2, 20)
_PACKAGE_EPS = 0.1
# Steps are drawn this many at a time until every path of the batch is long enough.
_STEP_CHUNK = 64


def flush_subnormals(kernel: Tensor, dtype: torch.dtype) -> Tensor:
    """``kernel`` in ``dtype``, its taps below ``dtype``'s smallest normal number (in magnitude) set to 0.

    The far tails of Gaussian-like kernels fall below float32's smallest normal, 1.2e-38 (about 5% of
    :func:`~blindfast.physics.lens.lens_psf_grid`'s float32 taps), and arithmetic on subnormals is slow on many x86
    CPUs (on this project's AMD EPYC it measured no cost: benchmarks/bench_sv_conv.py's subnormal group), so they
    are never handed to a kernel. The mass removed is below ``taps * 1.2e-38``, far under one rounding of a kernel's sum of 1. float16 keeps
    its subnormals: its smallest normal, 6.1e-5, is a visible part of a kernel. Gradients pass through the kept taps.
    """
    if dtype == torch.float16:
        return kernel.to(dtype)
    return torch.where(kernel.abs() < torch.finfo(dtype).tiny, torch.zeros_like(kernel), kernel).to(dtype)


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """U[0, 1) float64 draws on the generator's device (CPU when None), device-independent per seed."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def _exponential(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Exp(1) draws, -log(1 - U), which never takes log(0)."""
    return -torch.log1p(-_uniform(shape, generator))


def _step_lengths(batch: int, intensity: float, diagonal: float, generator: torch.Generator | None) -> Tensor:
    """Lengths (B, N) of the path's steps, in pixels; each row sums to that path's drawn length.

    Steps ``Beta(1, 30) * (1 - intensity + 0.1) * diagonal`` are drawn until every path's running length reaches its
    total ``0.75 * diagonal * (U + intensity^2 U')``; the step that crosses it is cut to end there exactly and the
    later ones are zero (the package instead rejects steps longer than the whole path, which only matters for very
    short paths). Beta(1, b) is drawn by inversion, ``1 - U^{1/b}``.
    """
    total = _PATH_SCALE * diagonal * (_uniform((batch,), generator) + intensity**2 * _uniform((batch,), generator))
    step_scale = (1 - intensity + _PACKAGE_EPS) * diagonal
    steps = total.new_zeros(batch, 0)
    while steps.shape[1] == 0 or (steps.sum(dim=1) < total).any():
        draws = 1 - _uniform((batch, _STEP_CHUNK), generator) ** (1 / _STEP_BETA)
        steps = torch.cat([steps, step_scale * draws], dim=1)
    before = torch.cumsum(steps, dim=1) - steps                   # length walked before each step
    return torch.minimum(steps, (total[:, None] - before).clamp(min=0))


def _step_directions(batch: int, steps: int, intensity: float, generator: torch.Generator | None) -> Tensor:
    r"""Directions (B, N) of the steps, radians, as the motionblur package draws them.

    A largest angle ``m ~ U(0, intensity * pi)`` and a jitter ``p ~ Beta(2, 20)`` per path; the first direction is
    ``U(-m, m)``, each later one has magnitude ``Triangular(0, intensity * m, m + 0.1)`` and keeps the previous sign,
    or flips it with probability ``p``. Intensity 0 gives ``m = 0``: every direction 0, a straight path. Beta(2, 20)
    is drawn as ``G_2 / (G_2 + G_20)`` with ``G_k`` a sum of k Exp(1) draws (a Gamma(k) variable).
    """
    largest = intensity * math.pi * _uniform((batch,), generator)
    gammas = _exponential((batch, sum(_JITTER_BETA)), generator)
    jitter = gammas[:, :_JITTER_BETA[0]].sum(dim=1) / gammas.sum(dim=1)
    first = (2 * _uniform((batch,), generator) - 1) * largest
    # Triangular(0, mode, right) by inversion: sqrt(U right mode) below the mode's CDF value mode / right, else
    # right - sqrt((1 - U) right (right - mode)).
    mode, right = (intensity * largest)[:, None], (largest + _PACKAGE_EPS)[:, None]
    u = _uniform((batch, steps - 1), generator)
    magnitude = torch.where(u < mode / right, torch.sqrt(u * right * mode),
                            right - torch.sqrt((1 - u) * right * (right - mode)))
    flips = torch.where(_uniform((batch, steps - 1), generator) < jitter[:, None], -1.0, 1.0)
    signs = torch.sign(first)[:, None] * torch.cumprod(flips, dim=1)
    return torch.cat([first[:, None], signs * magnitude], dim=1)


def _arc_length_samples(lengths: Tensor, directions: Tensor, samples: int) -> Tensor:
    """``samples`` points (B, M, 2) spaced evenly along each piecewise-linear path, at the midpoints of M equal
    arcs, so each point stands for the same length (a constant drawing speed).

    Args:
        lengths: (B, N) step lengths; each row sums to the path length.
        directions: (B, N) step directions, radians.
    Returns:
        (B, M, 2) points (x, y), the path starting at the origin.
    """
    unit = torch.stack([torch.cos(directions), torch.sin(directions)], dim=-1)           # (B, N, 2)
    ends = torch.cumsum(lengths, dim=1)                                                   # (B, N)
    starts = torch.cumsum(lengths[..., None] * unit, dim=1) - lengths[..., None] * unit  # (B, N, 2)
    fractions = (torch.arange(samples, dtype=lengths.dtype, device=lengths.device) + 0.5) / samples
    arc = fractions * ends[:, -1:]                                                        # (B, M)
    # The step a point falls in is the first whose end lies beyond it: never a zero-length step. A zero-length
    # path puts every point past the last end, hence the clamp (the offset is then 0).
    step = torch.searchsorted(ends, arc, right=True).clamp(max=lengths.shape[1] - 1)
    walked = arc - (torch.gather(ends, 1, step) - torch.gather(lengths, 1, step))
    index = step[..., None].expand(-1, -1, 2)
    return torch.gather(starts, 1, index) + walked[..., None] * torch.gather(unit, 1, index)


def _splat(points: Tensor, canvas: int) -> Tensor:
    """Bilinear splat of equal-weight points onto (B, 1, canvas, canvas) grids; the points (B, M, 2) are (x, y)
    in the grid's pixel indices and must lie at least one pixel inside it. Each point's weights keep its position
    as their mean, so the grid's centre of mass is the points' mean."""
    batch, count, _ = points.shape
    corner = torch.floor(points)
    frac = points - corner
    corner = corner.long()
    image = points.new_zeros(batch * canvas * canvas)
    base = (torch.arange(batch, device=points.device) * canvas * canvas)[:, None]
    for dy in (0, 1):
        for dx in (0, 1):
            weight = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
            index = base + (corner[..., 1] + dy) * canvas + corner[..., 0] + dx
            image.index_add_(0, index.reshape(-1), weight.reshape(-1) / count)
    return image.reshape(batch, 1, canvas, canvas)


def _gaussian_taps(sigma: float, radius: int, like: Tensor) -> Tensor:
    """The normalised 1-D Gaussian exp(-t^2 / (2 sigma^2)) at t = -radius..radius, shape (2 radius + 1,)."""
    t = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return taps / taps.sum()


def motion_kernel(batch: int, size: int = 64, intensity: float = 0.5, *, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> dict:
    r"""Random camera-shake motion kernels: the motionblur package's random walk, rasterised our own way.

    The path is the random walk of Borodenko's ``motionblur`` package (LeviBorodenko/motionblur, after Boracchi &
    Foi 2012, "Modeling the performance of image restoration from motion blur", IEEE TIP 21(8)), with ``D`` the
    window diagonal ``sqrt(2) * size`` in pixels:

    - total length ``L = 0.75 D (U + intensity^2 U')``, walked in steps ``Beta(1, 30) (1.1 - intensity) D`` long,
      so a higher intensity gives longer paths made of more, shorter steps;
    - step directions of magnitude ``Triangular(0, intensity m, m + 0.1)``, ``m ~ U(0, intensity pi)``, whose sign
      flips from one step to the next with probability ``Beta(2, 20)``: intensity 0 is a straight line, intensity 1
      an irregular, non-linear path;
    - the path, starting at the origin, is centred on its centre of mass and turned by a uniform random angle.

    Where the package crops paths that leave its canvas, we shrink the path (about its centre of mass) until it
    lies within the radius ``R = (size - 1) / 2 - (1 + ceil(3 sigma f)) / f`` of the window centre, with
    ``f = SUPERSAMPLE`` and ``sigma = SMOOTHING * D`` the smoothing below, so no mass is lost at the border. It is
    then drawn with constant speed (``M`` equally spaced points, splatted bilinearly onto an ``f``-times finer
    grid), smoothed by a Gaussian of standard deviation ``sigma`` pixels truncated at ``3 sigma``, and brought
    down to the kernel grid by a tent (each fine pixel shared linearly between its two nearest kernel pixels per
    axis). Each of these steps keeps the mass and the centre of mass, so the centre of mass is exactly the window
    centre ``((size - 1) / 2, (size - 1) / 2)``: no resampling shift is needed. Finally the sum is normalised to 1.

    Defaults: ``size=64, intensity=0.5`` are the motion kernels of BlindDPS (Chung et al., CVPR 2023), which the
    diffusion-based blind deblurring methods that follow it reuse.

    Args:
        batch: B, the number of kernels.
        size: k, the kernel window side in pixels.
        intensity: in [0, 1], how irregular (and long) the path is: 0 straight, 1 highly non-linear.
        generator: the random source; ``None`` uses torch's global generator.
        dtype, device: of the returned kernels (computed in float64).
    Returns:
        dict(kernel=(B, 1, k, k)) non-negative, each summing to 1, centre of mass at ((k - 1) / 2, (k - 1) / 2).
    Raises:
        TypeError: batch or size not an int, intensity not a real number, a generator that is not a
            torch.Generator, a dtype that is not floating.
        ValueError: batch or size < 1, intensity outside [0, 1] or not finite.
    """
    batch = _validate.positive_int("batch", batch)
    size = _validate.positive_int("size", size)
    intensity = _validate.real("intensity", intensity, 0, 1)
    _validate.generator("generator", generator)
    _validate.floating_dtype("dtype", dtype)
    diagonal = math.sqrt(2) * size

    lengths = _step_lengths(batch, intensity, diagonal, generator)
    directions = _step_directions(batch, lengths.shape[1], intensity, generator)
    turn = 2 * math.pi * _uniform((batch,), generator)
    # Half a fine pixel between points (before any shrinking) keeps the splatted line free of gaps.
    samples = max(1, math.ceil(2 * SUPERSAMPLE * lengths.sum(dim=1).max().item()))
    points = _arc_length_samples(lengths, directions, samples).to(device=device)
    points = points - points.mean(dim=1, keepdim=True)
    cos, sin = torch.cos(turn).to(points.device), torch.sin(turn).to(points.device)
    points = torch.stack([cos[:, None] * points[..., 0] - sin[:, None] * points[..., 1],
                          sin[:, None] * points[..., 0] + cos[:, None] * points[..., 1]], dim=-1)

    canvas = SUPERSAMPLE * size
    sigma = SMOOTHING * diagonal * SUPERSAMPLE                     # fine pixels
    radius = math.ceil(3 * sigma)
    # Kernel pixel x sits at fine position (x + 1/2) f - 1/2, the window centre (size - 1) / 2 at (canvas - 1) / 2.
    # A point spreads 1 fine pixel in the splat and `radius` in the smoothing; the tent needs everything between
    # the outermost kernel pixel centres, f / 2 - 1/2 fine pixels inside the canvas edge.
    fit = max(0.0, (canvas - SUPERSAMPLE) / 2 - 1 - radius)        # fine pixels
    reach = points.norm(dim=-1).amax(dim=1) * SUPERSAMPLE
    shrink = fit / torch.maximum(reach, torch.full_like(reach, fit)) if fit > 0 else torch.zeros_like(reach)
    fine = points * (shrink[:, None, None] * SUPERSAMPLE) + (canvas - 1) / 2
    image = _splat(fine, canvas)
    taps = _gaussian_taps(sigma, radius, image)
    image = F.conv2d(image, taps.view(1, 1, -1, 1), padding=(radius, 0))
    image = F.conv2d(image, taps.view(1, 1, 1, -1), padding=(0, radius))
    # Tent downsampling: each fine pixel's mass goes to the two nearest kernel pixels per axis, linearly. Unlike a
    # box average (which moves mass to block centres, up to 3/8 px off), it keeps the centre of mass exactly.
    position = (torch.arange(canvas, dtype=image.dtype, device=image.device) + 0.5) / SUPERSAMPLE - 0.5
    target = torch.arange(size, dtype=image.dtype, device=image.device)
    tent = (1 - (position[None, :] - target[:, None]).abs()).clamp(min=0)                 # (size, canvas)
    kernel = tent @ image @ tent.T
    kernel = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    return dict(kernel=flush_subnormals(kernel, dtype))


def _kernel_parameter(name: str, value, positive: bool) -> Tensor:
    """A float (as a float64 tensor) or a floating () / (B,) tensor, checked finite (and > 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise TypeError(f"{name} must be a float or a tensor of shape () or (B,), got {type(value).__name__}")
    if isinstance(value, Tensor):
        if value.ndim > 1:
            raise ValueError(f"{name} must have shape () or (B,), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    tensor = torch.as_tensor(value, dtype=torch.float64) if not isinstance(value, Tensor) else value
    bad = ~torch.isfinite(tensor) | (tensor <= 0) if positive else ~torch.isfinite(tensor)
    if bad.any():
        rule = "finite and > 0" if positive else "finite"
        raise ValueError(f"{name} must be {rule}, got {tensor.detach().cpu().tolist()}")
    return tensor


def gaussian_kernel(size: int, sigma: float | Tensor, anisotropy: float | Tensor = 1.0, angle: float | Tensor = 0.0,
                    *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    r"""Rotated anisotropic Gaussian kernels, normalised to sum 1.

    .. math:: k(d) \propto \exp\!\big(-\tfrac12\, d^\top \Sigma^{-1} d\big), \qquad
              \Sigma = R_\theta \operatorname{diag}\!\big(\sigma^2, (a\sigma)^2\big) R_\theta^\top,

    evaluated at the pixel centres, ``d = (x - c, c - y)`` for column ``x`` and row ``y`` with ``c = (size - 1) / 2``
    (the y axis pointing up, as displayed), so ``sigma`` is the standard deviation along the direction at angle
    ``theta`` counter-clockwise from the x axis as displayed (the sense of
    :class:`~blindfast.physics.motion_blur.RotationBlur`) and ``a sigma`` across it. Differentiable w.r.t.
    ``sigma``, ``anisotropy`` and ``angle``.

    Args:
        size: k, the window side; odd keeps the kernel centre on a pixel.
        sigma: standard deviation along the main axis, pixels, > 0: a float, or a () / (B,) tensor.
        anisotropy: a, the ratio of the cross-axis standard deviation to ``sigma``, > 0 (1 is isotropic).
        angle: theta, radians, of the main axis.
        dtype, device: of the result; tensor parameters are moved to them (so gradients flow back).
    Returns:
        (k, k) when every parameter is a float or a 0-d tensor; (B, 1, k, k) when any is a (B,) tensor (the others
        broadcast: floats, () or (1,) tensors).
    Raises:
        TypeError: size not an int; a parameter neither a float nor a floating-point tensor; a dtype that is not
            floating.
        ValueError: size < 1; sigma or anisotropy not > 0, a parameter not finite; tensor shapes other than (),
            (1,) or a common (B,).
    """
    size = _validate.positive_int("size", size)
    _validate.floating_dtype("dtype", dtype)
    values = [_kernel_parameter("sigma", sigma, True), _kernel_parameter("anisotropy", anisotropy, True),
              _kernel_parameter("angle", angle, False)]
    batched = any(v.ndim == 1 for v in values)
    lengths = {v.shape[0] for v in values if v.ndim == 1} - {1}
    if len(lengths) > 1:
        shapes = ", ".join(f"{n} {tuple(v.shape)}" for n, v in zip(("sigma", "anisotropy", "angle"), values))
        raise ValueError(f"sigma, anisotropy and angle must have shape (), (1,) or one common (B,), got {shapes}")
    sigma, anisotropy, angle = (v.to(dtype=dtype, device=device).reshape(-1, 1, 1) for v in values)

    d = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    dx, dy = d[None, None, :], -d[None, :, None]                   # (1, 1, k) columns, (1, k, 1) rows upward
    cos, sin = torch.cos(angle), torch.sin(angle)
    along = (cos * dx + sin * dy) / sigma                          # R^T d, scaled by the standard deviations
    across = (cos * dy - sin * dx) / (anisotropy * sigma)
    kernel = torch.exp(-0.5 * (along**2 + across**2))              # (B|1, k, k)
    kernel = flush_subnormals(kernel / kernel.sum(dim=(-2, -1), keepdim=True), dtype)
    return kernel[:, None] if batched else kernel[0]


def gaussian_kernel_params(batch: int, size: int = 25, *, sigma_range: tuple[float, float] = (0.5, 3.0),
                           anisotropy_range: tuple[float, float] = (0.5, 1.0),
                           generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None) -> dict:
    r"""Random Gaussian blur kernels for :class:`~blindfast.physics.blur.Blur`, via :func:`gaussian_kernel`.

    ``sigma ~ U(sigma_range)``, ``anisotropy ~ U(anisotropy_range)``, ``angle ~ U(0, pi)`` (a Gaussian is
    symmetric under a half turn), drawn in that order in float64 on the generator's device. The defaults are our
    choice: sigma from 0.5 (a nearly sharp image) to 3 pixels, the blur of DPS's Gaussian-deblurring benchmark (Chung
    et al., ICLR 2023); an anisotropy in [0.5, 1] keeps ``sigma`` the widest axis; ``size = 25`` holds 4 standard
    deviations of the widest default kernel on each side of the centre.

    Args:
        batch: B, the number of kernels.
        size: k, the kernel window side.
        sigma_range: (low, high) standard deviation along the main axis, pixels, 0 < low <= high.
        anisotropy_range: (low, high) cross-axis to main-axis ratio, 0 < low <= high.
        generator: the random source; ``None`` uses torch's global generator.
        dtype, device: of the returned kernels.
    Returns:
        dict(kernel=(B, 1, k, k)) non-negative, each summing to 1.
    Raises:
        TypeError: batch or size not an int, a range not a pair of numbers, a generator that is not a
            torch.Generator, a dtype that is not floating.
        ValueError: batch or size < 1, a range that is not (low, high) with 0 < low <= high.
    """
    batch = _validate.positive_int("batch", batch)
    size = _validate.positive_int("size", size)
    sigma_low, sigma_high = _validate.real_range("sigma_range", sigma_range, 0, open_below=True)
    aniso_low, aniso_high = _validate.real_range("anisotropy_range", anisotropy_range, 0, open_below=True)
    _validate.generator("generator", generator)
    _validate.floating_dtype("dtype", dtype)
    sigma = sigma_low + (sigma_high - sigma_low) * _uniform((batch,), generator)
    anisotropy = aniso_low + (aniso_high - aniso_low) * _uniform((batch,), generator)
    angle = math.pi * _uniform((batch,), generator)
    kernel = gaussian_kernel(size, sigma, anisotropy, angle, dtype=torch.float64, device=device)
    return dict(kernel=flush_subnormals(kernel, dtype))
