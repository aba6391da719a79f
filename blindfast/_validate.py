"""Checks of the plain arguments of the public API (counts, sizes, pairs, real numbers, flags, dtypes, generators,
paths), in one place so every function refuses bad input alike.

Each check returns the value in its canonical form and raises ``TypeError`` for a value of the wrong type and
``ValueError`` for a value of the right type outside its range, with a message that names the argument, what was
expected and what was got: ``grid must be two integers >= 1 (Gy, Gx), got (-2, 8)``. A bool is never taken for a
number (``True`` is an ``int`` to Python, but ``size=True`` is a mistake). Tensor arguments are checked where they
are used (:mod:`blindfast.ops._checks` for the ops' layouts); :func:`floating_tensor` serves the modules' inputs.
The ops check their scalars here too, also under ``torch.compile``, where a size may be a ``torch.SymInt``.
"""

from __future__ import annotations

import math
import numbers
import os

import torch

__all__ = ["integer", "positive_int", "nonnegative_int", "int_pair", "int_or_pair", "int_sequence", "real",
           "real_pair", "real_range", "boolean", "choice", "generator", "floating_dtype", "floating_tensor",
           "path_like", "device"]


def _is_integer(value) -> bool:
    """An int (not a bool), or the symbolic int of a size while ``torch.compile`` traces with dynamic shapes."""
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(name: str, value, least: int) -> int:
    """``value`` as an int >= ``least`` (a ``torch.SymInt`` stays symbolic: int() would specialise the trace).

    Raises:
        TypeError: not an integer (a float such as 2.5 or 2.0, a bool, a str, ...).
        ValueError: an integer below ``least``.
    """
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer >= {least}, got {type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value if isinstance(value, torch.SymInt) else int(value)


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (see :func:`integer`)."""
    return integer(name, value, 1)


def nonnegative_int(name: str, value) -> int:
    """``value`` as an int >= 0 (see :func:`integer`)."""
    return integer(name, value, 0)


def int_pair(name: str, value, layout: str, least: int = 1) -> tuple[int, int]:
    """``value``, a tuple, list or ``torch.Size`` of two integers >= ``least``, as a tuple; ``layout`` names them,
    e.g. "(Gy, Gx)".

    Raises:
        TypeError: not a sequence of two integers (a bare int, a str, floats, bools, ...).
        ValueError: an entry below ``least``.
    """
    expected = f"{name} must be two integers >= {least} {layout}"
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) != 2 or not all(map(_is_integer, value)):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    if min(value) < least:
        raise ValueError(f"{expected}, got {tuple(value)!r}")
    return int(value[0]), int(value[1])


def int_or_pair(name: str, value, layout: str, least: int = 1) -> tuple[int, int]:
    """``value``, one integer >= ``least`` (the same on both axes) or two of them (see :func:`int_pair`), as a
    pair; ``layout`` names them, e.g. "(kh, kw)".

    Raises:
        TypeError: neither an integer nor a sequence of two integers.
        ValueError: an integer below ``least``.
    """
    if isinstance(value, (tuple, list, torch.Size)):
        return int_pair(name, value, layout, least)
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer >= {least} or two of them {layout}, got {type(value).__name__} "
                        f"{value!r}")
    value = integer(name, value, least)
    return value, value


def int_sequence(name: str, value, least: int, *, empty: bool = False) -> tuple[int, ...]:
    """``value``, a tuple or list of integers >= ``least`` (non-empty unless ``empty``), as a tuple.

    Raises:
        TypeError: not a tuple or list of integers.
        ValueError: an entry below ``least``, or no entry when one is needed.
    """
    expected = f"{name} must be a {'' if empty else 'non-empty '}tuple of integers >= {least}"
    if not isinstance(value, (tuple, list)) or not all(map(_is_integer, value)):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    if (not value and not empty) or any(v < least for v in value):
        raise ValueError(f"{expected}, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def real(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> float:
    """``value``, a finite real number within the bounds (``low_open`` / ``high_open`` exclude an end), as a
    float.

    Raises:
        TypeError: not a real number (a str, a bool, a tensor, None, ...).
        ValueError: NaN, an infinity, or a number outside the bounds.
    """
    expected = " ".join(filter(None, (f"{name} must be a finite number", _bounds(low, high, low_open, high_open))))
    if not _is_real(value):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or (low is not None and (number <= low if low_open else number < low)) or \
            (high is not None and (number >= high if high_open else number > high)):
        raise ValueError(f"{expected}, got {value!r}")
    return number


def real_pair(name: str, value, layout: str) -> tuple[float, float]:
    """``value``, a tuple or list of two finite real numbers, as a tuple of floats; ``layout`` names them.

    Raises:
        TypeError: not a sequence of two real numbers.
        ValueError: an entry that is NaN or infinite.
    """
    expected = f"{name} must be two finite numbers {layout}"
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(map(_is_real, value)):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{expected}, got {tuple(value)!r}")
    return float(value[0]), float(value[1])


def real_range(name: str, value, least: float, *, open_below: bool = False) -> tuple[float, float]:
    """``value``, a pair (low, high) of finite numbers with ``least <= low <= high`` (``least < low`` when
    ``open_below``), as a tuple of floats.

    Raises:
        TypeError: not a sequence of two real numbers.
        ValueError: an entry that is not finite, low above high, or low below ``least``.
    """
    low, high = real_pair(name, value, "(low, high)")
    if (low <= least if open_below else low < least) or low > high:
        raise ValueError(f"{name} must be (low, high) with {least:g} {'<' if open_below else '<='} low <= high, "
                         f"got {tuple(value)!r}")
    return low, high


def boolean(name: str, value) -> bool:
    """``value`` if it is True or False.

    Raises:
        TypeError: anything else (1, "yes", None, ...).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the names ``choices``.

    Raises:
        TypeError: not a str.
        ValueError: a str that is not one of ``choices``.
    """
    names = [repr(c) for c in choices]
    expected = f"{name} must be {' or '.join(filter(None, (', '.join(names[:-1]), names[-1])))}"
    if not isinstance(value, str):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{expected}, got {value!r}")
    return value


def generator(name: str, value, *, optional: bool = True) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator``, or None when ``optional``.

    Raises:
        TypeError: anything else (a seed given as an int, ...).
    """
    if not isinstance(value, torch.Generator) and (value is not None or not optional):
        raise TypeError(f"{name} must be a torch.Generator{' or None' if optional else ''} (seed one with "
                        f"torch.Generator().manual_seed(seed)), got {type(value).__name__} {value!r}")
    return value


def floating_dtype(name: str, value) -> torch.dtype:
    """``value`` if it is a floating-point ``torch.dtype``.

    Raises:
        TypeError: a non-floating dtype, or not a dtype at all (a str such as "float32", ...).
    """
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype such as torch.float32, got {value!r}")
    return value


def floating_tensor(name: str, value, layout: str, ndim: int | None = None) -> torch.Tensor:
    """``value`` if it is a floating-point tensor with ``ndim`` dimensions (any, when None); ``layout`` names them,
    e.g. "(B, C, H, W)".

    Raises:
        TypeError: not a tensor, or an integer / bool / complex dtype.
        ValueError: another number of dimensions.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {value.dim()} dims: "
                         f"{tuple(value.shape)}")
    return value


def path_like(name: str, value) -> str:
    """``value``, a str or ``os.PathLike``, as a str.

    Raises:
        TypeError: anything else (None, an int, ...).
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (a str or os.PathLike), got {type(value).__name__} {value!r}")
    return os.fspath(value)


def device(name: str, value) -> torch.device:
    """``value``, a ``torch.device`` or a device string such as "cpu" or "cuda:0", as a ``torch.device``.

    Raises:
        TypeError: neither a device nor a str.
        ValueError: a str that names no device.
    """
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a torch.device or a device name such as 'cpu' or 'cuda:0', got "
                        f"{type(value).__name__} {value!r}")
    try:
        return torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda:0', got {value!r}") from None
