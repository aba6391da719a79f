"""Trainable parameterisations of blur operators: ``nn.Module``\\ s whose forward pass returns a kernel, a PSF grid or
a noise level, ready to be passed to the stateless operators (``Blur("reflect").A(x, kernel=module())``).

- :class:`DirectKernel`: one non-negative kernel per channel that sums to 1 (DDM's "direct" kernel, Meanti et al.
  2025, "Unsupervised Imaging Inverse Problems with Diffusion Distribution Matching").
- :class:`PSFGrid`: the same for every node of a (Gy, Gx) grid of PSFs, for :func:`blindfast.ops.sv_conv`.
- :class:`LinearConvNetKernel`: KernelGAN's deep linear generator (Bell-Kligler et al. 2019, "Blind Super-Resolution
  Kernel Estimation using an Internal-GAN", Sec. 3), a stack of bias-free convolutions that is one convolution.
- :class:`NoiseStd`: a positive noise standard deviation, learnt through its logarithm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from blindfast import _validate
from blindfast.ops._checks import CPU_DTYPES, check_same, check_tensor

__all__ = ["DirectKernel", "PSFGrid", "LinearConvNetKernel", "NoiseStd", "normalise_kernels",
           "linear_net_kernel_sizes"]


def normalise_kernels(raw: Tensor) -> Tensor:
    r"""Project raw weights onto kernels that are non-negative and sum to 1 over their last two axes:

    .. math:: k = \frac{|w|}{\max\big(\sum_{a, e} |w_{ae}|,\ \text{tiny}\big)}

    with ``tiny`` the smallest normal number of the dtype, so that a kernel whose weights are all exactly zero comes
    out as zeros instead of NaN (every other kernel sums to 1 exactly, up to rounding).

    ``|w|`` is computed as ``where(w >= 0, w, -w)``: the same values as ``abs`` but the derivative +1 at ``w = 0``,
    where ``torch.abs`` (and ``relu``) have 0. A delta kernel is a fixed point of the projection, and with a zero
    derivative its zero taps would never receive a gradient: a delta initialisation could never widen. abs rather
    than relu also keeps a weight that an optimiser pushed below zero alive (its tap grows again instead of dying),
    and rather than softplus or a softmax because those are positive everywhere and cannot represent a delta.

    Args:
        raw: (..., kh, kw) weights.
    Returns:
        (..., kh, kw) kernels.
    """
    magnitude = torch.where(raw >= 0, raw, -raw)
    total = magnitude.sum(dim=(-2, -1), keepdim=True)
    return magnitude / total.clamp_min(torch.finfo(raw.dtype).tiny)


def _kernel_size(size) -> tuple[int, int]:
    """``size`` (an int or a pair of ints, each >= 1) as (kh, kw)."""
    return _validate.int_or_pair("size", size, "(kh, kw)")


def _initial_kernels(init, shape: tuple[int, ...], init_sigma: float, layout: str) -> Tensor:
    """The initial kernels of ``shape`` (..., kh, kw), non-negative and summing to 1.

    "delta" puts all the mass on index (kh // 2, kw // 2), the centre of :class:`blindfast.physics.blur.Blur`'s
    kernels (so the operator starts as the identity); "gaussian" is an isotropic Gaussian of standard deviation
    ``init_sigma`` pixels about the same index, sampled at pixel centres; a tensor is checked (finite,
    non-negative, a positive sum per kernel, broadcastable to ``shape`` with the same (kh, kw), extra leading 1s
    dropped) and normalised. String inits use torch's
    default dtype; a tensor keeps its own dtype and device.
    """
    kh, kw = shape[-2:]
    if isinstance(init, Tensor):
        if not init.is_floating_point() or init.dtype not in CPU_DTYPES:
            raise TypeError(f"init must be a float32 or float64 tensor, got {init.dtype}")
        given = tuple(init.shape)
        while init.dim() > len(shape) and init.shape[0] == 1:
            init = init[0]
        if init.dim() > len(shape) or init.dim() < 2 or tuple(init.shape[-2:]) != shape[-2:] or \
                any(n not in (1, m) for n, m in zip(reversed(init.shape), reversed(shape))):
            raise ValueError(f"init must broadcast to {layout} = {shape} with the same (kh, kw), got {given}")
        init = init.detach().expand(shape)
        if not torch.isfinite(init).all():
            raise ValueError("init must be finite, got NaN or inf entries")
        if (init < 0).any():
            raise ValueError(f"init must be non-negative, got a minimum of {init.min().item():.3g}")
        sums = init.sum(dim=(-2, -1), keepdim=True)
        if (sums <= 0).any():
            raise ValueError(f"init must have a positive sum in every kernel, got {int((sums <= 0).sum())} "
                             f"kernel(s) summing to 0")
        return (init / sums).clone()
    if isinstance(init, str) and init == "delta":
        kernels = torch.zeros(shape)
        kernels[..., kh // 2, kw // 2] = 1
        return kernels
    if isinstance(init, str) and init == "gaussian":
        init_sigma = _validate.real("init_sigma", init_sigma, 0, low_open=True)
        rows = torch.arange(kh, dtype=torch.float64) - kh // 2
        cols = torch.arange(kw, dtype=torch.float64) - kw // 2
        gaussian = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * init_sigma ** 2))
        return (gaussian / gaussian.sum()).to(torch.get_default_dtype()).expand(shape).clone()
    if isinstance(init, str):
        raise ValueError(f"init must be 'delta', 'gaussian' or a tensor, got {init!r}")
    raise TypeError(f"init must be 'delta', 'gaussian' or a tensor, got {type(init).__name__} {init!r}")


class DirectKernel(nn.Module):
    r"""A blur kernel learnt tap by tap, one per channel: ``k_c = |w_c| / \sum |w_c|`` (:func:`normalise_kernels`).

    As DDM's direct kernel (Meanti et al. 2025), the raw weights are the parameters and every forward pass
    projects them, so the kernel is always non-negative and sums to 1; the initial kernel is stored normalised, a
    fixed point of the projection. "delta" and "gaussian" are centred on index (kh // 2, kw // 2), Blur's kernel
    origin, so they do not shift the image (for an even size that is half a pixel past the window's middle
    ``(kh - 1) / 2``, the default centre of :mod:`blindfast.physics.regularisers`).

    Args:
        size: kh, or (kh, kw).
        channels: C, one kernel per image channel (1 shares one kernel across channels).
        init: "delta" (identity blur), "gaussian" (std ``init_sigma``), or a tensor that broadcasts to
            (C, kh, kw), e.g. (kh, kw) for every channel alike or a (1, C, kh, kw) kernel; non-negative with a
            positive sum per kernel.
        init_sigma: standard deviation of the "gaussian" init, pixels.
    Raises:
        ValueError: a size or channel count below 1, an unknown init name, an init tensor of the wrong shape, not
            finite, negative or summing to 0, an init_sigma not finite and > 0.
        TypeError: a size or channel count that is not an integer (or size a pair of them), an init that is neither
            a str nor a tensor, an init tensor that is not float32 / float64, an init_sigma that is not a number.
    """

    def __init__(self, size: int | tuple[int, int], channels: int = 1, init: str | Tensor = "delta",
                 init_sigma: float = 1.0):
        super().__init__()
        kh, kw = _kernel_size(size)
        channels = _validate.positive_int("channels", channels)
        self.raw = nn.Parameter(_initial_kernels(init, (channels, kh, kw), init_sigma, "(C, kh, kw)"))

    def forward(self) -> Tensor:
        """The kernels.

        Returns:
            (1, C, kh, kw) non-negative, each channel summing to 1: ``Blur("reflect").A(x, kernel=module())``.
        """
        return normalise_kernels(self.raw).unsqueeze(0)

    def extra_repr(self) -> str:
        channels, kh, kw = self.raw.shape
        return f"size=({kh}, {kw}), channels={channels}"


class PSFGrid(nn.Module):
    r"""A (Gy, Gx) grid of PSFs learnt tap by tap, each node's kernel projected by :func:`normalise_kernels`.

    The node kernels are interpolated bilinearly by :func:`blindfast.ops.sv_conv` /
    :class:`blindfast.physics.space_varying.SpaceVaryingBlur` (DDM's space-varying lens model, Meanti et al.
    2025). With ``per_channel=False`` one grid is shared by every colour channel.

    Args:
        grid: (Gy, Gx) grid nodes.
        size: kh, or (kh, kw).
        channels: C, the colour channels of a per-channel grid (ignored, and taken as 1, when ``per_channel`` is
            False).
        per_channel: one grid per channel (True) or one for all (False).
        init: "delta", "gaussian" (std ``init_sigma``, every node alike), or a tensor that broadcasts to
            (C|1, Gy, Gx, kh, kw), e.g. the (1, C, Gy, Gx, kh, kw) output of
            :func:`blindfast.physics.lens.lens_psf_grid`; non-negative with a positive sum per node kernel.
        init_sigma: standard deviation of the "gaussian" init, pixels.
    Raises:
        ValueError: as :class:`DirectKernel`, and a grid below 1.
        TypeError: as :class:`DirectKernel`, a grid that is not two integers, and a per_channel that is not a bool.
    """

    def __init__(self, grid: tuple[int, int], size: int | tuple[int, int], channels: int = 3,
                 per_channel: bool = True, init: str | Tensor = "delta", init_sigma: float = 1.0):
        super().__init__()
        grid = _validate.int_pair("grid", grid, "(Gy, Gx)")
        _validate.boolean("per_channel", per_channel)
        kh, kw = _kernel_size(size)
        channels = _validate.positive_int("channels", channels) if per_channel else 1
        layout = "(C, Gy, Gx, kh, kw)" if per_channel else "(1, Gy, Gx, kh, kw) (per_channel=False)"
        self.raw = nn.Parameter(_initial_kernels(init, (channels, *grid, kh, kw), init_sigma, layout))

    def forward(self) -> Tensor:
        """The PSF grid.

        Returns:
            (1, C|1, Gy, Gx, kh, kw) non-negative, each node kernel summing to 1: ``sv_conv(x, module())``.
        """
        return normalise_kernels(self.raw).unsqueeze(0)

    def extra_repr(self) -> str:
        channels, gy, gx, kh, kw = self.raw.shape
        return f"grid=({gy}, {gx}), size=({kh}, {kw}), channels={channels}"


def linear_net_kernel_sizes(size: int) -> tuple[int, ...]:
    """Spatial kernel sizes of :class:`LinearConvNetKernel`'s layers before the 1x1s, whose receptive field
    ``1 + sum(k_i - 1)`` is exactly ``size``: a 7 (KernelGAN's first layer), then as many 5s as fit, then one 3 if
    2 pixels remain. Sizes under 7 start smaller: a single ``size`` x ``size`` layer (1 gives a 1x1 layer).
    Examples: 13 -> (7, 5, 3) (KernelGAN), 11 -> (7, 5), 9 -> (7, 3), 31 -> (7, 5, 5, 5, 5, 5, 5), 5 -> (5,).

    Raises:
        TypeError: a size that is not an integer.
        ValueError: a size that is not a positive odd int (odd layers only reach odd receptive fields).
    """
    if _validate.positive_int("size", size) % 2 == 0:
        raise ValueError(f"size must be a positive odd int (a stack of odd convolutions has an odd receptive "
                         f"field), got {size!r}")
    first = min(size, 7)
    rest = size - first                                            # even: both are odd
    return (first,) + (5,) * (rest // 4) + (3,) * (rest % 4 // 2)


class LinearConvNetKernel(nn.Module):
    r"""KernelGAN's deep linear generator (Bell-Kligler et al. 2019, Sec. 3): bias-free convolutions
    1 -> channels -> ... -> channels -> 1 with kernel sizes :func:`linear_net_kernel_sizes` (7, 5, ..., 3) then
    ``n_one_by_one`` 1x1 layers, and no nonlinearity, so the whole net is one convolution with the kernel
    :meth:`kernel` of exactly ``size`` x ``size`` taps (KernelGAN: size 13, layers 7, 5, 3, 1, 1, 1, 64 channels).
    The over-parameterisation changes the optimisation, not the model.

    :meth:`forward` applies the net to every channel of an image with "valid" padding, as KernelGAN does:

    .. math:: \text{forward}(x)_{b,c} = \big(k \ast x_{b,c}\big)_{\text{valid}}, \qquad
              y_{ij} = \sum_{a, e} k[a, e]\, x[i + s - 1 - a,\ j + s - 1 - e]

    a true convolution (``Blur("valid").A(x, kernel=k)``). ``torch.nn.functional.conv2d`` is a correlation, so each
    layer correlates; the composed correlation filter is ``k`` flipped in both axes.

    Initialisation: every layer's centre tap holds a fixed matrix whose product over the layers is 1 (the first
    layer's column and the last layer's row are ``1 / sqrt(channels)`` everywhere, the hidden ones the identity), so
    the net starts as the centred delta (the identity operator), plus i.i.d. ``N(0, init_noise^2)`` on every weight
    to break the symmetry between channels (without it all channels would stay equal for ever). A tap within the
    first layer's reach then deviates from the delta by about ``init_noise * sqrt(number of layers)`` (first order:
    each layer's noise is averaged by the unit vectors around it); taps further out only at second order,
    ``~ init_noise^2 sqrt(channels)`` per path (0.006 at most for size 13, 64 channels, init_noise 1e-2).

    Args:
        size: the kernel size s, odd (see :func:`linear_net_kernel_sizes`).
        channels: hidden width (KernelGAN: 64).
        n_one_by_one: number of 1x1 layers after the spatial ones (KernelGAN: 3).
        init_noise: standard deviation of the weight noise at initialisation (0 for an exact delta).
        generator: the source of that noise; None uses torch's global generator.
    Raises:
        TypeError: size, channels or n_one_by_one not an integer, init_noise not a number, a generator that is not
            a torch.Generator.
        ValueError: a size that is not a positive odd int, channels below 1, a negative n_one_by_one, a negative or
            non-finite init_noise.
    """

    def __init__(self, size: int, channels: int = 64, n_one_by_one: int = 3, init_noise: float = 1e-2,
                 generator: torch.Generator | None = None):
        super().__init__()
        spatial = linear_net_kernel_sizes(size)
        channels = _validate.positive_int("channels", channels)
        n_one_by_one = _validate.nonnegative_int("n_one_by_one", n_one_by_one)
        init_noise = _validate.real("init_noise", init_noise, 0)
        _validate.generator("generator", generator)
        self.size = size
        self.kernel_sizes = spatial + (1,) * n_one_by_one
        depth = len(self.kernel_sizes)
        widths = [1] + [channels] * (depth - 1) + [1]
        self.layers = nn.Sequential(*(nn.Conv2d(widths[i], widths[i + 1], k, bias=False)
                                      for i, k in enumerate(self.kernel_sizes)))
        self._init_weights(init_noise, generator)

    @torch.no_grad()
    def _init_weights(self, init_noise: float, generator: torch.Generator | None) -> None:
        for layer in self.layers:
            weight = layer.weight                                  # (out, in, k, k)
            out_ch, in_ch, k, _ = weight.shape
            if out_ch == in_ch:
                centre = torch.eye(out_ch)                         # hidden: identity (1x1 for a one-layer net)
            else:
                centre = torch.full((out_ch, in_ch), 1 / math.sqrt(max(out_ch, in_ch)))
            weight.copy_(init_noise * torch.randn(weight.shape, generator=generator))
            weight[:, :, k // 2, k // 2] += centre

    @property
    def receptive_field(self) -> int:
        """``1 + sum(k_i - 1)`` over the layers: the side of :meth:`kernel`, equal to ``size``."""
        return 1 + sum(k - 1 for k in self.kernel_sizes)

    def forward(self, x: Tensor) -> Tensor:
        """Blur every channel of ``x`` with :meth:`kernel`, "valid" padding.

        Args:
            x: (B, C, H, W) with H, W >= size, in the parameters' dtype and device.
        Returns:
            (B, C, H - size + 1, W - size + 1)
        Raises:
            TypeError: a non-tensor, an unsupported dtype or one that differs from the parameters'.
            ValueError: x not 4-D, smaller than the kernel, or on another device.
        """
        check_tensor("x", x, 4, "(B, C, H, W)")
        weight = self.layers[0].weight
        check_same(("x", "weights"), (x, weight))
        batch, channels, height, width = x.shape
        if height < self.size or width < self.size:
            raise ValueError(f"x must be at least the kernel size {self.size} in H and W ('valid' padding), "
                             f"got {height} x {width}")
        y = self.layers(x.reshape(batch * channels, 1, height, width))
        return y.reshape(batch, channels, *y.shape[-2:])

    def kernel(self) -> Tensor:
        """The net's effective convolution kernel: the net applied to a centred delta image of side ``2 s - 1``
        ("valid" output s x s). As ``y[i] = sum_a k[a] delta[i + s - 1 - a]`` with the delta at ``s - 1``, the
        output at ``i`` is ``k[i]``: the convolution kernel itself, not its flip.

        Returns:
            (s, s), differentiable w.r.t. the weights; not normalised (KernelGAN constrains its sum with
            :func:`blindfast.physics.regularisers.sum_to_one` instead).
        """
        weight = self.layers[0].weight
        side = 2 * self.size - 1
        delta = torch.zeros(1, 1, side, side, dtype=weight.dtype, device=weight.device)
        delta[..., self.size - 1, self.size - 1] = 1
        return self.layers(delta)[0, 0]

    def extra_repr(self) -> str:
        return f"size={self.size}, kernel_sizes={self.kernel_sizes}"


class NoiseStd(nn.Module):
    r"""A noise standard deviation kept positive by learning its logarithm: ``sigma = exp(log_sigma)``.

    Args:
        init: the initial sigma, > 0.
        learnable: a parameter (True) or a fixed buffer that still follows ``.to()`` (False).
    Raises:
        ValueError: an init that is not finite and > 0.
        TypeError: an init that is not a number, a learnable that is not a bool.
    """

    def __init__(self, init: float, learnable: bool = True):
        super().__init__()
        init = _validate.real("init", init, 0, low_open=True)
        _validate.boolean("learnable", learnable)
        log_sigma = torch.tensor(math.log(init))
        if learnable:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def forward(self) -> Tensor:
        """Returns: () tensor sigma > 0."""
        return self.log_sigma.exp()

    def extra_repr(self) -> str:
        return f"sigma={self.log_sigma.exp().item():.4g}, learnable={isinstance(self.log_sigma, nn.Parameter)}"
