"""Input validation shared by the ops: one place, messages that name what was expected and what was got.

Every ``torch.ops.blindfast.*`` body calls its family's checker (built from these pieces) before it takes a data
pointer, and so does its fake implementation, so a raw op call fails as clearly as a call of the public function.
The checks read metadata only (dtype, device, shape, Python scalars): they cost microseconds and trace under
``torch.compile``. Scalars (counts, sizes, real numbers) are checked by :mod:`blindfast._validate`, the checker of
the whole public API, so an op and a module refuse a bad number with the same words.
"""

from __future__ import annotations

import warnings

import torch

# The boundary vocabulary, defined here once (README, "Boundaries"). Canonical names, what the raw ops take:
PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
PADDING_CODES = {name: code for code, name in enumerate(PADDINGS)}  # same codes as csrc/padding.h
# Other libraries' names for the same boundaries (deepinv's and F.pad's "constant", grid_sample's "border" and
# "reflection"); every public op and operator accepts them and works with the canonical name.
PADDING_ALIASES = {"constant": "zeros", "border": "replicate", "reflection": "reflect"}
# The one default of every op and operator (README, "Boundaries"): photos continue past their edges, so a
# deconvolution should neither darken the border ("zeros"), wrap the opposite edge in ("circular"), nor shrink the
# image ("valid"). An operator whose documented default is still another name warns until it changes.
DEFAULT_PADDING = "reflect"

CPU_DTYPES = (torch.float32, torch.float64)
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(name: str, t, ndim: int, layout: str, dtypes: tuple[torch.dtype, ...] | None = None) -> None:
    """``t`` is a floating tensor with ``ndim`` dimensions; ``layout`` names them, e.g. "(B, C, H, W)".

    ``dtypes``: the allowed dtypes; by default float32 / float64 on the CPU, also float16 / bfloat16 on CUDA."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {t.dim()} dims: {tuple(t.shape)}")
    allowed = dtypes if dtypes is not None else GPU_DTYPES if t.is_cuda else CPU_DTYPES
    if t.dtype not in allowed:
        raise TypeError(f"{name} must have dtype in ({_dtype_names(allowed)}) on {t.device.type}, got {t.dtype}")


def check_batched(name: str, t) -> None:
    """``t`` is a floating tensor of shape (B, ...): at least one dimension, the batch."""
    if isinstance(t, torch.Tensor) and t.dim() < 1:
        raise ValueError(f"{name} must be a tensor of shape (B, ...) (at least 1 dim), got a 0-dim tensor")
    check_tensor(name, t, t.dim() if isinstance(t, torch.Tensor) else 1, "(B, ...)")


def check_same(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """All tensors share one device and one dtype."""
    device, dtype = tensors[0].device, tensors[0].dtype
    if any(t.device != device for t in tensors):
        got = ", ".join(f"{n} on {t.device}" for n, t in zip(names, tensors))
        raise ValueError(f"{', '.join(names)} must be on one device, got {got}")
    if any(t.dtype != dtype for t in tensors):
        got = ", ".join(f"{n} {t.dtype}" for n, t in zip(names, tensors))
        raise TypeError(f"{', '.join(names)} must have one dtype, got {got}")


def check_shape(name: str, t: torch.Tensor, shape, what: str) -> None:
    """``t.shape == shape``; ``what`` names the expected shape, e.g. "the shape of x0"."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have {what} {tuple(shape)}, got {tuple(t.shape)}")


def check_padding(padding) -> None:
    """A canonical padding name, what the raw ops take (the public functions normalise aliases first)."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def padding_name(padding, owner: str, refused: dict[str, str] | None = None) -> str:
    """``padding``, a canonical name or an alias, as its canonical name.

    Args:
        padding: a name of :data:`PADDINGS` or a key of :data:`PADDING_ALIASES`.
        owner: the op or operator, named in error messages.
        refused: canonical names ``owner`` cannot do, each with the reason.
    Raises:
        ValueError: an unknown name, or one that ``owner`` refuses.
    """
    refused = refused or {}
    supported = tuple(name for name in PADDINGS if name not in refused)
    canonical = PADDING_ALIASES.get(padding, padding) if isinstance(padding, str) else padding
    if canonical not in PADDINGS:
        aliases = ", ".join(f"{alias!r} for {name!r}" for alias, name in PADDING_ALIASES.items() if name in supported)
        raise ValueError(f"{owner}: padding must be one of {supported} or an alias ({aliases}), got {padding!r}")
    if canonical in refused:
        raise ValueError(f"{owner}: padding must be one of {supported}, got {padding!r}: {refused[canonical]}")
    return canonical


def resolve_padding(padding, owner: str, documented_default: str, refused: dict[str, str] | None = None) -> str:
    """The canonical padding an op or operator uses: ``padding`` normalised by :func:`padding_name`, or, when the
    caller passed none (``None``), ``owner``'s documented default.

    While that default is not yet :data:`DEFAULT_PADDING`, using it emits a FutureWarning that names both and how
    to keep today's behaviour; the warning points at the caller of ``owner`` (two frames up). Not while
    ``torch.compile`` traces: Dynamo cannot trace ``warnings.warn``, and a ``fullgraph=True`` call would fail.

    Raises:
        ValueError: as :func:`padding_name`.
    """
    if padding is None:
        if documented_default != DEFAULT_PADDING and not torch.compiler.is_compiling():
            warnings.warn(f"{owner}'s default padding will change from {documented_default!r} to "
                          f"{DEFAULT_PADDING!r}, the one default of every blindfast operator; pass "
                          f"padding={documented_default!r} to keep today's boundary (or padding={DEFAULT_PADDING!r}) "
                          f"and silence this warning", FutureWarning, stacklevel=3)
        padding = documented_default
    return padding_name(padding, owner, refused)


def check_broadcast(name: str, size: int, target: int, what: str) -> None:
    """A broadcastable leading dimension: ``size`` must be 1 or ``target``."""
    if size not in (1, target):
        raise ValueError(f"{name} {what} dimension must be 1 or {target}, got {size}")


def check_out(out, shape, like: torch.Tensor) -> None:
    """An ``out=`` tensor: of ``shape``, ``like``'s dtype and device, contiguous (it is written through its data
    pointer; a copy would lose the result)."""
    expected = f"{tuple(shape)} {like.dtype} {like.device}"
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape) or out.dtype != like.dtype \
            or out.device != like.device:
        got = f"{tuple(out.shape)} {out.dtype} {out.device}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"out must be a tensor of {expected}, got {got}")
    if not out.is_contiguous():
        raise ValueError(f"out must be contiguous, got strides {out.stride()} for shape {tuple(out.shape)}")


def check_no_autograd(out: torch.Tensor, inputs) -> None:
    """Public ``out=`` calls: the ops' out= variants have no autograd formula (the op bodies run below autograd, so
    only the public functions can tell)."""
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                         for t in (out, *inputs)):
        raise RuntimeError("out= does not support automatic differentiation: call without out (or under no_grad)")
