"""Decimation by an integer factor, optionally after a blur: deepinv's ``Downsampling``."""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops._checks import DEFAULT_PADDING, check_tensor, resolve_padding
from blindfast.ops.sv_conv import output_size
from blindfast.physics.base import LinearOperator
from blindfast.physics.blur import Blur, check_kernel_fits, kernel_4d

__all__ = ["Downsample", "BlurDownsample"]


def decimate(x: Tensor, factor: int) -> Tensor:
    """``S x = x[..., ::factor, ::factor]``: keep pixel (0, 0) of each factor x factor block.

    Args:
        x: (B, C, H, W) with H, W divisible by ``factor``.
    Returns:
        (B, C, H / factor, W / factor)
    """
    return x[..., ::factor, ::factor]


def decimate_adjoint(y: Tensor, factor: int) -> Tensor:
    """``S^T y``: each pixel of ``y`` at (0, 0) of a factor x factor block of zeros.

    Args:
        y: (B, C, h, w)
    Returns:
        (B, C, h * factor, w * factor)
    """
    B, C, h, w = y.shape
    # (h, 1, w, 1) -> (h, f, w, f) with zeros after each pixel, then merged: differentiable, no in-place write
    blocks = torch.nn.functional.pad(y[:, :, :, None, :, None], (0, factor - 1, 0, 0, 0, factor - 1))
    return blocks.reshape(B, C, h * factor, w * factor)


def _check_divisible(blurred_hw: tuple[int, int], factor: int, image_hw: tuple[int, int], padding: str) -> None:
    if blurred_hw[0] % factor or blurred_hw[1] % factor:
        if padding == "valid":
            raise ValueError(f"the blurred size (H - kh + 1, W - kw + 1) = {tuple(blurred_hw)} must be divisible by "
                             f"factor {factor} for padding='valid', got image size {tuple(image_hw)}")
        raise ValueError(f"image size (H, W) must be divisible by factor {factor}, got {tuple(image_hw)}")


class BlurDownsample(LinearOperator):
    r"""Blur, then keep one pixel in ``factor`` along each axis: deepinv's ``Downsampling(filter=kernel, factor,
    padding)``.

    .. math:: y = S (k \ast x), \qquad (S z)_{ij} = z_{f i,\ f j}

    with :class:`Blur`'s convolution (kernel centre at index ``k//2``) and the decimation grid starting at pixel
    (0, 0), as deepinv's ``x[:, :, ::factor, ::factor]``. The blurred image (the image, or (H - kh + 1, W - kw + 1)
    for "valid") must have a size divisible by ``factor``, so the adjoint knows the image size from ``y``.

    Args:
        factor: decimation factor f >= 1.
        padding: the boundary (README, "Boundaries"): "circular", "zeros" (alias "constant"), "replicate"
            ("border"), "reflect" ("reflection") or "valid". Not given: "circular", with a FutureWarning, as the
            default becomes "reflect", every operator's default.
    Raises:
        TypeError: a factor that is not an int.
        ValueError: a factor < 1, an unknown padding.
    """

    params = ("kernel",)

    def __init__(self, factor: int, padding: str | None = None):
        self.factor = _validate.positive_int("factor", factor)
        self.padding = resolve_padding(padding, "BlurDownsample", "circular")
        self.blur = Blur(self.padding)

    def __repr__(self) -> str:
        return f"BlurDownsample(factor={self.factor}, padding={self.padding!r})"

    def A(self, x: Tensor, *, kernel: Tensor) -> Tensor:
        """Blur and decimate ``x``.

        Args:
            x: (B, C, H, W)
            kernel: (B|1, C|1, kh, kw) or (kh, kw), kh <= H, kw <= W.
        Returns:
            (B, C, H / f, W / f); for "valid", (B, C, (H - kh + 1) / f, (W - kw + 1) / f).
        Raises:
            TypeError, ValueError: as :meth:`Blur.A`; ValueError for a size not divisible by the factor.
        """
        kernel = kernel_4d(kernel, x, "x")
        check_kernel_fits(kernel, x.shape[-2:], self.padding)
        blurred_hw = output_size(tuple(x.shape[-2:]), tuple(kernel.shape[-2:]), self.padding)
        _check_divisible(blurred_hw, self.factor, x.shape[-2:], self.padding)
        return decimate(self.blur.A(x, kernel=kernel), self.factor)

    def A_adjoint(self, y: Tensor, *, kernel: Tensor) -> Tensor:
        """Exact transpose: ``k^T * (S^T y)``.

        Args:
            y: (B, C, h, w)
            kernel: (B|1, C|1, kh, kw) or (kh, kw).
        Returns:
            (B, C, f h, f w); for "valid", (B, C, f h + kh - 1, f w + kw - 1).
        Raises:
            TypeError, ValueError: as :meth:`Blur.A_adjoint`.
        """
        check_tensor("y", y, 4, "(B, C, h, w)")
        return self.blur.A_adjoint(decimate_adjoint(y, self.factor), kernel=kernel)


class Downsample(LinearOperator):
    r"""Decimation by an integer factor, optionally after a box anti-alias filter.

    .. math:: y = S (b_f \ast x) \quad (\text{filter="box"}), \qquad y = S x \quad (\text{filter=None})

    ``S`` keeps pixel (0, 0) of each f x f block (deepinv's ``x[:, :, ::f, ::f]``), and ``b_f`` is the f x f box
    ``1 / f^2`` applied as :class:`Blur` does (centre at index ``f//2``). So ``filter="box"`` equals deepinv's
    ``Downsampling(filter=torch.ones(1, 1, f, f) / f**2, factor=f, padding=padding)`` and ``filter=None`` equals
    ``Downsampling(filter=None, factor=f)``. The box averages the block a sampled pixel starts for f = 2; for odd f
    it is centred on the sampled pixel, for even f > 2 half a pixel after it.

    Args:
        factor: decimation factor f >= 1.
        filter: "box" (default) or None.
        padding: the box's boundary (README, "Boundaries"): "circular", "zeros" (alias "constant"), "replicate"
            ("border"), "reflect" ("reflection") or "valid"; unused without a filter. Not given: "circular", with a
            FutureWarning, as the default becomes "reflect", every operator's default (without a filter, "reflect"
            and no warning: nothing changes).
    Raises:
        TypeError: a factor that is not an int.
        ValueError: a factor < 1, an unknown filter or padding.
    """

    params = ()

    def __init__(self, factor: int, filter: str | None = "box", padding: str | None = None):
        self.factor = _validate.positive_int("factor", factor)
        if filter not in ("box", None):
            raise ValueError(f"filter must be 'box' or None, got {filter!r}")
        self.filter = filter
        if filter is None and padding is None:
            padding = DEFAULT_PADDING
        self.padding = resolve_padding(padding, "Downsample", "circular")
        self.blur_downsample = BlurDownsample(factor, self.padding)

    def __repr__(self) -> str:
        return f"Downsample(factor={self.factor}, filter={self.filter!r}, padding={self.padding!r})"

    def box(self, like: Tensor) -> Tensor:
        """The (f, f) box kernel ``1 / f^2`` in ``like``'s dtype and device."""
        return torch.full((self.factor, self.factor), 1.0 / self.factor**2, dtype=like.dtype, device=like.device)

    def A(self, x: Tensor) -> Tensor:
        """Decimate ``x``.

        Args:
            x: (B, C, H, W)
        Returns:
            (B, C, H / f, W / f); with the box and "valid", (B, C, (H - f + 1) / f, (W - f + 1) / f).
        Raises:
            TypeError: a non-tensor or unsupported dtype.
            ValueError: wrong dimensions, a size not divisible by the factor, a box larger than the image.
        """
        check_tensor("x", x, 4, "(B, C, H, W)")
        if self.filter is None:
            _check_divisible(x.shape[-2:], self.factor, x.shape[-2:], "zeros")
            return decimate(x, self.factor)
        return self.blur_downsample.A(x, kernel=self.box(x))

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Exact transpose of :meth:`A`.

        Args:
            y: (B, C, h, w)
        Returns:
            (B, C, f h, f w); with the box and "valid", (B, C, f h + f - 1, f w + f - 1).
        Raises:
            TypeError: a non-tensor or unsupported dtype.
            ValueError: wrong dimensions.
        """
        check_tensor("y", y, 4, "(B, C, h, w)")
        if self.filter is None:
            return decimate_adjoint(y, self.factor)
        return self.blur_downsample.A_adjoint(y, kernel=self.box(y))
