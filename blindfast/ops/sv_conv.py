"""Space-varying convolution with a bilinearly interpolated grid of PSFs (the lens model of DDM)."""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.ops import _backend
from blindfast.ops._checks import (PADDING_CODES, check_broadcast, check_padding, check_same, check_shape,
                                   check_tensor, resolve_padding)

__all__ = ["sv_conv", "output_size", "image_size"]


def output_size(image_hw: tuple[int, int], kernel_hw: tuple[int, int], padding: str) -> tuple[int, int]:
    """Spatial size of ``sv_conv``'s output for an image of ``image_hw`` and kernels of ``kernel_hw``."""
    if padding == "valid":
        return image_hw[0] - kernel_hw[0] + 1, image_hw[1] - kernel_hw[1] + 1
    return tuple(image_hw)


def image_size(output_hw: tuple[int, int], kernel_hw: tuple[int, int], padding: str) -> tuple[int, int]:
    """Inverse of :func:`output_size`: the image size whose output has ``output_hw``."""
    if padding == "valid":
        return output_hw[0] + kernel_hw[0] - 1, output_hw[1] + kernel_hw[1] - 1
    return tuple(output_hw)


def _check(x: Tensor, psf_grid: Tensor, padding: str, adjoint: bool) -> None:
    """The checker of sv_conv (``adjoint=False``, x is the image) and sv_conv_adjoint (``adjoint=True``, x is y on
    the output grid): the public function and both ops' bodies and fake implementations call it."""
    name = "y" if adjoint else "x"
    check_tensor(name, x, 4, "(B, C, H, W)")
    check_tensor("psf_grid", psf_grid, 6, "(B|1, C|1, Gy, Gx, kh, kw)")
    check_same((name, "psf_grid"), (x, psf_grid))
    check_padding(padding)
    B, C = x.shape[:2]
    check_broadcast("psf_grid", psf_grid.shape[0], B, "batch")
    check_broadcast("psf_grid", psf_grid.shape[1], C, "channel")
    Gy, Gx, kh, kw = psf_grid.shape[2:]
    if min(Gy, Gx, kh, kw) < 1:
        raise ValueError(f"psf_grid must have a non-empty grid and kernels, got shape {tuple(psf_grid.shape)}")
    img = image_size(x.shape[-2:], (kh, kw), padding) if adjoint else tuple(x.shape[-2:])
    if kh > img[0] or kw > img[1]:
        raise ValueError(f"kernel size ({kh}, {kw}) must fit in the image, got image size {tuple(img)} "
                         f"(padding={padding!r})")
    out = output_size(img, (kh, kw), padding)
    if Gy > out[0] or Gx > out[1]:
        raise ValueError(f"psf grid ({Gy}, {Gx}) must not exceed the output size {tuple(out)}: at most one grid "
                         f"node per output pixel")


def _check_grad_psf(x: Tensor, grad_y: Tensor, psf_grid: Tensor, padding: str) -> None:
    """The checker of sv_conv_grad_psf: ``x`` and ``psf_grid`` as for the forward, ``grad_y`` its output's shape."""
    _check(x, psf_grid, padding, adjoint=False)
    check_tensor("grad_y", grad_y, 4, "(B, C, Ho, Wo)")
    check_same(("x", "grad_y"), (x, grad_y))
    out_hw = output_size(x.shape[-2:], psf_grid.shape[-2:], padding)
    check_shape("grad_y", grad_y, (*x.shape[:2], *out_hw), "the shape of sv_conv(x, psf_grid)")


def _shapes(x_shape, psf_grid: Tensor) -> tuple[tuple, tuple]:
    return tuple(int(s) for s in x_shape), tuple(int(s) for s in psf_grid.shape)


# ---------------------------------------------------------------------------------------------------------------
# torch ops. Each body (CPU and CUDA) and each fake implementation calls the op's checker first, so a direct call of
# torch.ops.blindfast.* fails as clearly as the public function; the bodies then make the inputs contiguous.


@torch.library.custom_op("blindfast::sv_conv", mutates_args=(), device_types="cpu")
def _sv_conv(x: Tensor, psf_grid: Tensor, padding: str) -> Tensor:
    _check(x, psf_grid, padding, adjoint=False)
    x, psf_grid = x.contiguous(), psf_grid.contiguous()
    ho, wo = output_size(x.shape[-2:], psf_grid.shape[-2:], padding)
    y = x.new_empty(x.shape[0], x.shape[1], ho, wo)
    _backend.cpu().sv_conv_forward(x.data_ptr(), psf_grid.data_ptr(), y.data_ptr(), *_shapes(x.shape, psf_grid),
                                   PADDING_CODES[padding], x.dtype == torch.float64)
    return y


@torch.library.custom_op("blindfast::sv_conv_adjoint", mutates_args=(), device_types="cpu")
def _sv_conv_adjoint(y: Tensor, psf_grid: Tensor, padding: str) -> Tensor:
    _check(y, psf_grid, padding, adjoint=True)
    y, psf_grid = y.contiguous(), psf_grid.contiguous()
    h, w = image_size(y.shape[-2:], psf_grid.shape[-2:], padding)
    x = y.new_empty(y.shape[0], y.shape[1], h, w)
    _backend.cpu().sv_conv_adjoint(y.data_ptr(), psf_grid.data_ptr(), x.data_ptr(), *_shapes(x.shape, psf_grid),
                                   PADDING_CODES[padding], y.dtype == torch.float64)
    return x


@torch.library.custom_op("blindfast::sv_conv_grad_psf", mutates_args=(), device_types="cpu")
def _sv_conv_grad_psf(x: Tensor, grad_y: Tensor, psf_grid: Tensor, padding: str) -> Tensor:
    """Gradient of ``<sv_conv(x, psf_grid), grad_y>`` w.r.t. psf_grid (linear in x and grad_y, not in psf_grid)."""
    _check_grad_psf(x, grad_y, psf_grid, padding)
    x, grad_y = x.contiguous(), grad_y.contiguous()
    grad_psf = psf_grid.new_empty(psf_grid.shape)
    _backend.cpu().sv_conv_grad_psf(x.data_ptr(), grad_y.data_ptr(), grad_psf.data_ptr(), *_shapes(x.shape, psf_grid),
                                    PADDING_CODES[padding], x.dtype == torch.float64)
    return grad_psf


@_sv_conv.register_kernel("cuda")
def _sv_conv_cuda(x, psf_grid, padding):
    _check(x, psf_grid, padding, adjoint=False)
    kernels = _backend.triton_kernels("sv_conv")
    return kernels.sv_conv_forward(x.contiguous(), psf_grid.contiguous(), PADDING_CODES[padding])


@_sv_conv_adjoint.register_kernel("cuda")
def _sv_conv_adjoint_cuda(y, psf_grid, padding):
    _check(y, psf_grid, padding, adjoint=True)
    kernels = _backend.triton_kernels("sv_conv")
    return kernels.sv_conv_adjoint(y.contiguous(), psf_grid.contiguous(), PADDING_CODES[padding])


@_sv_conv_grad_psf.register_kernel("cuda")
def _sv_conv_grad_psf_cuda(x, grad_y, psf_grid, padding):
    _check_grad_psf(x, grad_y, psf_grid, padding)
    kernels = _backend.triton_kernels("sv_conv")
    return kernels.sv_conv_grad_psf(x.contiguous(), grad_y.contiguous(), psf_grid.contiguous(), PADDING_CODES[padding])


@_sv_conv.register_fake
def _(x, psf_grid, padding):
    _check(x, psf_grid, padding, adjoint=False)
    return x.new_empty(x.shape[0], x.shape[1], *output_size(x.shape[-2:], psf_grid.shape[-2:], padding))


@_sv_conv_adjoint.register_fake
def _(y, psf_grid, padding):
    _check(y, psf_grid, padding, adjoint=True)
    return y.new_empty(y.shape[0], y.shape[1], *image_size(y.shape[-2:], psf_grid.shape[-2:], padding))


@_sv_conv_grad_psf.register_fake
def _(x, grad_y, psf_grid, padding):
    _check_grad_psf(x, grad_y, psf_grid, padding)
    return psf_grid.new_empty(psf_grid.shape)


# Autograd. A = sv_conv(., h) is linear in x and in h:
#   forward  y = A_h x:     dx = A_h^T dy,  dh = grad_psf(x, dy)
#   adjoint  x = A_h^T y:   dy = A_h dx,    dh = grad_psf(dx, y)   (<A_h^T y, v> = <y, A_h v>)
#   grad_psf g = G(x, d):   bilinear, <G(x, d), v> = <A_v x, d>, so dx = A_v^T d and dd = A_v x.


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-1])
    ctx.padding = inputs[-1]


def _sv_conv_backward(ctx, grad):
    x, psf_grid = ctx.saved_tensors
    dx = _sv_conv_adjoint(grad, psf_grid, ctx.padding) if ctx.needs_input_grad[0] else None
    dh = _sv_conv_grad_psf(x, grad, psf_grid, ctx.padding) if ctx.needs_input_grad[1] else None
    return dx, dh, None


def _sv_conv_adjoint_backward(ctx, grad):
    y, psf_grid = ctx.saved_tensors
    dy = _sv_conv(grad, psf_grid, ctx.padding) if ctx.needs_input_grad[0] else None
    dh = _sv_conv_grad_psf(grad, y, psf_grid, ctx.padding) if ctx.needs_input_grad[1] else None
    return dy, dh, None


def _sv_conv_grad_psf_backward(ctx, grad):
    x, grad_y, _ = ctx.saved_tensors
    dx = _sv_conv_adjoint(grad_y, grad, ctx.padding) if ctx.needs_input_grad[0] else None
    dgy = _sv_conv(x, grad, ctx.padding) if ctx.needs_input_grad[1] else None
    return dx, dgy, None, None


_sv_conv.register_autograd(_sv_conv_backward, setup_context=_setup)
_sv_conv_adjoint.register_autograd(_sv_conv_adjoint_backward, setup_context=_setup)
_sv_conv_grad_psf.register_autograd(_sv_conv_grad_psf_backward, setup_context=_setup)


def sv_conv(x: Tensor, psf_grid: Tensor, *, padding: str | None = None, adjoint: bool = False) -> Tensor:
    r"""Convolution with a space-varying PSF bilinearly interpolated from a grid of kernels.

    .. math:: y_{ij} = \sum_{a,e} K_{ij}[a, e]\, x_p[i + k_h - 1 - a,\ j + k_w - 1 - e], \qquad
              K_{ij} = \sum_{n} w_n(i, j)\, h_n

    where ``x_p`` is ``x`` padded by ``(k-1)//2`` before and ``k//2`` after (deepinv's ``conv2d`` convention: the
    kernel centre is at index ``k//2``), and ``w_n`` are the tent (bilinear, ``align_corners=True``) weights of grid
    node ``n`` on the output grid: the corner nodes sit on the corner pixels, at most 4 nodes touch a pixel, and a
    1x1 grid is a uniform blur. The result equals deepinv's ``SpaceVaryingBlur(mask_first=False)`` given the same
    kernels and the tent multiplier maps. Differentiable w.r.t. ``x`` and ``psf_grid``.

    Args:
        x: (B, C, H, W) image; with ``adjoint=True``, (B, C, Ho, Wo) on the output grid.
        psf_grid: (B|1, C|1, Gy, Gx, kh, kw) kernels at the grid nodes (row-major, node (0, 0) top-left).
        padding: the boundary (README, "Boundaries"): "valid", "zeros" (alias "constant"), "replicate" ("border"),
            "reflect" ("reflection") or "circular". Not given: "zeros", with a FutureWarning, as the default
            becomes "reflect", every operator's default.
        adjoint: apply the exact adjoint (transpose) for the same padding instead.
    Returns:
        (B, C, H, W); (B, C, H - kh + 1, W - kw + 1) for "valid". With ``adjoint=True``, the image-grid shape.
    """
    padding = resolve_padding(padding, "sv_conv", "zeros")
    _check(x, psf_grid, padding, adjoint)
    if adjoint:
        return _sv_conv_adjoint(x, psf_grid, padding)
    return _sv_conv(x, psf_grid, padding)
