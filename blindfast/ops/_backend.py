"""Where the compiled kernels come from: the C++ extension for the CPU, Triton for CUDA."""

from __future__ import annotations

import functools
import importlib


@functools.cache
def cpu():
    """The compiled extension ``blindfast._C``."""
    from blindfast import _C

    return _C


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_kernels(module: str):
    """``blindfast.triton_kernels.<module>``; a clear error when Triton is missing."""
    if not triton_available():
        raise RuntimeError("blindfast's CUDA kernels need Triton: pip install 'blindfast[triton]'")
    return importlib.import_module(f"blindfast.triton_kernels.{module}")
