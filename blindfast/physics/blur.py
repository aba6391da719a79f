"""Space-invariant blur ``y = k * x``, computed by :func:`blindfast.ops.sv_conv` (a 1x1 PSF grid) or by FFTs."""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.ops import sv_conv
from blindfast.ops._checks import check_broadcast, check_same, check_tensor, resolve_padding
from blindfast.ops.sv_conv import image_size
from blindfast.physics.base import LinearOperator

__all__ = ["Blur"]

# The circular FFT path is taken by default from this many kernel taps on. Measured on this project's 2-core CPU,
# one thread, float32, a (1, 3, 256, 256) image, forward pass, best of 15 (sv_conv direct vs rfft2 path):
# 7x7 0.61 vs 1.55 ms, 11x11 1.15 vs 1.61 ms, 13x13 1.54 vs 1.53 ms, 15x15 1.76 vs 1.51 ms, 19x19 3.06 vs 1.17 ms.
# The FFT cost does not grow with the kernel while the direct cost grows with kh * kw: they cross at 13x13.
FFT_MIN_TAPS = 169


def kernel_4d(kernel: Tensor, x: Tensor, name_x: str) -> Tensor:
    """Check ``kernel`` against the image ``x`` and return it as (B|1, C|1, kh, kw).

    Args:
        kernel: (B|1, C|1, kh, kw), or (kh, kw) for one kernel shared by every image and channel.
        x: (B, C, H, W) the tensor the kernel is applied to (image or measurement).
        name_x: the name of ``x`` in error messages.
    Returns:
        (B|1, C|1, kh, kw) view of ``kernel``.
    Raises:
        TypeError: a non-tensor, an unsupported dtype, or dtypes that differ from ``x``'s.
        ValueError: a kernel that is neither 2-D nor 4-D, an empty kernel, batch / channel sizes that do not
            broadcast to ``x``'s, or tensors on different devices.
    """
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor of shape (B|1, C|1, kh, kw) or (kh, kw), "
                        f"got {type(kernel).__name__}")
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    if kernel.dim() != 4:
        raise ValueError(f"kernel must be (B|1, C|1, kh, kw) or (kh, kw), got shape {tuple(kernel.shape)}")
    check_tensor("kernel", kernel, 4, "(B|1, C|1, kh, kw)")
    check_tensor(name_x, x, 4, "(B, C, H, W)")
    check_same((name_x, "kernel"), (x, kernel))
    check_broadcast("kernel", kernel.shape[0], x.shape[0], "batch")
    check_broadcast("kernel", kernel.shape[1], x.shape[1], "channel")
    if min(kernel.shape[-2:]) < 1:
        raise ValueError(f"kernel must have kh, kw >= 1, got shape {tuple(kernel.shape)}")
    return kernel


def check_kernel_fits(kernel: Tensor, image_hw: tuple[int, int], padding: str) -> None:
    """Raise ValueError unless the (kh, kw) kernel is at most the (H, W) image in each axis."""
    kh, kw = kernel.shape[-2:]
    if kh > image_hw[0] or kw > image_hw[1]:
        raise ValueError(f"kernel size ({kh}, {kw}) must fit in the image, got image size {tuple(image_hw)} "
                         f"(padding={padding!r})")


def circular_conv_fft(x: Tensor, kernel: Tensor, *, adjoint: bool = False) -> Tensor:
    r"""Circular convolution through the real FFT, deepinv's ``conv2d(padding="circular")`` centring.

    .. math:: y = \mathcal F^{-1}\big(\mathcal F(x) \cdot \mathcal F(\tilde k)\big), \qquad
              \tilde k[m, n] = k[(m + k_h/\!/2) \bmod H,\ (n + k_w/\!/2) \bmod W]

    i.e. the kernel, zero-padded to (H, W), is rolled so its centre index ``(kh//2, kw//2)`` lands at (0, 0). The
    adjoint multiplies by the conjugate spectrum (a circular correlation).

    Args:
        x: (B, C, H, W)
        kernel: (B|1, C|1, kh, kw) with kh <= H, kw <= W.
        adjoint: apply the transpose instead.
    Returns:
        (B, C, H, W)
    """
    H, W = x.shape[-2:]
    kh, kw = kernel.shape[-2:]
    padded = torch.nn.functional.pad(kernel, (0, W - kw, 0, H - kh))
    spectrum = torch.fft.rfft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), dims=(-2, -1)))
    if adjoint:
        spectrum = spectrum.conj()
    return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=(H, W))


class Blur(LinearOperator):
    r"""Space-invariant blur, deepinv's ``Blur(filter, padding)``:

    .. math:: y_{ij} = \sum_{a, e} k[a, e]\; \operatorname{pad}(x)[i + k_h - 1 - a,\ j + k_w - 1 - e]

    a convolution (the kernel is flipped) whose "same" padding adds ``(k-1)//2`` before and ``k//2`` after along
    each axis, so the kernel centre is at index ``k//2``; ``"valid"`` pads nothing and shrinks the output.

    Two paths give the same operator: :func:`blindfast.ops.sv_conv` with a 1x1 PSF grid (direct; every padding),
    and, for ``"circular"`` padding, a product of real FFTs (:func:`circular_conv_fft`), whose cost does not grow
    with the kernel. Both are differentiable w.r.t. ``x`` and ``kernel``.

    Args:
        padding: the boundary (README, "Boundaries"): "circular", "zeros" (alias "constant"), "replicate"
            ("border"), "reflect" ("reflection") or "valid". Not given: "circular", with a FutureWarning, as the
            default becomes "reflect", every operator's default.
        fft: True forces the FFT path (needs "circular"), False the direct path; None takes the FFT path for
            circular padding and kernels of at least :data:`FFT_MIN_TAPS` taps.
    Raises:
        ValueError: an unknown padding, or ``fft=True`` with a padding other than "circular".
        TypeError: ``fft`` not a bool or None.
    """

    params = ("kernel",)

    def __init__(self, padding: str | None = None, fft: bool | None = None):
        self.padding = resolve_padding(padding, "Blur", "circular")
        if fft is not None and not isinstance(fft, bool):
            raise TypeError(f"fft must be True, False or None, got {type(fft).__name__}")
        if fft and self.padding != "circular":
            raise ValueError(f"fft=True needs padding='circular' (an FFT product is a circular convolution), "
                             f"got padding={self.padding!r}")
        self.fft = fft

    def __repr__(self) -> str:
        return f"Blur(padding={self.padding!r}, fft={self.fft})"

    def uses_fft(self, kernel: Tensor) -> bool:
        """Whether a kernel of this shape goes through the FFT path."""
        if self.fft is None:
            return self.padding == "circular" and kernel.shape[-2] * kernel.shape[-1] >= FFT_MIN_TAPS
        return self.fft

    def A(self, x: Tensor, *, kernel: Tensor) -> Tensor:
        """Blur ``x``.

        Args:
            x: (B, C, H, W) image.
            kernel: (B|1, C|1, kh, kw) or (kh, kw), with kh <= H and kw <= W.
        Returns:
            (B, C, H, W); (B, C, H - kh + 1, W - kw + 1) for "valid".
        Raises:
            TypeError: non-tensor input, unsupported or mixed dtypes.
            ValueError: wrong shapes, non-broadcastable batch / channel, a kernel larger than the image.
        """
        kernel = kernel_4d(kernel, x, "x")
        check_kernel_fits(kernel, x.shape[-2:], self.padding)
        if self.uses_fft(kernel):
            return circular_conv_fft(x, kernel)
        return sv_conv(x, kernel[:, :, None, None], padding=self.padding)

    def A_adjoint(self, y: Tensor, *, kernel: Tensor) -> Tensor:
        """Exact transpose of :meth:`A` for the same kernel and padding.

        Args:
            y: (B, C, Ho, Wo) measurement on A's output grid.
            kernel: (B|1, C|1, kh, kw) or (kh, kw).
        Returns:
            (B, C, H, W): (Ho, Wo), or (Ho + kh - 1, Wo + kw - 1) for "valid".
        Raises:
            TypeError, ValueError: as :meth:`A`.
        """
        kernel = kernel_4d(kernel, y, "y")
        check_kernel_fits(kernel, image_size(y.shape[-2:], kernel.shape[-2:], self.padding), self.padding)
        if self.uses_fft(kernel):
            return circular_conv_fft(y, kernel, adjoint=True)
        return sv_conv(y, kernel[:, :, None, None], padding=self.padding, adjoint=True)
