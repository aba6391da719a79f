"""Where the compiled kernels come from: the C++ extension for the CPU, Triton for CUDA."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os


@functools.cache
def cpu():
    """The compiled extension ``blindfast._C``, or the build named by ``$BLINDFAST_C_PATH`` (the sanitizer build)."""
    path = os.environ.get("BLINDFAST_C_PATH")
    if not path:
        from blindfast import _C

        return _C
    spec = importlib.util.spec_from_file_location("blindfast._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
