r"""LatentDEM's data term on the valid interior only: for photos, whose blur is not circular (issue 16; README,
"The EM loop on photos: the boundary").

A photo of size (H, W) blurred by a (kh, kw) kernel has a border whose pixels mix in the scene beyond the frame; only
the interior, the pixels of ``Blur(padding="valid")``'s output, i.e. rows ``(kh - 1) // 2 .. H - 1 - kh // 2`` (the
kernel's centre at ``kh // 2``; the same for columns), depends on the framed image alone. There :math:`y = M (k \circledast x)` holds exactly for
the circular blur (or any other boundary) with :math:`M` the interior mask, whatever lies outside the frame. So:

- the E-step's likelihood uses :class:`InteriorBlur`, :math:`A x = M (k \circledast x)` (a size-keeping linear
  operator, so the EM loop takes it as it takes the circular blur), with the measurement masked alike;
- the M-step, :func:`interior_kernel_update`, is the HQS kernel update of :func:`blindfast.ops.hqs_kernel_update`
  with its data step solved on the interior instead of by the FFT (which needs the circular model):

  .. math:: Z = \arg\min_{Z} \sum_{i,c} \lVert M(y_c - Z \circledast \hat x_{ic})\rVert^2 + \alpha \lVert Z -
            \phi\rVert^2 = (G + \alpha I)^{-1} (b + \alpha \phi),

  with :math:`G = \sum_{i,c} P_{ic} P_{ic}^\top`, :math:`b = \sum_{i,c} P_{ic} y_c` over the (kh kw, L) patch
  matrices :math:`P_{ic}` of the samples (the interior's L pixels; the normal equations of the same least squares as
  FastEM's data step, Laroche et al. 2024, without its circular boundary), Z supported on the kernel's window
  (the FFT step solves on the whole image grid and then crops). :math:`G + \alpha I` is factored once per call
  (Cholesky), each of the ``iters`` iterations is two triangular solves, then the same clip, normalisation,
  denoiser and re-centring as the FFT update.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast.physics import Blur
from blindfast.physics.base import LinearOperator

__all__ = ["InteriorBlur", "interior_mask", "interior_kernel_update"]

_CIRCULAR = Blur(padding="circular")


def interior_mask(size: tuple[int, int], kernel_size: tuple[int, int], *, dtype=torch.float32, device=None) -> Tensor:
    """(H, W): 1 on the pixels a (kh, kw) blur computes from the (H, W) frame alone (``Blur(padding="valid")``'s
    output grid; the kernel's centre at ``(kh // 2, kw // 2)``), 0 on the border."""
    (height, width), (kh, kw) = size, kernel_size
    mask = torch.zeros(height, width, dtype=dtype, device=device)
    mask[_interior(height, kh), _interior(width, kw)] = 1.0
    return mask


def _interior(size: int, taps: int) -> slice:
    """The interior of an axis of ``size`` pixels under a blur of ``taps`` taps (module docstring)."""
    return slice((taps - 1) // 2, size - taps // 2)


class InteriorBlur(LinearOperator):
    r"""The blur on the valid interior only, size-keeping: :math:`A x = M (k \circledast x)` (module docstring), with
    its exact adjoint :math:`A^\top v = k^\top \circledast (M v)`. Params: ``kernel`` (kh, kw)."""

    params = ("kernel",)

    def A(self, x: Tensor, *, kernel: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), zero on the border."""
        return _CIRCULAR.A(x, kernel=kernel) * interior_mask(x.shape[-2:], kernel.shape[-2:], dtype=x.dtype,
                                                              device=x.device)

    def A_adjoint(self, y: Tensor, *, kernel: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mask = interior_mask(y.shape[-2:], kernel.shape[-2:], dtype=y.dtype, device=y.device)
        return _CIRCULAR.A_adjoint(y * mask, kernel=kernel)


def _normal_equations(x_hat: Tensor, y: Tensor, kernel_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``G`` (kh kw, kh kw) and ``b`` (kh kw,) of the interior data term (module docstring) for the kernel flattened
    row-major. x_hat: (n, C, H, W); y: (C, H, W)."""
    kh, kw = kernel_size
    n, channels = x_hat.shape[:2]
    # unfold's rows are the window's offsets (u, v) in order; Blur is a convolution, so tap (u, v) of the kernel
    # meets the offset (kh - 1 - u, kw - 1 - v): flip the offsets to index the taps.
    patches = F.unfold(x_hat.reshape(n * channels, 1, *x_hat.shape[-2:]), (kh, kw))  # (nC, kh kw, L)
    patches = patches.flip(1).transpose(0, 1).reshape(kh * kw, -1)  # (kh kw, nC L): one matmul for G
    target = y[:, _interior(y.shape[-2], kh), _interior(y.shape[-1], kw)]
    target = target.reshape(1, -1).expand(n, -1).reshape(-1)  # (nC L,)
    return patches @ patches.T, patches @ target


def _clip_normalise(z: Tensor) -> Tensor:
    """max(z, 0) / its sum; a centred delta when nothing is positive (as the FFT update's data step)."""
    z = z.clamp_min(0)
    total = z.sum()
    if total.item() > 0:
        return z / total
    delta = torch.zeros_like(z)
    delta[z.shape[0] // 2, z.shape[1] // 2] = 1.0
    return delta


def interior_kernel_update(x_hat: Tensor, y: Tensor, kernel: Tensor, *, sigma: float, delta: float, iters: int,
                           denoiser=None, lam: float = 1.0) -> Tensor:
    r"""The HQS kernel update with the data term on the valid interior (module docstring); the same arguments,
    alpha = n delta sigma^2, noise level sqrt(lam / delta) and result as :func:`blindfast.ops.hqs_kernel_update`.

    Args:
        x_hat: (n, C, H, W) posterior samples of the image.
        y: (C, H, W) the measurement (its border is not used).
        kernel: (kh, kw) the starting phi, kh <= H, kw <= W.
        sigma, delta, iters, denoiser, lam: as :func:`~blindfast.ops.hqs_kernel_update`.
    Returns:
        (kh, kw) the last data-step kernel Z: non-negative, sum 1, x_hat's dtype.
    """
    kh, kw = kernel.shape
    if x_hat.ndim != 4 or y.shape != x_hat.shape[1:] or kh > x_hat.shape[-2] or kw > x_hat.shape[-1]:
        raise ValueError(f"interior_kernel_update takes x_hat (n, C, H, W), y (C, H, W) and a kernel no larger "
                         f"than (H, W), got {tuple(x_hat.shape)}, {tuple(y.shape)} and {tuple(kernel.shape)}")
    x_hat, y, phi = x_hat.detach(), y.detach().to(x_hat.dtype), kernel.detach().to(x_hat.dtype)
    alpha = x_hat.shape[0] * delta * sigma**2
    gram, rhs = _normal_equations(x_hat, y, (kh, kw))
    factor = torch.linalg.cholesky(gram + alpha * torch.eye(kh * kw, dtype=gram.dtype, device=gram.device))
    noise_level = math.sqrt(lam / delta)
    for _ in range(iters):
        z = torch.cholesky_solve((rhs + alpha * phi.reshape(-1))[:, None], factor)[:, 0]
        z = _clip_normalise(z.reshape(kh, kw))
        if denoiser is None:
            phi = z
        else:
            phi = torch.ops.blindfast.hqs_recentre(denoiser(z[None, None], noise_level)[0, 0])
    return z
