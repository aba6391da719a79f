"""argparse ``type=`` converters for numeric options: a bad value is refused by the parser itself, so the message
("argument --iters: must be a positive integer, got '-1'") stands under the command's own usage, exit status 2;
and :func:`read_npy`, the array file an option names. Below the command line, so that a blind method can declare
and read its own ``deblur`` options (``DeblurMethod.add_arguments``) with them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "fraction", "read_npy"]


def read_npy(path: str, option: str):
    """The array in the .npy file ``path`` that ``option`` names (``--kernel k.npy``), read without pickles.

    Raises:
        ValueError: no such file, or a file that is not a .npy array; the message starts with ``option path``.
    """
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{option} {path}: no such file")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{option} {path}: expected a .npy array, got an unreadable file ({err})") from None


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a finite number > 0")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a finite number >= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1): a dropout probability."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value
