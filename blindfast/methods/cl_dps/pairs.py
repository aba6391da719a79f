r"""CL-DPS's positive pairs: the same patch location in a flow state :math:`x_t` of a clean photo crop and in a
blurred, noisy measurement :math:`y = A_\psi(x_0) + n` of it (Ye & Ferrao, CL-DPS, Sec. 3: the encoder learns to
match a measurement patch with the patch of the image being restored at the same place).

For each pair: a random crop of side ``patch + 2 margin`` of a photo in [-1, 1] (:class:`blindfast.data.
RandomPatches`), a family drawn uniformly from ``families`` and its parameters :math:`\psi`, then

- :math:`x_0`: the crop's centre ``patch`` x ``patch`` patch;
- :math:`x_t = t x_0 + (1 - t)\varepsilon`, :math:`\varepsilon \sim N(0, I)`, :math:`t \sim U(\text{time\_range})`:
  the priors' flow convention (:func:`blindfast.ops.flow_interpolate`, t = 1 is data), the states the sampler sees;
- :math:`y`: the whole crop blurred by :math:`A_\psi`, its centre patch taken, plus Gaussian noise of a standard
  deviation drawn uniformly in ``noise_range`` ([-1, 1] units).

The crop is blurred, not the patch, so the patch never sees a boundary: every point :math:`A_\psi` reads for a
patch pixel lies inside the crop (checked in the tests: zero and replicate padding give the same patch). The
families and their ranges:

- ``rotation`` (:class:`~blindfast.physics.RotationBlur`, 16 path samples): angle, weights as
  :func:`~blindfast.physics.rotation_params` (10 to 30 degrees either way, flat-Dirichlet dwell times). The centre
  is placed as on a photo: at a distance :math:`\rho \le \rho_{max}` from the patch centre, uniform over that disk,
  so the patch sees the blur of a place at that distance from the rotation centre (a tangential streak growing
  with :math:`\rho`). A point at radius r moves by at most :math:`2 r \sin(\theta_{max}/2)`, so
  :math:`\rho_{max} = (\text{margin} - 1) / (2\sin(\theta_{max}/2)) - \text{patch}/\sqrt2` keeps every read inside
  the crop: 15.6 pixels with the defaults (patch 64, margin 32, 30 degrees).
- ``zoom`` (:class:`~blindfast.physics.ZoomBlur`, 16 samples): zoom, weights as
  :func:`~blindfast.physics.zoom_params` (1.05 to 1.3); a point at radius r moves by at most
  :math:`r (1 - 1/z_{max})`, so :math:`\rho_{max} = (\text{margin} - 1) / (1 - 1/z_{max}) - \text{patch}/\sqrt2`,
  89 pixels with the defaults.
- ``motion`` (:func:`~blindfast.physics.motion_kernel`): a kernel of odd side drawn uniformly in ``kernel_sizes``
  (13 to 31 pixels) and intensity uniform in [0, 1];
- ``gaussian`` (:func:`~blindfast.physics.gaussian_kernel`): odd side k as for motion, sigma uniform in
  [0.5, (k - 1) / 8] (the window holds 4 sigma either side), anisotropy uniform in [0.5, 1], angle in [0, pi);

the kernels are centred in a ``max(kernel_sizes)`` window and applied with :class:`~blindfast.physics.Blur`'s
"valid" padding on the crop's centre ``patch + max - 1`` square, which gives the patch.

Hard negatives (``hard_negatives`` N > 0, for the two-encoder training of :mod:`~blindfast.methods.cl_dps.moco`):
the same content under other operators, drawn after everything above (so the pairs themselves are those of
N = 0): N - 1 fresh operators :math:`\psi'_j` per pair (a family drawn uniformly, then its parameters, as for
:math:`\psi`; continuous parameters, so :math:`\psi'_j \ne \psi` almost surely), giving

- ``y_negatives`` (B, N, C, n, n), measurement-side negatives of the x_t query: :math:`x_0 + n` (the identity as
  the operator: the clean patch as a "measurement") and :math:`A_{\psi'_j}(x_0) + n`, with y's own noise n;
- ``x_negatives`` (B, N, C, n, n), image-side negatives of the y query: :math:`t A_\psi(x_0) + (1 - t)\varepsilon`
  (the measurement's own blurred content as an image being restored) and :math:`t A_{\psi'_j}(x_0) + (1 - t)
  \varepsilon`, with x_t's own t and :math:`\varepsilon`.

Each differs from its pair's positive by the operator alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from blindfast import _validate
from blindfast.data import RandomPatches
from blindfast.ops import flow_interpolate
from blindfast.physics import (Blur, RotationBlur, ZoomBlur, gaussian_kernel, motion_kernel, rotation_params,
                               zoom_params)

__all__ = ["FAMILIES", "PairConfig", "Pairs", "parse_families", "draw_pairs", "blur_crops", "draw_operators"]

FAMILIES = ("rotation", "zoom", "motion", "gaussian")
PATH_SAMPLES = 16  # warps along a rotation or zoom path (RotationBlur's and ZoomBlur's default)


def parse_families(families) -> tuple[str, ...]:
    """``families`` (a comma-separated str or a sequence of names) as a tuple of known, distinct family names.

    Raises:
        ValueError: an empty list, an unknown or a repeated family.
    """
    names = families.split(",") if isinstance(families, str) else list(families)
    names = tuple(name.strip() for name in names if name.strip())
    unknown = [name for name in names if name not in FAMILIES]
    if not names or unknown:
        raise ValueError(f"expected operator families among {', '.join(FAMILIES)}, got "
                         f"{', '.join(map(repr, unknown)) if unknown else 'none'}")
    if len(set(names)) != len(names):
        raise ValueError(f"expected distinct operator families, got {', '.join(names)}")
    return names


@dataclass(frozen=True)
class PairConfig:
    """How pairs are drawn (module docstring).

    Attributes:
        patch: patch side, pixels.
        margin: crop border around the patch, pixels (crop side ``patch + 2 margin``); it bounds how far the
            rotation and zoom centres may lie from the patch and must hold half the largest kernel.
        families: operator families, drawn uniformly per pair.
        time_range: (low, high) within [0, 1], the flow time t of x_t (1 = the clean patch).
        noise_range: (low, high) standard deviation of y's Gaussian noise, [-1, 1] units.
        angle_range: rotation arc magnitude, degrees.
        zoom_range: final magnification, >= 1 (zooming in).
        kernel_sizes: (low, high) odd sides of the motion and Gaussian kernels.
    """
    patch: int = 64
    margin: int = 32
    families: tuple[str, ...] = FAMILIES
    time_range: tuple[float, float] = (0.5, 1.0)
    noise_range: tuple[float, float] = (0.0, 0.05)
    angle_range: tuple[float, float] = (10.0, 30.0)
    zoom_range: tuple[float, float] = (1.05, 1.3)
    kernel_sizes: tuple[int, int] = (13, 31)

    def __post_init__(self):
        _validate.positive_int("patch", self.patch)
        _validate.positive_int("margin", self.margin)
        object.__setattr__(self, "families", parse_families(self.families))
        low, high = _validate.real_range("time_range", self.time_range, 0)
        if high > 1:
            raise ValueError(f"time_range must lie within [0, 1], got {tuple(self.time_range)!r}")
        object.__setattr__(self, "time_range", (low, high))
        object.__setattr__(self, "noise_range", _validate.real_range("noise_range", self.noise_range, 0))
        object.__setattr__(self, "angle_range", _validate.real_range("angle_range", self.angle_range, 0))
        zoom = _validate.real_range("zoom_range", self.zoom_range, 1)
        object.__setattr__(self, "zoom_range", zoom)
        sizes = _validate.int_pair("kernel_sizes", self.kernel_sizes, "(low, high)", 1)
        if sizes[0] > sizes[1] or sizes[0] % 2 == 0 or sizes[1] % 2 == 0:
            raise ValueError(f"kernel_sizes must be (low, high) odd sides with low <= high, got {sizes}")
        object.__setattr__(self, "kernel_sizes", sizes)
        if sizes[1] // 2 > self.margin:
            raise ValueError(f"margin must hold half the largest kernel, {sizes[1] // 2} pixels, got {self.margin}")
        for family in ("rotation", "zoom"):
            if family in self.families and self.centre_radius(family) < 0:
                raise ValueError(f"margin {self.margin} is too small for {family} blur of a {self.patch}-pixel "
                                 f"patch at these ranges (the path of its corners leaves the crop); expected a "
                                 f"margin of at least {self._least_margin(family)}")

    @property
    def crop(self) -> int:
        """The side of the crops drawn from the photos."""
        return self.patch + 2 * self.margin

    def _largest_shift(self, family: str, radius: float) -> float:
        """The farthest a point at ``radius`` pixels from the warp centre moves along the path."""
        if family == "rotation":
            return 2 * radius * math.sin(math.radians(min(self.angle_range[1], 180.0)) / 2)
        return radius * (1 - 1 / self.zoom_range[1])

    def centre_radius(self, family: str) -> float:
        """rho_max: the largest distance from the patch centre to a rotation or zoom centre (module docstring)."""
        half_diagonal = self.patch / math.sqrt(2)
        unit = self._largest_shift(family, 1.0)
        return math.inf if unit == 0 else (self.margin - 1) / unit - half_diagonal

    def _least_margin(self, family: str) -> int:
        return math.ceil(1 + self._largest_shift(family, self.patch / math.sqrt(2)))

    def to_json(self) -> dict:
        """The settings as JSON values (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


class Pairs(NamedTuple):
    """A batch of positive pairs.

    Attributes:
        clean: (B, C, n, n) x_0, the clean patches in [-1, 1].
        x_t: (B, C, n, n) t x_0 + (1 - t) eps.
        y: (B, C, n, n) the measurement patches A_psi(x_0) + noise.
        t: (B,) the flow times.
        family: (B,) int64 index into the config's ``families``.
        y_negatives, x_negatives: (B, N, C, n, n) the hard negatives of the module docstring (None when N = 0).
    """
    clean: Tensor
    x_t: Tensor
    y: Tensor
    t: Tensor
    family: Tensor
    y_negatives: Tensor | None = None
    x_negatives: Tensor | None = None


def draw_operators(family: str, count: int, config: PairConfig, generator: torch.Generator) -> dict:
    """Parameters of ``count`` operators of one family (module docstring), for :func:`blur_crops`.

    Returns:
        rotation: dict(centre (count, 2) in the crop's normalised coordinates, angle (count,), weights
        (count, 16)); zoom: the same with zoom (count,); motion and gaussian: dict(kernel (count, 1, K, K)) with
        K = the largest kernel size, each kernel centred and of sum 1.
    """
    if family in ("rotation", "zoom"):
        params = (rotation_params(count, angle_range=config.angle_range, samples=PATH_SAMPLES, generator=generator)
                  if family == "rotation" else
                  zoom_params(count, zoom_range=config.zoom_range, samples=PATH_SAMPLES, generator=generator))
        # The centre: uniform over the disk of radius rho_max about the patch (= crop) centre, in pixels, then in
        # the crop's normalised units (2 / crop per pixel).
        radius = min(config.centre_radius(family), config.crop) * torch.rand(count, generator=generator,
                                                                              dtype=torch.float64).sqrt()
        direction = 2 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64)
        offset = torch.stack([radius * torch.cos(direction), radius * torch.sin(direction)], 1)
        params["centre"] = (offset * 2 / config.crop).float()
        return params
    low, high = config.kernel_sizes
    kernels = []
    for _ in range(count):
        size = low + 2 * int(torch.randint((high - low) // 2 + 1, (), generator=generator))
        if family == "motion":
            intensity = torch.rand((), generator=generator, dtype=torch.float64).item()
            kernel = motion_kernel(1, size, intensity, generator=generator)["kernel"][0, 0]
        else:
            u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            sigma = 0.5 + u[0] * max((size - 1) / 8 - 0.5, 0.0)
            kernel = gaussian_kernel(size, sigma, 0.5 + 0.5 * u[1], math.pi * u[2])
        pad = (high - size) // 2
        kernels.append(F.pad(kernel, (pad, pad, pad, pad)))
    return {"kernel": torch.stack(kernels)[:, None]}


def blur_crops(family: str, crops: Tensor, params: dict, patch: int, padding: str = "zeros") -> Tensor:
    """The centre ``patch`` x ``patch`` patch of ``A_psi(crops)`` (no noise).

    Args:
        family: one of :data:`FAMILIES`.
        crops: (B, C, s, s) crops.
        params: :func:`draw_operators`' parameters of B operators.
        patch: n, the patch side.
        padding: how a rotation or zoom reads outside the crop; the drawn operators never do, so any padding
            gives the same patch (the tests check it).
    Returns:
        (B, C, n, n).
    """
    side = crops.shape[-1]
    if family in ("rotation", "zoom"):
        operator = (RotationBlur if family == "rotation" else ZoomBlur)(PATH_SAMPLES, padding=padding)
        blurred = operator.A(crops, **params)
        start = (side - patch) // 2
        return blurred[..., start:start + patch, start:start + patch]
    window = params["kernel"].shape[-1]
    start = (side - patch - window + 1) // 2
    inner = crops[..., start:start + patch + window - 1, start:start + patch + window - 1]
    return Blur(padding="valid").A(inner, kernel=params["kernel"].to(crops.dtype))


def _blur_draw(crops: Tensor, config: PairConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One operator per crop, its family drawn uniformly from ``config.families`` then its parameters: ((B, C, n, n)
    the centre patches of the blurred crops, no noise; (B,) the family indices)."""
    family = torch.randint(len(config.families), (crops.shape[0],), generator=generator)
    blurred = crops.new_empty(*crops.shape[:2], config.patch, config.patch)
    for index, name in enumerate(config.families):
        members = (family == index).nonzero().reshape(-1)
        if members.numel():
            params = draw_operators(name, members.numel(), config, generator)
            blurred[members] = blur_crops(name, crops[members], params, config.patch)
    return blurred, family


def draw_pairs(images, count: int, config: PairConfig, generator: torch.Generator, *,
               hard_negatives: int = 0) -> Pairs:
    """``count`` positive pairs from ``images`` (module docstring), everything drawn from ``generator``: the crops,
    then the families, then per family (in ``config.families`` order) its operators, then t, eps and the noise, then
    (``hard_negatives`` N > 0) the N - 1 other operators of each pair, one draw of B operators at a time.

    Args:
        images: sequence of (C, H, W) photos in [0, 1], each at least ``config.crop`` on both sides.
        count: B.
        config: :class:`PairConfig`.
        generator: a CPU generator.
        hard_negatives: N >= 0, hard negatives per pair and side.
    Returns:
        :class:`Pairs` (CPU, float32).
    """
    hard_negatives = _validate.integer("hard_negatives", hard_negatives, 0)
    crops = RandomPatches(images, config.crop, count, generator=generator).sample().patches * 2 - 1
    start = config.margin
    clean = crops[..., start:start + config.patch, start:start + config.patch].contiguous()
    blurred, family = _blur_draw(crops, config, generator)
    low, high = config.time_range
    t = low + (high - low) * torch.rand(count, generator=generator)
    eps = torch.randn(clean.shape, generator=generator)
    x_t = flow_interpolate(eps, clean, t)
    low, high = config.noise_range
    sigma = low + (high - low) * torch.rand(count, generator=generator)
    noise = sigma.reshape(-1, 1, 1, 1) * torch.randn(clean.shape, generator=generator)
    if not hard_negatives:
        return Pairs(clean, x_t, blurred + noise, t, family)
    others = [_blur_draw(crops, config, generator)[0] for _ in range(hard_negatives - 1)]
    y_negatives = torch.stack([clean + noise] + [other + noise for other in others], 1)
    x_negatives = torch.stack([flow_interpolate(eps, content, t) for content in [blurred] + others], 1)
    return Pairs(clean, x_t, blurred + noise, t, family, y_negatives, x_negatives)
