"""Overlapped patch extraction with fused per-channel normalisation, and its adjoint, overlap-add.

CL-DPS scores the current estimate patch-wise with a contrastive encoder at every diffusion step: the patches are
cut, normalised with the encoder's per-channel statistics and laid out as a batch in one pass, and the gradient
flows back through the overlap-add in one pass.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import _backend
from blindfast.ops._checks import check_no_autograd, check_out, check_tensor

__all__ = ["overlap_add", "patch_centres", "patch_grid", "patchify"]


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def _grid(height: int, width: int, size: int, stride: int) -> tuple[int, int]:
    """(Ly, Lx) without checks (also on the SymInts of torch.compile)."""
    return (height - size) // stride + 1, (width - size) // stride + 1


def _check_grid(height: int, width: int, size: int, stride: int) -> None:
    """size and stride are ints >= 1, size <= min(H, W) (no int() on H, W: they may be SymInts)."""
    _validate.positive_int("size", size)
    _validate.positive_int("stride", stride)
    if size > height or size > width:
        raise ValueError(f"patch size {size} must fit in the image (size <= min(H, W)), got image size "
                         f"({height}, {width})")


def patch_grid(image_size, size: int, stride: int) -> tuple[int, int]:
    """Number of patches per column and per row: ``Ly = (H - size) // stride + 1``, ``Lx = (W - size) // stride + 1``.

    Args:
        image_size: H for a square image, or (H, W).
        size: patch side, 1 <= size <= min(H, W).
        stride: step between patches, >= 1 (stride > size leaves gaps).
    Returns:
        (Ly, Lx); L = Ly * Lx patches per image.
    """
    height, width = _validate.int_or_pair("image_size", image_size, "(H, W)")
    _check_grid(height, width, size, stride)
    return _grid(height, width, size, stride)


def patch_centres(image_size, size: int, stride: int, *, dtype: torch.dtype = torch.float32,
                  device=None) -> Tensor:
    """Pixel coordinates of the patch centres: patch ``l = py * Lx + px`` is centred at
    ``(py * stride + (size - 1) / 2, px * stride + (size - 1) / 2)`` (row, column; a half-integer for even sizes).

    Args:
        image_size: H for a square image, or (H, W).
        size, stride: as for :func:`patchify`.
        dtype, device: of the result.
    Returns:
        (L, 2) tensor of (row, column), in patchify's patch order.
    """
    ly, lx = patch_grid(image_size, size, stride)
    half = (size - 1) / 2
    rows = torch.arange(ly, dtype=dtype, device=device) * stride + half
    cols = torch.arange(lx, dtype=dtype, device=device) * stride + half
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(ly * lx, 2)


def _constants_dtype(like: Tensor) -> torch.dtype:
    """mean / std are kept in float32 for half-precision images (their rounding to 16 bits would bias every patch)."""
    return like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32


def _per_channel(name: str, values, like: Tensor, channels: int, positive: bool) -> Tensor | None:
    """None, a sequence of C floats or a (C,) tensor as a contiguous (C,) constant on ``like``'s device."""
    if values is None:
        return None
    dtype = _constants_dtype(like)
    if isinstance(values, Tensor):
        _check_constant_layout(name, values, like, channels)
        if not values.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {values.dtype}")
        # Data-dependent, so not traceable: torch.compile skips it (on CUDA it costs one synchronisation).
        if positive and not torch.compiler.is_compiling() and not bool((values > 0).all()):
            raise ValueError(f"{name} must be > 0 in every channel, got {values.tolist()}")
        return values.detach().to(dtype).contiguous()
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be None, a sequence of {channels} floats or a ({channels},) tensor, got "
                        f"{values!r}") from None
    if len(floats) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {len(floats)}: {floats}")
    if positive and not all(v > 0 for v in floats):
        raise ValueError(f"{name} must be > 0 in every channel, got {floats}")
    if torch.compiler.is_compiling():   # traced into the graph once; dynamo does not trace through lru_cache
        return torch.tensor(floats, dtype=dtype, device=like.device)
    return _device_constant(tuple(floats), dtype, like.device)


@functools.lru_cache(maxsize=64)
def _device_constant(floats: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """The (C,) constant of these floats on ``device``, made once: each host-to-device copy would synchronise the
    host with a GPU (a sampler step patchifies with the same normalisation every time). Read-only for its users."""
    return torch.tensor(floats, dtype=dtype, device=device)


def _check_constant_layout(name: str, values: Tensor, like: Tensor, channels: int) -> None:
    """A per-channel constant: shape (C,), on the image's device."""
    if values.shape != (channels,):
        raise ValueError(f"{name} must have one value per channel, shape ({channels},), got shape "
                         f"{tuple(values.shape)}")
    if values.device != like.device:
        raise ValueError(f"{name} must be on the image's device {like.device}, got {values.device}")


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _patch_shape(x_shape, size, stride) -> tuple:
    B, C, H, W = x_shape
    ly, lx = _grid(H, W, size, stride)
    return B * ly * lx, C, size, size


# ---------------------------------------------------------------------------------------------------------------
# Checkers of the ops: each op body (CPU and CUDA) and fake implementation calls its op's checker first, the public
# functions call it before they convert their arguments. The ops take (C,) constants of the image's dtype (float32
# for half images on CUDA) on its device, or None.


def _check_constants(like: Tensor, mean: Tensor | None, std: Tensor | None) -> None:
    for name, values in (("mean", mean), ("std", std)):
        if values is not None:
            channels = like.shape[1]
            check_tensor(name, values, 1, f"({channels},)", (_constants_dtype(like),))
            _check_constant_layout(name, values, like, channels)


def _check_patchify(x: Tensor, size: int, stride: int, mean: Tensor | None, std: Tensor | None) -> None:
    """The checker of patchify: x (B, C, H, W), 1 <= size <= min(H, W), stride >= 1, mean and std None or (C,)."""
    check_tensor("x", x, 4, "(B, C, H, W)")
    _check_grid(*x.shape[-2:], size, stride)
    _check_constants(x, mean, std)


def _check_patchify_out(x: Tensor, size: int, stride: int, mean: Tensor | None, std: Tensor | None,
                        out: Tensor) -> None:
    """The checker of patchify_out: patchify's, and out a contiguous (B * L, C, size, size) tensor like x."""
    _check_patchify(x, size, stride, mean, std)
    check_out(out, _patch_shape(x.shape, size, stride), x)


def _check_not_aliased(out: Tensor, x: Tensor) -> None:
    """Eager only: fake tensors have no storage to compare."""
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        raise ValueError("out must not share memory with x (patches overlap: the copy would read what it wrote)")


def _check_overlap_add(patches: Tensor, height: int, width: int, stride: int, std: Tensor | None) -> None:
    """The checker of overlap_add: patches (B * L, C, size, size), L = Ly * Lx patches of size <= min(height,
    width) per image, stride >= 1, std None or (C,)."""
    check_tensor("patches", patches, 4, "(B * L, C, size, size)")
    N, C, size, size_x = patches.shape
    if size != size_x:
        raise ValueError(f"patches must be square, shape (B * L, C, size, size), got shape {tuple(patches.shape)}")
    _validate.positive_int("height", height)
    _validate.positive_int("width", width)
    _check_grid(height, width, size, stride)
    ly, lx = _grid(height, width, size, stride)
    if N % (ly * lx) != 0:
        raise ValueError(f"patches must hold a multiple of L = {ly * lx} patches ({ly} x {lx} per "
                         f"{height} x {width} image, size {size}, stride {stride}), got {N}")
    _check_constants(patches, None, std)


# ---------------------------------------------------------------------------------------------------------------
# torch ops; the bodies make the inputs contiguous after the check.


def _patchify_into(x: Tensor, size: int, stride: int, mean: Tensor | None, std: Tensor | None, out: Tensor) -> None:
    x = x.contiguous()
    mean = mean.contiguous() if mean is not None else None
    std = std.contiguous() if std is not None else None
    if x.device.type == "cuda":
        _backend.triton_kernels("patchify").patchify(x, size, stride, mean, std, out)
        return
    _backend.cpu().patchify(x.data_ptr(), _ptr(mean), _ptr(std), out.data_ptr(), tuple(x.shape), size, stride,
                            x.dtype == torch.float64)


@torch.library.custom_op("blindfast::patchify", mutates_args=(), device_types=("cpu", "cuda"))
def _patchify(x: Tensor, size: int, stride: int, mean: Tensor | None, std: Tensor | None) -> Tensor:
    _check_patchify(x, size, stride, mean, std)
    patches = x.new_empty(_patch_shape(x.shape, size, stride))
    _patchify_into(x, size, stride, mean, std, patches)
    return patches


@torch.library.custom_op("blindfast::patchify_out", mutates_args=("out",), device_types=("cpu", "cuda"))
def _patchify_out(x: Tensor, size: int, stride: int, mean: Tensor | None, std: Tensor | None, out: Tensor) -> None:
    """Into a given contiguous ``out``: no allocation. A fresh patch batch's pages fault in on first write, which
    costs several times the copy itself (measured: ~25 ms vs ~2.5 ms for 66 MB on 2 cores)."""
    _check_patchify_out(x, size, stride, mean, std, out)
    _check_not_aliased(out, x)
    _patchify_into(x, size, stride, mean, std, out)


@torch.library.custom_op("blindfast::overlap_add", mutates_args=(), device_types="cpu")
def _overlap_add(patches: Tensor, height: int, width: int, stride: int, std: Tensor | None) -> Tensor:
    _check_overlap_add(patches, height, width, stride, std)
    patches = patches.contiguous()
    std = std.contiguous() if std is not None else None
    size = patches.shape[-1]
    ly, lx = _grid(height, width, size, stride)
    x = patches.new_empty(patches.shape[0] // (ly * lx), patches.shape[1], height, width)
    _backend.cpu().overlap_add(patches.data_ptr(), _ptr(std), x.data_ptr(), tuple(x.shape), size, stride,
                               patches.dtype == torch.float64)
    return x


@_overlap_add.register_kernel("cuda")
def _(patches, height, width, stride, std):
    _check_overlap_add(patches, height, width, stride, std)
    return _backend.triton_kernels("patchify").overlap_add(patches.contiguous(), height, width, stride,
                                                           std.contiguous() if std is not None else None)


@_patchify.register_fake
def _(x, size, stride, mean, std):
    _check_patchify(x, size, stride, mean, std)
    return x.new_empty(_patch_shape(x.shape, size, stride))


@_patchify_out.register_fake
def _(x, size, stride, mean, std, out):
    _check_patchify_out(x, size, stride, mean, std, out)
    return None


@_overlap_add.register_fake
def _(patches, height, width, stride, std):
    _check_overlap_add(patches, height, width, stride, std)
    ly, lx = _grid(height, width, patches.shape[-1], stride)
    return patches.new_empty(patches.shape[0] // (ly * lx), patches.shape[1], height, width)


# Autograd. P = patchify's linear part (x -> x / std, cut into patches) and P^T = overlap_add are each other's
# adjoints, so each is the other's backward (mean and std are constants); both backwards are ops with autograd,
# so gradients of every order work.


def _patchify_setup(ctx, inputs, output):
    x, ctx.size, ctx.stride, _, std = inputs
    ctx.image_hw = x.shape[-2:]
    ctx.save_for_backward(std)


def _patchify_backward(ctx, grad):
    (std,) = ctx.saved_tensors
    dx = _overlap_add(grad, *ctx.image_hw, ctx.stride, std) if ctx.needs_input_grad[0] else None
    return dx, None, None, None, None


def _overlap_add_setup(ctx, inputs, output):
    patches, _, _, ctx.stride, std = inputs
    ctx.size = patches.shape[-1]
    ctx.save_for_backward(std)


def _overlap_add_backward(ctx, grad):
    (std,) = ctx.saved_tensors
    dpatches = _patchify(grad, ctx.size, ctx.stride, None, std) if ctx.needs_input_grad[0] else None
    return dpatches, None, None, None, None


_patchify.register_autograd(_patchify_backward, setup_context=_patchify_setup)
_overlap_add.register_autograd(_overlap_add_backward, setup_context=_overlap_add_setup)


# ---------------------------------------------------------------------------------------------------------------
# Public functions


def patchify(x: Tensor, size: int, stride: int, *, mean=None, std=None, out: Tensor | None = None) -> Tensor:
    r"""Overlapped size x size patches of ``x``, normalised per channel, as a batch.

    .. math:: \mathrm{out}[b L + l,\ c,\ r,\ q]
              = \frac{x[b,\ c,\ p_y s + r,\ p_x s + q] - \mathrm{mean}_c}{\mathrm{std}_c}, \qquad l = p_y L_x + p_x

    with ``s = stride``, ``Ly = (H - size) // s + 1``, ``Lx = (W - size) // s + 1``, ``L = Ly * Lx``: F.unfold's
    patch order, so ``out.view(B, L, C, size, size)`` groups the patches by image. Pixels past the last patch (and
    in the gaps when stride > size) are not read. Differentiable w.r.t. ``x`` (the backward is
    :func:`overlap_add` with ``std``); ``mean`` and ``std`` are constants and get no gradient.

    Args:
        x: (B, C, H, W) images.
        size: patch side, 1 <= size <= min(H, W).
        stride: step between patches on both axes, >= 1.
        mean: None (0), a sequence of C floats or a (C,) tensor on x's device.
        std: None (1), a sequence of C floats > 0 or a (C,) tensor on x's device.
        out: optional contiguous (B * L, C, size, size) tensor of x's dtype and device that receives the patches
            (reused across calls, it saves the page faults of a fresh batch); no autograd.
    Returns:
        (B * L, C, size, size) patches (``out`` when given).
    """
    _check_patchify(x, size, stride, None, None)
    size, stride = int(size), int(stride)  # e.g. numpy integers: the op schema takes Python ints
    mean = _per_channel("mean", mean, x, x.shape[1], positive=False)
    std = _per_channel("std", std, x, x.shape[1], positive=True)
    if out is None:
        return _patchify(x, size, stride, mean, std)
    # before the dispatcher, which would refuse a non-tensor less clearly
    check_out(out, _patch_shape(x.shape, size, stride), x)
    check_no_autograd(out, (x,))
    _patchify_out(x, size, stride, mean, std, out)
    return out


def overlap_add(patches: Tensor, image_size, stride: int, *, std=None) -> Tensor:
    r"""Adjoint of patchify's linear part: every patch, divided by ``std[c]``, summed back into its place.

    .. math:: x[b, c, i, j] = \frac{1}{\mathrm{std}_c} \sum_{p_y, p_x:\ 0 \le i - p_y s < \mathrm{size},\
              0 \le j - p_x s < \mathrm{size}} \mathrm{patches}[b L + p_y L_x + p_x,\ c,\ i - p_y s,\ j - p_x s]

    Pixels that no patch covers are 0. ``overlap_add(patchify(x, k, s), x.shape[-2:], s)`` multiplies each pixel by
    the number of patches covering it (divide by ``overlap_add`` of ones to average). Differentiable w.r.t.
    ``patches`` (the backward is :func:`patchify` with ``std`` and no mean); ``std`` is a constant.

    Args:
        patches: (B * L, C, size, size) in patchify's order, L = Ly * Lx for ``image_size``, ``size`` and ``stride``.
        image_size: H for a square image, or (H, W).
        stride: the patches' stride, >= 1.
        std: None (1), a sequence of C floats > 0 or a (C,) tensor on the patches' device.
    Returns:
        (B, C, H, W) image.
    """
    height, width = _validate.int_or_pair("image_size", image_size, "(H, W)")
    _check_overlap_add(patches, height, width, stride, None)
    std = _per_channel("std", std, patches, patches.shape[1], positive=True)
    return _overlap_add(patches, height, width, int(stride), std)
