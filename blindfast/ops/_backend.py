"""Where the compiled kernels come from: the C++ extension for the CPU, Triton for CUDA.

The extension is built once per instruction-set level (``blindfast._C_baseline``, ``_C_avx2``, ``_C_avx512`` on
x86-64; see CMakeLists.txt). :func:`cpu` asks the baseline module which levels this CPU runs and imports the best
of them, or the lower level named by ``$BLINDFAST_CPU_LEVEL``; a module is never imported on a CPU without its
level. A ``-march=native`` build (``BLINDFAST_NATIVE=ON``) has the one module ``_C_native``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings

LEVELS = ("baseline", "avx2", "avx512")  # lowest first, as the modules are named
LEVEL_VARIABLE = "BLINDFAST_CPU_LEVEL"


def choose_level(supported: list[str], forced: str | None) -> str:
    """The level to load: the best of ``supported``, or ``forced`` when set (at most the best supported).

    Args:
        supported: the levels the CPU runs and the build has, lowest first.
        forced: the value of ``$BLINDFAST_CPU_LEVEL`` (None or "" when unset).
    """
    if not forced:
        return supported[-1]
    if forced not in LEVELS:
        raise ValueError(f"${LEVEL_VARIABLE} must be one of {LEVELS}, got {forced!r}")
    if forced not in supported:
        warnings.warn(f"${LEVEL_VARIABLE}={forced} asks for a level this CPU or build lacks (it has {supported}); "
                      f"using {supported[-1]}", RuntimeWarning, stacklevel=3)
        return supported[-1]
    return forced


def _load_file(path: str):
    """The extension module at ``path`` (its name, e.g. ``_C_native``, is the file name's first part)."""
    name = "blindfast." + os.path.basename(path).split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ImportError(f"$BLINDFAST_C_PATH must name a blindfast extension module (.so), got {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def cpu():
    """The compiled extension for this CPU's level, or the build named by ``$BLINDFAST_C_PATH`` (e.g. the sanitizer
    build). Raises ImportError, naming what is missing, when no extension is built."""
    path = os.environ.get("BLINDFAST_C_PATH")
    if path:
        return _load_file(path)
    try:
        return importlib.import_module("blindfast._C_native")
    except ModuleNotFoundError:
        pass
    try:
        baseline = importlib.import_module("blindfast._C_baseline")
    except ModuleNotFoundError as err:
        raise ImportError("blindfast's compiled extension (blindfast._C_baseline) is not built: install blindfast "
                          "with `pip install .` (or `bash scripts/setup_env.sh`) and run Python outside the source "
                          "tree, or use the editable install it makes") from err
    built = [level for level in baseline.supported_levels()
             if importlib.util.find_spec(f"blindfast._C_{level}") is not None]
    level = choose_level(built, os.environ.get(LEVEL_VARIABLE))
    return baseline if level == "baseline" else importlib.import_module(f"blindfast._C_{level}")


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
