"""Power-function EMA of network weights (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", EDM2, Sec. 3.1 and App. C.2): a multi-tensor lerp in one pass, and the schedule that gives beta."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import _backend

__all__ = ["power_ema_update", "power_ema_gamma", "power_ema_beta"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def power_ema_gamma(std: float) -> float:
    r"""The exponent :math:`\gamma` of the power-function EMA with relative standard deviation ``std``: the real
    root of :math:`\gamma^3 + 7\gamma^2 + (16 - s^{-2})\gamma + (12 - s^{-2}) = 0` (EDM2, arXiv:2312.02696,
    App. C, Eq. 126 and Algorithm 2)."""
    # 1/sqrt(12) = 0.2887: the largest relative std any gamma > 0 reaches.
    std = _validate.real("std", std, 0, 0.2887, low_open=True, high_open=True)
    s2 = std**-2
    roots = np.roots([1.0, 7.0, 16.0 - s2, 12.0 - s2])
    return float(roots.real[np.abs(roots.imag) < 1e-9].max())


def power_ema_beta(nimg: int, batch: int, std: float) -> float:
    r""":math:`\beta = (1 - \text{batch}/\text{nimg})^{\gamma + 1}` for the update after ``nimg`` images
    (EDM2, App. C.2: the averaging profile stays :math:`\propto t^\gamma` when progress is counted in images)."""
    nimg, batch = _validate.positive_int("nimg", nimg), _validate.positive_int("batch", batch)
    return max(1.0 - batch / nimg, 0.0) ** (power_ema_gamma(std) + 1.0)


def _check(ema: Sequence[Tensor], tensors: Sequence[Tensor], beta: float) -> None:
    """The checker of power_ema_update (public function, op bodies, fake): pairs of tensors of one shape, dtype
    and device, all on one device, the EMA tensors floating and contiguous (written in place through their data
    pointers); beta in [0, 1]."""
    if len(ema) != len(tensors):
        raise ValueError(f"ema_tensors and tensors must pair up, got {len(ema)} and {len(tensors)} tensors")
    _validate.real("beta", beta, 0, 1)
    for i, (e, t) in enumerate(zip(ema, tensors)):
        if not isinstance(e, Tensor) or not isinstance(t, Tensor):
            raise TypeError(f"pair {i}: expected tensors, got {type(e).__name__} and {type(t).__name__}")
        if e.shape != t.shape or e.dtype != t.dtype or e.device != t.device:
            raise ValueError(f"pair {i}: the EMA tensor {tuple(e.shape)} {e.dtype} {e.device} must match the "
                             f"weight {tuple(t.shape)} {t.dtype} {t.device}")
        if e.device != ema[0].device:
            raise ValueError(f"pair {i}: all tensors must be on one device, got {e.device} and pair 0 on "
                             f"{ema[0].device}")
        if not e.is_contiguous():
            raise ValueError(f"pair {i}: the EMA tensor must be contiguous (it is updated in place), got strides "
                             f"{e.stride()} for shape {tuple(e.shape)}")
        if not e.is_floating_point():
            raise TypeError(f"pair {i}: EMA tensors must be floating point, got {e.dtype}")


@torch.library.custom_op("blindfast::power_ema_update", mutates_args=("ema",), device_types="cpu")
def _power_ema_update(ema: list[Tensor], tensors: list[Tensor], beta: float) -> None:
    _check(ema, tensors, beta)
    weight = 1.0 - beta
    for dtype in _KERNEL_DTYPES:
        pairs = [(e, t.contiguous()) for e, t in zip(ema, tensors) if e.dtype == dtype]
        if pairs:
            _backend.cpu().lerp_multi([e.data_ptr() for e, _ in pairs], [t.data_ptr() for _, t in pairs],
                                      [e.numel() for e, _ in pairs], weight, dtype == torch.float64)
    others = [(e, t) for e, t in zip(ema, tensors) if e.dtype not in _KERNEL_DTYPES]
    if others:  # reduced-precision weights on the CPU: torch's multi-tensor lerp
        torch._foreach_lerp_([e for e, _ in others], [t for _, t in others], weight)


@_power_ema_update.register_kernel("cuda")
def _(ema, tensors, beta):
    _check(ema, tensors, beta)
    _backend.triton_kernels("flow").lerp_(ema, [t.contiguous() for t in tensors], 1.0 - beta)


@_power_ema_update.register_fake
def _(ema, tensors, beta):
    _check(ema, tensors, beta)
    return None


@torch.no_grad()
def power_ema_update(ema_tensors: Sequence[Tensor], tensors: Sequence[Tensor], beta: float) -> None:
    r"""In place, for every pair: :math:`\hat\theta \leftarrow \beta\,\hat\theta + (1 - \beta)\,\theta`, one pass.

    Args:
        ema_tensors: the EMA copies (contiguous; updated in place).
        tensors: the current weights, pairwise of the same shape, dtype and device.
        beta: in [0, 1], e.g. from :func:`power_ema_beta`.
    """
    ema_tensors, tensors = list(ema_tensors), list(tensors)
    _check(ema_tensors, tensors, beta)
    if ema_tensors:
        _power_ema_update([e.detach() for e in ema_tensors], [t.detach() for t in tensors], float(beta))
