"""Fused flow-matching ops: the interpolant x_t and the training loss, one pass over memory each.

Convention, blindfast-wide: t = 0 is noise ``x0``, t = 1 is data ``x1``, ``x_t = (1 - t) x0 + t x1``, and the
velocity target is ``x1 - x0`` (rectified flow / conditional flow matching, Lipman et al. 2023, Eq. 22-23).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.ops import _backend
from blindfast.ops._checks import check_batched, check_no_autograd, check_out, check_same, check_shape, check_tensor

__all__ = ["flow_interpolate", "flow_matching_loss"]


def _rows(x: Tensor) -> tuple[int, int]:
    """(B, n): the batch size and the elements per batch item."""
    return x.shape[0], x.numel() // max(x.shape[0], 1)


def _check_pair(names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    for name, t in zip(names, (a, b)):
        check_batched(name, t)
    check_same(names, (a, b))
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def _check_per_batch(name: str, value: Tensor, like_name: str, like: Tensor) -> None:
    """``value`` is a (B,) tensor of ``like``'s dtype and device (B = like.shape[0])."""
    check_tensor(name, value, 1, f"({like.shape[0]},) (one per batch item)")
    check_same((like_name, name), (like, value))
    check_shape(name, value, like.shape[:1], f"one value per batch item of {like_name}, shape")


def _check_interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> None:
    """The checker of the flow_interpolate ops: x0, x1 of one shape (B, ...), t (B,), one dtype and device."""
    _check_pair(("x0", "x1"), x0, x1)
    _check_per_batch("t", t, "x0", x0)


def _check_loss(v: Tensor, x0: Tensor, x1: Tensor, weight: Tensor | None) -> None:
    """The checker of flow_matching_loss: v, x0, x1 of one shape (B, ...), weight None or (B,)."""
    _check_pair(("v", "x0"), v, x0)
    _check_pair(("v", "x1"), v, x1)
    if weight is not None:
        _check_per_batch("weight", weight, "v", v)


def _per_batch(name: str, value, like_name: str, like: Tensor) -> Tensor:
    """A float, a 0-dim tensor or a (B,) tensor as a (B,) tensor of ``like``'s dtype and device."""
    B = like.shape[0]
    if not isinstance(value, Tensor):
        return torch.full((B,), float(value), dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        value = value.expand(B)
    if value.shape != (B,):
        raise ValueError(f"{name} must be a float, a 0-dim tensor or of shape ({B},) (one per batch item), got "
                         f"shape {tuple(value.shape)}")
    check_same((like_name, name), (like, value))
    return value


def _first_order_only(name: str) -> None:
    """Refuses create_graph=True: the fused backward has no derivative of its own (a silent zero would be wrong)."""
    if torch.is_grad_enabled():
        raise NotImplementedError(f"{name} supports first-order gradients only (called with create_graph=True)")


# ---------------------------------------------------------------------------------------------------------------
# flow_interpolate. Each op body (CPU and CUDA) and fake implementation calls the op's checker first; the bodies
# then make the inputs contiguous.


def _flow_interpolate_into(x0: Tensor, x1: Tensor, t: Tensor, out: Tensor) -> None:
    x0, x1, t = x0.contiguous(), x1.contiguous(), t.contiguous()
    if x0.device.type == "cuda":
        _backend.triton_kernels("flow").flow_interpolate(x0, x1, t, out)
        return
    _backend.cpu().flow_interpolate(x0.data_ptr(), x1.data_ptr(), t.data_ptr(), out.data_ptr(), *_rows(x0),
                                    x0.dtype == torch.float64)


@torch.library.custom_op("blindfast::flow_interpolate", mutates_args=(), device_types=("cpu", "cuda"))
def _flow_interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    _check_interpolate(x0, x1, t)
    out = torch.empty_like(x0, memory_format=torch.contiguous_format)
    _flow_interpolate_into(x0, x1, t, out)
    return out


@torch.library.custom_op("blindfast::flow_interpolate_out", mutates_args=("out",), device_types=("cpu", "cuda"))
def _flow_interpolate_out(x0: Tensor, x1: Tensor, t: Tensor, out: Tensor) -> None:
    """Into a given contiguous ``out`` (may be x0 or x1): no allocation, whose page faults cost more than the
    interpolation itself for large tensors."""
    _check_interpolate_out(x0, x1, t, out)
    _flow_interpolate_into(x0, x1, t, out)


@torch.library.custom_op("blindfast::flow_interpolate_backward", mutates_args=(), device_types="cpu")
def _flow_interpolate_backward(grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor,
                               wanted: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(dx0, dx1, dt); an output that is not ``wanted`` is an empty tensor."""
    _check_interpolate_backward(grad, x0, x1, t, wanted)
    grad, x0, x1, t = grad.contiguous(), x0.contiguous(), x1.contiguous(), t.contiguous()
    dx0, dx1, dt = _interpolate_grads_like(grad, t, wanted)
    _backend.cpu().flow_interpolate_backward(grad.data_ptr(), x0.data_ptr(), x1.data_ptr(), t.data_ptr(),
                                             *(g.data_ptr() if w else 0 for g, w in zip((dx0, dx1, dt), wanted)),
                                             *_rows(x0), x0.dtype == torch.float64)
    return dx0, dx1, dt


def _check_interpolate_out(x0: Tensor, x1: Tensor, t: Tensor, out: Tensor) -> None:
    _check_interpolate(x0, x1, t)
    check_out(out, x0.shape, x0)


def _check_interpolate_backward(grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor, wanted: list[bool]) -> None:
    _check_interpolate(x0, x1, t)
    check_tensor("grad", grad, x0.dim(), "(B, ...)")
    check_same(("x0", "grad"), (x0, grad))
    check_shape("grad", grad, x0.shape, "the shape of x0")
    if len(wanted) != 3:
        raise ValueError(f"wanted must hold 3 flags (dx0, dx1, dt), got {len(wanted)}: {list(wanted)}")


def _interpolate_grads_like(grad: Tensor, t: Tensor, wanted) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs of the backward: empty (distinct, outputs must not alias) where not wanted."""
    return tuple(torch.empty_like(like, memory_format=torch.contiguous_format) if want else grad.new_empty(0)
                 for like, want in zip((grad, grad, t), wanted))


@_flow_interpolate_backward.register_kernel("cuda")
def _(grad, x0, x1, t, wanted):
    _check_interpolate_backward(grad, x0, x1, t, wanted)
    return _backend.triton_kernels("flow").flow_interpolate_backward(
        grad.contiguous(), x0.contiguous(), x1.contiguous(), t.contiguous(), wanted)


@_flow_interpolate.register_fake
def _(x0, x1, t):
    _check_interpolate(x0, x1, t)
    return torch.empty_like(x0, memory_format=torch.contiguous_format)


@_flow_interpolate_out.register_fake
def _(x0, x1, t, out):
    _check_interpolate_out(x0, x1, t, out)
    return None


@_flow_interpolate_backward.register_fake
def _(grad, x0, x1, t, wanted):
    _check_interpolate_backward(grad, x0, x1, t, wanted)
    return _interpolate_grads_like(grad, t, wanted)


def _interpolate_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _interpolate_backward(ctx, grad):
    _first_order_only("flow_interpolate")
    x0, x1, t = ctx.saved_tensors
    wanted = list(ctx.needs_input_grad)
    grads = _flow_interpolate_backward(grad, x0, x1, t, wanted)
    return tuple(g if w else None for g, w in zip(grads, wanted))


_flow_interpolate.register_autograd(_interpolate_backward, setup_context=_interpolate_setup)


def flow_interpolate(x0: Tensor, x1: Tensor, t, *, out: Tensor | None = None) -> Tensor:
    r"""The flow-matching interpolant :math:`x_t = (1 - t)\, x_0 + t\, x_1`, one pass.

    Differentiable w.r.t. ``x0``, ``x1`` and ``t`` (first order; the backward is one fused pass too).

    Args:
        x0: (B, ...) noise (t = 0).
        x1: (B, ...) data (t = 1), the shape of ``x0``.
        t: a float, a 0-dim tensor, or (B,): the time of each batch item.
        out: optional contiguous tensor like ``x0`` (may be ``x0`` or ``x1``) that receives the result; no autograd.
    Returns:
        (B, ...) ``x_t``.
    """
    _check_pair(("x0", "x1"), x0, x1)
    t = _per_batch("t", t, "x0", x0)
    if out is None:
        return _flow_interpolate(x0, x1, t)
    check_out(out, x0.shape, x0)  # before the dispatcher, which would refuse a non-tensor less clearly
    check_no_autograd(out, (x0, x1, t))
    _flow_interpolate_out(x0, x1, t, out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# flow_matching_loss


@torch.library.custom_op("blindfast::flow_matching_loss", mutates_args=(), device_types="cpu")
def _flow_matching_loss(v: Tensor, x0: Tensor, x1: Tensor, weight: Tensor | None,
                        compute_grad: bool) -> tuple[Tensor, Tensor]:
    """(loss, d loss / d v); the gradient is computed in the same pass when ``compute_grad``, else empty."""
    _check_loss(v, x0, x1, weight)
    v, x0, x1 = v.contiguous(), x0.contiguous(), x1.contiguous()
    weight = weight.contiguous() if weight is not None else None
    grad_v = torch.empty_like(v, memory_format=torch.contiguous_format) if compute_grad else v.new_empty(0)
    loss = _backend.cpu().flow_matching_loss(v.data_ptr(), x0.data_ptr(), x1.data_ptr(),
                                             weight.data_ptr() if weight is not None else 0,
                                             grad_v.data_ptr() if compute_grad else 0, *_rows(v),
                                             v.dtype == torch.float64)
    return v.new_tensor(loss), grad_v


@_flow_matching_loss.register_kernel("cuda")
def _(v, x0, x1, weight, compute_grad):
    _check_loss(v, x0, x1, weight)
    return _backend.triton_kernels("flow").flow_matching_loss(
        v.contiguous(), x0.contiguous(), x1.contiguous(), weight.contiguous() if weight is not None else None,
        compute_grad)


@_flow_matching_loss.register_fake
def _(v, x0, x1, weight, compute_grad):
    _check_loss(v, x0, x1, weight)
    grad_v = torch.empty_like(v, memory_format=torch.contiguous_format) if compute_grad else v.new_empty(0)
    return v.new_empty(()), grad_v


def _is_unit_eager_cpu(grad: Tensor) -> bool:
    """Whether ``grad`` is a plain CPU tensor equal to 1: reading its value costs no device sync, and a plain
    ``torch.Tensor`` (not a fake or functional tensor) means autograd runs eagerly, not under a tracer."""
    return type(grad) is torch.Tensor and grad.device.type == "cpu" and grad.numel() == 1 and grad.item() == 1.0


def _loss_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    # The gradient the forward pass wrote, kept as a plain attribute (detached: no reference cycle through its
    # grad_fn) so that the backward may hand it over to autograd once; see _loss_backward.
    ctx.grad_v = output[1].detach()


def _loss_backward(ctx, grad_loss, _grad_of_grad_v):
    _first_order_only("flow_matching_loss")
    v, x0, x1, weight = ctx.saved_tensors
    grad_v = ctx.grad_v
    if grad_v is None:  # handed over by an earlier backward through this (retained) graph: compute it again
        grad_v = torch.ops.blindfast.flow_matching_loss(v, x0, x1, weight, True)[1]
    if _is_unit_eager_cpu(grad_loss) and ctx.needs_input_grad[:3] in ((True, False, False), (False, True, False)):
        # loss.backward() seeds grad_loss = 1: give autograd the forward pass's gradient itself, not a scaled copy
        # (it becomes .grad without a copy). One 100 MB allocation and pass fewer at 8x3x1024^2 float32: forward
        # + backward 28 -> 20 ms on 2 threads (THP_MEM_ALLOC_ENABLE=1). Only for a single input: one tensor
        # returned for two would alias their .grad; and only once, since the caller may then change it in place.
        ctx.grad_v = None
        return (grad_v if ctx.needs_input_grad[0] else None, grad_v if ctx.needs_input_grad[1] else None,
                None, None, None)
    dv = grad_v * grad_loss
    # loss depends on v - (x1 - x0): d/dx0 = d/dv, d/dx1 = -d/dv.
    return (dv if ctx.needs_input_grad[0] else None, dv if ctx.needs_input_grad[1] else None,
            -dv if ctx.needs_input_grad[2] else None, None, None)


_flow_matching_loss.register_autograd(_loss_backward, setup_context=_loss_setup)


def flow_matching_loss(v: Tensor, x0: Tensor, x1: Tensor, weight: Tensor | None = None) -> Tensor:
    r"""Conditional flow-matching loss :math:`\frac{1}{B n}\sum_b w_b \lVert v_b - (x_{1,b} - x_{0,b})\rVert^2`.

    Forward and gradient in one pass (the gradient is written while the loss is summed, when any input requires
    grad; the backward only scales it by the incoming gradient). Differentiable w.r.t. ``v``, ``x0`` and ``x1``
    (first order); ``weight`` is a constant (e.g. a time-dependent loss weight).

    Args:
        v: (B, ...) predicted velocity.
        x0: (B, ...) noise, x1: (B, ...) data, the shape of ``v``.
        weight: optional (B,) per-sample weight.
    Returns:
        0-dim loss (the mean over all elements).
    """
    _check_pair(("v", "x0"), v, x0)
    _check_pair(("v", "x1"), v, x1)
    if weight is not None:
        weight = _per_batch("weight", weight, "v", v)
    compute_grad = torch.is_grad_enabled() and (v.requires_grad or x0.requires_grad or x1.requires_grad)
    return _flow_matching_loss(v, x0, x1, weight, compute_grad)[0]
