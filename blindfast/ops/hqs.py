r"""Half-quadratic-splitting (HQS) update of a blur kernel from posterior samples: the M-step of FastEM (Laroche et
al. 2024, "Fast Diffusion EM") and LatentDEM (Bai et al. 2024, "Blind Inversion using Latent Diffusion Priors").

The M-step of both papers estimates the kernel from samples :math:`\hat x_i` of the E-step,

.. math:: \phi^\star = \arg\min_\phi \frac{1}{n} \sum_i \frac{\lVert y - \phi \circledast \hat x_i\rVert^2}
          {2\sigma^2} + \lambda R(\phi),

split with an auxiliary :math:`z` and a penalty :math:`\frac{\delta}{2}\lVert z - \phi\rVert^2` (HQS). The data step
is a closed-form Fourier solve (FastEM's ``data_solution_deblur``; multiplied through by :math:`n\sigma^2`, whence
:math:`\alpha = n\delta\sigma^2`)

.. math:: Z = F^{-1}\Big[\frac{\sum_{i,c} \overline{X_{ic}} Y_c + \alpha F\phi_{pad}}
          {\sum_{i,c} |X_{ic}|^2 + \alpha}\Big]

cropped to the support, clipped at 0 and normalised; the prior step is a plug-and-play denoiser
:math:`\phi = D(Z, \sqrt{\lambda/\delta})` (FastEM's ``regularization_step``, noise level
:math:`\sqrt{\lambda/\beta}`). FastEM's code solves each channel separately and averages the results; here the
channels enter one least-squares problem (a kernel shared by the channels), the sums running over :math:`(i, c)`.

The fast form: :math:`\alpha` and the spectral sums are fixed within a call, so :math:`\hat Z = A + B\,F\phi_{pad}`
with :math:`A = num/(den + \alpha)`, :math:`B = \alpha/(den + \alpha)` and :math:`Z = a + b \circledast \phi_{pad}`
(:math:`a = F^{-1}A`, :math:`b = F^{-1}B`, real since the spectra are Hermitian and :math:`B` is real and even).
On the kernel support only a :math:`(2k_h - 1) \times (2k_w - 1)` window of :math:`b` is needed (taken with wrap-around,
which also covers images smaller than that window). One call makes the FFTs of the samples once, one pass of the
``hqs_combine`` kernel, one batched ``irfft2`` (a and b); each iteration is then the ``hqs_step`` kernel, a
:math:`(k_h k_w)^2` correlation independent of the image size, plus the denoiser and ``hqs_recentre`` when a denoiser
is given. Without a denoiser ``hqs_step`` runs all iterations in one call.

Re-centring. FastEM's and LatentDEM's code (``kernel_shift`` after ``HQS_ker``, once per M-step) move the centre of
mass of the final kernel to the centre with a cubic-spline sub-pixel shift, which leaves negative lobes and does not
keep the sum. Here the denoised kernel is re-centred at every iteration, where it becomes the next :math:`\phi`,
with the nearest integer shift: clip at 0, shift by :math:`\lfloor c - m + 1/2\rfloor` per axis (:math:`c` the centre
index, :math:`m` the centre of mass), zero fill, renormalise to sum 1. The translation ambiguity of blind
deconvolution is removed inside the splitting, the kernel stays a non-negative kernel of sum 1, and the operation is
exact (no interpolation).

The ops are not differentiable (the M-step is a closed-form arg min, not a layer): their outputs are marked
non-differentiable, so the result never requires grad.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import _backend
from blindfast.ops._checks import check_same, check_shape, check_tensor

__all__ = ["hqs_kernel_update", "hqs_spectral_terms"]


# ---------------------------------------------------------------------------------------------------------------
# Checkers of the ops. Each op body (CPU and CUDA) and fake implementation calls its op's checker first; the bodies
# then make the inputs contiguous. The ops compute in float32 / float64 on every device (hqs_kernel_update converts
# half inputs to float32 first).

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _check_alpha(what: str, alpha: float, dtype: torch.dtype) -> None:
    """``alpha`` is a positive normal number of ``dtype`` (a subnormal or infinite one makes B = alpha / (den +
    alpha) lose its precision or be NaN)."""
    _validate.real(what, alpha)
    info = torch.finfo(dtype)
    if not info.tiny <= alpha <= info.max:
        raise ValueError(f"{what} must be a positive normal number in {dtype} (>= {info.tiny:.3g}, <= "
                         f"{info.max:.3g}), got {alpha:.3g}")


def _check_non_empty(name: str, t: Tensor) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")


def _check_combine(x_spec: Tensor, y_spec: Tensor, alpha: float) -> None:
    """The checker of hqs_combine: interleaved spectra x_spec (n, C, H, Wr, 2) and y_spec (C, H, Wr, 2)."""
    check_tensor("x_spec", x_spec, 5, "(n, C, H, Wr, 2)", _KERNEL_DTYPES)
    check_tensor("y_spec", y_spec, 4, "(C, H, Wr, 2)", _KERNEL_DTYPES)
    check_same(("x_spec", "y_spec"), (x_spec, y_spec))
    _check_non_empty("x_spec", x_spec)
    if x_spec.shape[-1] != 2:
        raise ValueError(f"x_spec must hold (real, imaginary) pairs in its last dimension, shape (n, C, H, Wr, 2), "
                         f"got shape {tuple(x_spec.shape)}")
    check_shape("y_spec", y_spec, x_spec.shape[1:], "the shape (C, H, Wr, 2) of x_spec's spectra")
    _check_alpha("alpha", alpha, x_spec.dtype)


def _check_step(a_crop: Tensor, b_window: Tensor, phi: Tensor, iters: int) -> None:
    """The checker of hqs_step: phi and a_crop (kh, kw), b_window (2 kh - 1, 2 kw - 1), iters >= 1."""
    check_tensor("phi", phi, 2, "(kh, kw)", _KERNEL_DTYPES)
    check_tensor("a_crop", a_crop, 2, "(kh, kw)", _KERNEL_DTYPES)
    check_tensor("b_window", b_window, 2, "(2 kh - 1, 2 kw - 1)", _KERNEL_DTYPES)
    check_same(("a_crop", "b_window", "phi"), (a_crop, b_window, phi))
    _check_non_empty("phi", phi)
    kh, kw = phi.shape
    check_shape("a_crop", a_crop, (kh, kw), "the shape (kh, kw) of phi")
    check_shape("b_window", b_window, (2 * kh - 1, 2 * kw - 1), "the shape (2 kh - 1, 2 kw - 1) for phi's (kh, kw)")
    _validate.positive_int("iters", iters)


def _check_recentre(kernel: Tensor) -> None:
    """The checker of hqs_recentre: a non-empty (kh, kw) kernel."""
    check_tensor("kernel", kernel, 2, "(kh, kw)", _KERNEL_DTYPES)
    _check_non_empty("kernel", kernel)


# ---------------------------------------------------------------------------------------------------------------
# torch ops


@torch.library.custom_op("blindfast::hqs_combine", mutates_args=(), device_types="cpu")
def _hqs_combine(x_spec: Tensor, y_spec: Tensor, alpha: float) -> Tensor:
    """``[A, B]`` from the interleaved rfft2 spectra ``x_spec: (n, C, H, Wr, 2)`` and ``y_spec: (C, H, Wr, 2)``:
    ``(2, H, Wr, 2)``, ``A = sum conj(X) Y / (sum |X|^2 + alpha)`` and ``B = alpha / (sum |X|^2 + alpha) + 0i``."""
    _check_combine(x_spec, y_spec, alpha)
    x_spec, y_spec = x_spec.contiguous(), y_spec.contiguous()
    n, C, H, Wr, _ = x_spec.shape
    ab = x_spec.new_empty(2, H, Wr, 2)
    _backend.cpu().hqs_combine(x_spec.data_ptr(), y_spec.data_ptr(), ab.data_ptr(), n, C, H * Wr, alpha,
                               x_spec.dtype == torch.float64)
    return ab


@torch.library.custom_op("blindfast::hqs_step", mutates_args=(), device_types="cpu")
def _hqs_step(a_crop: Tensor, b_window: Tensor, phi: Tensor, iters: int) -> Tensor:
    """``iters`` data steps from ``phi: (kh, kw)``: ``Z = a_crop + b_window (x) phi``, clipped and normalised, each
    the next one's phi; returns the last ``Z: (kh, kw)``. ``b_window: (2kh - 1, 2kw - 1)``."""
    _check_step(a_crop, b_window, phi, iters)
    a_crop, b_window, phi = a_crop.contiguous(), b_window.contiguous(), phi.contiguous()
    kh, kw = phi.shape
    z = phi.new_empty(kh, kw)
    _backend.cpu().hqs_step(a_crop.data_ptr(), b_window.data_ptr(), phi.data_ptr(), z.data_ptr(), kh, kw, iters,
                            phi.dtype == torch.float64)
    return z


@torch.library.custom_op("blindfast::hqs_recentre", mutates_args=(), device_types="cpu")
def _hqs_recentre(kernel: Tensor) -> Tensor:
    """``kernel: (kh, kw)`` clipped at 0, its centre of mass moved to the centre by the nearest integer shift, zero
    filled, renormalised to sum 1 (a centred delta when nothing positive is left)."""
    _check_recentre(kernel)
    kernel = kernel.contiguous()
    out = torch.empty_like(kernel)
    _backend.cpu().hqs_recentre(kernel.data_ptr(), out.data_ptr(), *kernel.shape, kernel.dtype == torch.float64)
    return out


@_hqs_combine.register_kernel("cuda")
def _(x_spec, y_spec, alpha):
    _check_combine(x_spec, y_spec, alpha)
    return _backend.triton_kernels("hqs").hqs_combine(x_spec.contiguous(), y_spec.contiguous(), alpha)


@_hqs_step.register_kernel("cuda")
def _(a_crop, b_window, phi, iters):
    _check_step(a_crop, b_window, phi, iters)
    return _backend.triton_kernels("hqs").hqs_step(a_crop.contiguous(), b_window.contiguous(), phi.contiguous(),
                                                   iters)


@_hqs_recentre.register_kernel("cuda")
def _(kernel):
    _check_recentre(kernel)
    return _backend.triton_kernels("hqs").hqs_recentre(kernel.contiguous())


@_hqs_combine.register_fake
def _(x_spec, y_spec, alpha):
    _check_combine(x_spec, y_spec, alpha)
    return x_spec.new_empty(2, x_spec.shape[2], x_spec.shape[3], 2)


@_hqs_step.register_fake
def _(a_crop, b_window, phi, iters):
    _check_step(a_crop, b_window, phi, iters)
    return phi.new_empty(phi.shape)


@_hqs_recentre.register_fake
def _(kernel):
    _check_recentre(kernel)
    return kernel.new_empty(kernel.shape)


# Not differentiable: the outputs are marked so (no gradient flows, the result does not require grad) and the
# backward, which autograd therefore never needs, gives no input a gradient.
def _non_differentiable(ctx, inputs, output):
    ctx.mark_non_differentiable(output)


def _no_gradient(ctx, grad):
    return (None,) * len(ctx.needs_input_grad)


for _op in (_hqs_combine, _hqs_step, _hqs_recentre):
    _op.register_autograd(_no_gradient, setup_context=_non_differentiable)


class HqsKernels(NamedTuple):
    """The three kernels of the update: the torch ops by default; the tests pass the Triton launch helpers to run
    them on CPU tensors through the interpreter."""

    combine: Callable[[Tensor, Tensor, float], Tensor]
    step: Callable[[Tensor, Tensor, Tensor, int], Tensor]
    recentre: Callable[[Tensor], Tensor]


OPS = HqsKernels(_hqs_combine, _hqs_step, _hqs_recentre)


# ---------------------------------------------------------------------------------------------------------------
# The update


def _wrapped(offsets: range, size: int, device) -> Tensor:
    """Indices ``offset mod size`` of a circular axis."""
    return torch.remainder(torch.arange(offsets.start, offsets.stop, device=device), size)


def hqs_spectral_terms(x_hat: Tensor, y: Tensor, kernel_size: tuple[int, int], alpha: float,
                       combine=_hqs_combine) -> tuple[Tensor, Tensor]:
    """``a_crop: (kh, kw)`` and ``b_window: (2kh - 1, 2kw - 1)`` of one call (no input checks: see
    :func:`hqs_kernel_update`).

    ``a_crop[u, v] = a[(u - kh//2) mod H, (v - kw//2) mod W]`` and ``b_window[d + kh - 1, e + kw - 1] =
    b[d mod H, e mod W]`` for ``|d| < kh``, ``|e| < kw``, with ``a = irfft2(A)``, ``b = irfft2(B)``.

    Args:
        x_hat: (n, C, H, W); y: (C, H, W).
        kernel_size: (kh, kw).
        alpha: ``n * delta * sigma**2``.
        combine: the combine kernel (the torch op by default).
    """
    height, width = x_hat.shape[-2:]
    kh, kw = kernel_size
    x_spec = torch.view_as_real(torch.fft.rfft2(x_hat))
    y_spec = torch.view_as_real(torch.fft.rfft2(y))
    spectra = torch.view_as_complex(combine(x_spec, y_spec, alpha))
    a_full, b_full = torch.fft.irfft2(spectra, s=(height, width)).unbind(0)
    device = x_hat.device
    a_crop = a_full[_wrapped(range(-(kh // 2), kh - kh // 2), height, device)][
        :, _wrapped(range(-(kw // 2), kw - kw // 2), width, device)]
    b_window = b_full[_wrapped(range(1 - kh, kh), height, device)][:, _wrapped(range(1 - kw, kw), width, device)]
    return a_crop, b_window


def _check_finite(name: str, t: Tensor) -> None:
    # One reduction without temporaries (min and max propagate NaN): isfinite(t).all() allocates a mask and cost
    # more than the rest of a 256^2, n = 16 update here (4.7 ms against 0.17 ms).
    low, high = torch.aminmax(t)
    if not (math.isfinite(low.item()) and math.isfinite(high.item())):
        bad = (~torch.isfinite(t)).sum().item()
        raise ValueError(f"{name} must hold finite values, got {bad} NaN or infinite value(s) of {t.numel()}")


def _check(x_hat, y, kernel, sigma, delta, iters, denoiser, lam) -> None:
    check_tensor("x_hat", x_hat, 4, "(n, C, H, W)")
    check_tensor("y", y, 3, "(C, H, W)")
    check_tensor("kernel", kernel, 2, "(kh, kw)")
    check_same(("x_hat", "y", "kernel"), (x_hat, y, kernel))
    if min(x_hat.shape) < 1 or min(kernel.shape) < 1:
        raise ValueError(f"x_hat and kernel must be non-empty, got shapes {tuple(x_hat.shape)} and "
                         f"{tuple(kernel.shape)}")
    n, C, H, W = x_hat.shape
    if y.shape[0] != C:
        raise ValueError(f"y must have the C = {C} channels of x_hat {tuple(x_hat.shape)}, got {y.shape[0]} "
                         f"(y {tuple(y.shape)})")
    if tuple(y.shape[1:]) != (H, W):
        raise ValueError(f"y must have the image size (H, W) = {(H, W)} of x_hat, got {tuple(y.shape[1:])}")
    kh, kw = kernel.shape
    if kh > H or kw > W:
        raise ValueError(f"kernel size (kh, kw) must not exceed the image size (H, W) = {(H, W)}, got {(kh, kw)}")
    for name, value in (("sigma", sigma), ("delta", delta), ("lam", lam)):
        _validate.real(name, value, 0, low_open=True)
    _validate.positive_int("iters", iters)
    if denoiser is not None and not callable(denoiser):
        raise TypeError(f"denoiser must be None or a callable (z, noise_level) -> z, got {type(denoiser).__name__}")
    _check_alpha("n * delta * sigma**2", n * delta * sigma**2, _compute_dtype(x_hat.dtype))
    for name, t in (("x_hat", x_hat), ("y", y), ("kernel", kernel)):
        _check_finite(name, t)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs and kernels run in float32 for half inputs (cuFFT takes half only for powers of two, bfloat16 never)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _denoised(denoiser, z: Tensor, noise_level: float) -> Tensor:
    """``denoiser(z[None, None], noise_level)[0, 0]``, checked to be a tensor like the (1, 1, kh, kw) input."""
    out = denoiser(z[None, None], noise_level)
    expected = (1, 1, *z.shape)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected or out.dtype != z.dtype \
            or out.device != z.device:
        got = f"{tuple(out.shape)} {out.dtype} {out.device}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"denoiser must return a tensor of shape {expected}, {z.dtype} on {z.device} (like its "
                         f"input), got {got}")
    return out[0, 0]


def run_kernel_update(x_hat: Tensor, y: Tensor, kernel: Tensor, *, sigma: float, delta: float, iters: int,
                      denoiser=None, lam: float = 1.0, kernels: HqsKernels = OPS) -> Tensor:
    """:func:`hqs_kernel_update` with the given kernels and no input checks (the tests run the pipeline with the
    Triton launch helpers through it)."""
    alpha = x_hat.shape[0] * delta * sigma**2
    a_crop, b_window = hqs_spectral_terms(x_hat, y, tuple(kernel.shape), alpha, kernels.combine)
    if denoiser is None:
        return kernels.step(a_crop, b_window, kernel, iters)
    noise_level = math.sqrt(lam / delta)
    phi = kernel
    for _ in range(iters):
        z = kernels.step(a_crop, b_window, phi, 1)
        phi = kernels.recentre(_denoised(denoiser, z, noise_level))
    return z


def hqs_kernel_update(x_hat: Tensor, y: Tensor, kernel: Tensor, *, sigma: float, delta: float, iters: int,
                      denoiser: Callable[[Tensor, float], Tensor] | None = None, lam: float = 1.0) -> Tensor:
    r"""Blur-kernel update by half-quadratic splitting (the M-step of FastEM / LatentDEM), circular boundary.

    With :math:`\alpha = n\delta\sigma^2`, :math:`X_{ic} = F\hat x_{ic}`, :math:`Y_c = F y_c`, starting from
    :math:`\phi = ` ``kernel``, each of the ``iters`` iterations computes

    .. math:: Z = \mathrm{crop}\, F^{-1}\Big[\frac{\sum_{i,c} \overline{X_{ic}} Y_c + \alpha F\phi_{pad}}
              {\sum_{i,c} |X_{ic}|^2 + \alpha}\Big], \qquad Z \leftarrow \frac{\max(Z, 0)}{\sum\max(Z, 0)}

    (a delta at the centre when :math:`\max(Z, 0)` is all zero), then
    :math:`\phi = \mathrm{recentre}(D(Z, \sqrt{\lambda/\delta}))` with a denoiser :math:`D`, else :math:`\phi = Z`.
    ``phi_pad`` is the kernel zero-padded to (H, W) and rolled by ``(-(kh // 2), -(kw // 2))``: the blur model is
    ``y = sv_conv(x, k[None, None, None, None], padding="circular")``, kernel centre at ``(kh // 2, kw // 2)``.
    ``recentre`` clips at 0, moves the centre of mass to the centre by the nearest integer shift (zero fill) and
    renormalises to sum 1 (see the module docstring for how this differs from FastEM's final sub-pixel shift).

    The FFTs of the samples are made once per call; each iteration costs :math:`(k_h k_w)^2` multiply-adds whatever
    the image size. Not differentiable (the result never requires grad). CPU: float32 / float64; CUDA also
    float16 / bfloat16, computed in float32 and returned in the input dtype (the denoiser then sees float32).

    Args:
        x_hat: (n, C, H, W) posterior samples of the image.
        y: (C, H, W) observation.
        kernel: (kh, kw) initial kernel phi, kh <= H, kw <= W.
        sigma: noise standard deviation of y (> 0).
        delta: HQS penalty weight (> 0).
        iters: number of HQS iterations (>= 1).
        denoiser: optional kernel denoiser ``D(z, noise_level) -> z`` on (1, 1, kh, kw) tensors.
        lam: regularisation weight (> 0); the denoiser's noise level is ``sqrt(lam / delta)``.
    Returns:
        (kh, kw) the last data-step kernel Z: non-negative, sum 1.
    """
    _check(x_hat, y, kernel, sigma, delta, iters, denoiser, lam)
    dtype = _compute_dtype(x_hat.dtype)
    z = run_kernel_update(x_hat.detach().to(dtype), y.detach().to(dtype), kernel.detach().to(dtype), sigma=sigma,
                          delta=delta, iters=iters, denoiser=denoiser, lam=lam)
    return z.to(x_hat.dtype)
