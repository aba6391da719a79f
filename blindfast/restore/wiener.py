r"""Wiener / Tikhonov deconvolution of a uniform blur by FFT, in closed form.

.. math:: \hat x = \arg\min_x \|k * x - y\|^2 + \lambda \|R (x - z)\|^2, \qquad
          \hat X = \frac{\bar K\, Y + \lambda |\hat R|^2 Z}{|K|^2 + \lambda |\hat R|^2}

(Wiener 1949; Hunt 1973 for the regularised form), with capitals the 2-D DFTs, :math:`|\hat R|^2 = 1` for the
identity and :math:`(2 - 2\cos\omega_y) + (2 - 2\cos\omega_x)` for circular forward differences. A DFT product is a
circular convolution, so a photo, which does not wrap around, would ring at its edges. ``boundary="reflect"``
therefore solves on a canvas extended by the kernel size on each side, where only the photo's own pixels are data
(the margin is unknown): the margin starts as the photo's reflection tapered into its circular blur (MATLAB's
``edgetaper``), and each of ``boundary_iters`` rounds replaces it by the blur of the current estimate and solves
again in closed form. That is expectation-maximisation for the missing margin (Dempster, Laird & Rubin 1977): it
decreases the masked objective at every round. Measured on coffee 256^2, motion kernel 31x31, noise 0.01, lam 0.01,
gradient regulariser: 22.9 dB with the tapered margin alone, 25.5 after 10 rounds, 25.8 after 30 (CG on the
reflect-padded model, 300 iterations: 26.5).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.physics import Blur
from blindfast.restore.validation import check_blur_params, check_measurement, check_positive

__all__ = ["wiener", "BOUNDARIES", "DEFAULT_BOUNDARY_ITERS", "kernel_spectrum", "reflect_taper_extension"]

BOUNDARIES = ("reflect", "circular")


def kernel_spectrum(kernel: Tensor, hw: tuple[int, int]) -> Tensor:
    """The rfft2 of ``kernel`` zero-padded to ``hw`` with its centre ``(kh//2, kw//2)`` rolled to (0, 0), the
    centring of :class:`~blindfast.physics.Blur`.

    Args:
        kernel: (B|1, C|1, kh, kw), kh <= H, kw <= W.
        hw: (H, W).
    Returns:
        (B|1, C|1, H, W // 2 + 1) complex.
    """
    H, W = hw
    kh, kw = kernel.shape[-2:]
    padded = torch.nn.functional.pad(kernel, (0, W - kw, 0, H - kh))
    return torch.fft.rfft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), dims=(-2, -1)))


def _gradient_spectrum(hw: tuple[int, int], dtype: torch.dtype, device) -> Tensor:
    """|DFT of the circular forward differences|^2 summed over both axes: (H, W // 2 + 1)."""
    H, W = hw
    wy = 2 * torch.pi * torch.arange(H, dtype=dtype, device=device) / H
    wx = 2 * torch.pi * torch.arange(W // 2 + 1, dtype=dtype, device=device) / W
    return (2 - 2 * torch.cos(wy))[:, None] + (2 - 2 * torch.cos(wx))[None, :]


def _taper_ramp(length: int, margin: int, dtype: torch.dtype, device) -> Tensor:
    """(length,) weights: 0 at both ends rising linearly to 1 over ``margin`` samples (1 between)."""
    k = torch.arange(length, dtype=dtype, device=device)
    return (torch.minimum(k, length - 1 - k) / max(margin, 1)).clamp(max=1)


def reflect_taper_extension(y: Tensor, kernel: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """``y`` reflect-padded by the kernel size on each side, its margin blended into its circular blur.

    Args:
        y: (B, C, H, W); kernel: (B|1, C|1, kh, kw).
    Returns:
        the (B, C, H + 2 ph, W + 2 pw) extension and (ph, pw).
    """
    H, W = y.shape[-2:]
    ph, pw = min(kernel.shape[-2], H - 1), min(kernel.shape[-1], W - 1)
    extended = torch.nn.functional.pad(y, (pw, pw, ph, ph), mode="reflect")
    hw = extended.shape[-2:]
    blurred = torch.fft.irfft2(torch.fft.rfft2(extended) * kernel_spectrum(kernel, hw), s=hw)
    weight = _taper_ramp(hw[0], ph, y.dtype, y.device)[:, None] * _taper_ramp(hw[1], pw, y.dtype, y.device)
    return torch.lerp(blurred, extended, weight), (ph, pw)


# Rounds of the margin's EM (module docstring): 20 rounds cost 40 FFTs of the canvas and gain most of what 30 do.
DEFAULT_BOUNDARY_ITERS = 20


def wiener(y: Tensor, op: Blur, params: dict, *, lam: float, regulariser: str = "identity",
           z: Tensor | None = None, boundary: str | None = None,
           boundary_iters: int = DEFAULT_BOUNDARY_ITERS) -> Tensor:
    r"""The closed-form minimiser of the module docstring's problem, by FFT.

    Args:
        y: (B, C, H, W) the measurement.
        op: a :class:`~blindfast.physics.Blur` (not "valid": y and x share one grid).
        params: ``{"kernel": k}``, k (B|1, C|1, kh, kw) or (kh, kw).
        lam: the regularisation weight > 0 (for white noise of std sigma and an image prior of std s on R x:
            sigma^2 / s^2).
        regulariser: "identity" or "gradient".
        z: optional (B, C, H, W) the point the regulariser pulls towards (default 0): PnP's denoised estimate.
        boundary: "circular" (exact for a circular blur) or "reflect" (photos: reflective extension, tapered);
            default "circular" when ``op.padding`` is, else "reflect".
        boundary_iters: rounds of the margin's EM for "reflect".
    Returns:
        (B, C, H, W) the estimate (not clipped).
    Raises:
        TypeError: op not a Blur.
        ValueError: "valid" padding, lam <= 0, an unknown regulariser or boundary, bad kernels, z of another shape.
    """
    if not isinstance(op, Blur):
        raise TypeError(f"wiener needs a uniform blur (blindfast.physics.Blur), got {type(op).__name__}; use "
                        f"cg_tikhonov for other linear operators")
    if op.padding == "valid":
        raise ValueError("wiener needs a blur that keeps the image size, got padding='valid'")
    check_measurement(y)
    lam = check_positive("lam", lam)
    if regulariser not in ("identity", "gradient"):
        raise ValueError(f"regulariser must be 'identity' or 'gradient', got {regulariser!r}")
    boundary = boundary or ("circular" if op.padding == "circular" else "reflect")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    check_blur_params(op, params, y)
    if z is not None and z.shape != y.shape:
        raise ValueError(f"z must have the image's shape {tuple(y.shape)}, got {tuple(z.shape)}")
    kernel = params["kernel"]
    kernel = (kernel[None, None] if kernel.dim() == 2 else kernel).to(y.dtype)
    H, W = y.shape[-2:]
    ph = pw = 0
    canvas = y
    if boundary == "reflect":
        canvas, (ph, pw) = reflect_taper_extension(y, kernel)
        z = None if z is None else torch.nn.functional.pad(z, (pw, pw, ph, ph), mode="reflect")
    hw = canvas.shape[-2:]
    spectrum = kernel_spectrum(kernel, hw)
    penalty = lam * (_gradient_spectrum(hw, y.dtype, y.device) if regulariser == "gradient" else 1.0)
    denominator = spectrum.abs().square() + penalty
    prior_term = None if z is None else penalty * torch.fft.rfft2(z)
    rounds = boundary_iters if boundary == "reflect" else 0
    for round_ in range(rounds + 1):
        estimate = spectrum.conj() * torch.fft.rfft2(canvas)
        if prior_term is not None:
            estimate += prior_term
        estimate /= denominator
        if round_ == rounds:
            break
        canvas = torch.fft.irfft2(estimate * spectrum, s=hw)     # E-step: the margin the estimate predicts
        canvas[..., ph:ph + H, pw:pw + W] = y
    return torch.fft.irfft2(estimate, s=hw)[..., ph:ph + H, pw:pw + W].contiguous()
