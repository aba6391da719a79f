"""Input validation shared by the ops: one place, messages that name what was expected and what was got."""

from __future__ import annotations

import torch

PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
PADDING_CODES = {name: code for code, name in enumerate(PADDINGS)}  # same codes as csrc/padding.h

CPU_DTYPES = (torch.float32, torch.float64)
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t, ndim: int, layout: str) -> None:
    """``t`` is a floating tensor with ``ndim`` dimensions; ``layout`` names them, e.g. "(B, C, H, W)"."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {t.dim()} dims: {tuple(t.shape)}")
    allowed = GPU_DTYPES if t.device.type == "cuda" else CPU_DTYPES
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}) on {t.device.type}, got {t.dtype}")


def check_same(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """All tensors share one device and one dtype."""
    devices = {str(t.device) for t in tensors}
    if len(devices) > 1:
        got = ", ".join(f"{n} on {t.device}" for n, t in zip(names, tensors))
        raise ValueError(f"{', '.join(names)} must be on one device, got {got}")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        got = ", ".join(f"{n} {t.dtype}" for n, t in zip(names, tensors))
        raise TypeError(f"{', '.join(names)} must have one dtype, got {got}")


def check_padding(padding) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def check_broadcast(name: str, size: int, target: int, what: str) -> None:
    """A broadcastable leading dimension: ``size`` must be 1 or ``target``."""
    if size not in (1, target):
        raise ValueError(f"{name} {what} dimension must be 1 or {target}, got {size}")


def check_out(out, like: torch.Tensor, inputs) -> None:
    """An ``out=`` tensor: ``like``'s shape, dtype and device, contiguous, and no autograd through it."""
    if not isinstance(out, torch.Tensor) or out.shape != like.shape or out.dtype != like.dtype \
            or out.device != like.device:
        got = f"{tuple(out.shape)} {out.dtype} {out.device}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"out must be a tensor of {tuple(like.shape)} {like.dtype} {like.device}, got {got}")
    if not out.is_contiguous():
        raise ValueError(f"out must be contiguous, got strides {out.stride()} for shape {tuple(out.shape)}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (out, *inputs)):
        raise RuntimeError("out= does not support automatic differentiation: call without out (or under no_grad)")
