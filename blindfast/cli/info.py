"""``blindfast info``: the version, the compiled extension's build, threads, Triton and CUDA.

Exits 1 when the compiled extension cannot be imported: ``info`` is what one runs when the build is broken.
"""

from __future__ import annotations

import argparse
import platform
import sys

import blindfast
from blindfast.cli.common import add_command, print_table


def run(args: argparse.Namespace) -> int:
    import torch

    rows = [("blindfast", blindfast.__version__), ("python", platform.python_version())]
    extension_error = None
    try:
        from blindfast.ops import _backend

        extension = _backend.cpu()
        build = extension.build_info()
        rows += [("compiler", build["compiler"]),
                 ("cpu level", f"{build['level']} (this CPU runs: {', '.join(extension.supported_levels())}; "
                               f"${_backend.LEVEL_VARIABLE} forces a lower one)"),
                 ("simd", build["simd"]), ("openmp", build["openmp"]),
                 ("omp max threads", build["omp_max_threads"]), ("sanitizers", build["sanitizers"])]
    # OSError: a $BLINDFAST_C_PATH that names no file; ValueError: an unknown $BLINDFAST_CPU_LEVEL
    except (ImportError, OSError, ValueError) as err:
        extension_error = err
        rows.append(("extension", f"not importable: {err}"))
    rows += [("torch", torch.__version__), ("torch threads", torch.get_num_threads())]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except ImportError:
        rows.append(("triton", "not installed"))
    cuda = torch.cuda.is_available()
    rows.append(("cuda", f"available: {torch.cuda.get_device_name()}" if cuda else "not available"))
    print_table(rows)
    if extension_error is not None:
        print(f"blindfast info: error: the compiled extension cannot be imported ({extension_error}); "
              f"rebuild with `bash scripts/setup_env.sh` (or `pip install .`)", file=sys.stderr)
        return 1
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    add_command(commands, "info", run, help="version, build, threads, Triton and CUDA availability")
