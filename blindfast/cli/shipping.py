"""What the commands that train and ship a small network share (``train-kernel-denoiser``, ``train-cl``): the
``--export NAME`` checks before training, and the report after it (interrupted, or trained and exported)."""

from __future__ import annotations

import os
from collections.abc import Callable

from blindfast.cli.common import CommandError, print_table
from blindfast.cli.export_prior import in_source_checkout

__all__ = ["check_export", "finish_training"]


def check_export(name: str | None, export_dir: str | None) -> None:
    """``--export NAME`` is a file stem, and without ``--export-dir`` blindfast must be a source checkout (the
    package's own weights are written only there)."""
    from blindfast.models.shipped import NAME_PATTERN, WEIGHTS_DIR

    if name is None:
        return
    if not NAME_PATTERN.fullmatch(name):
        raise CommandError(f"--export NAME must match {NAME_PATTERN.pattern} (a file name without extension), got "
                           f"{name!r}")
    if export_dir is None and not in_source_checkout(WEIGHTS_DIR):
        raise CommandError(f"--export-dir is required: blindfast is installed at {WEIGHTS_DIR.parent}, not in a "
                           f"source checkout, and --export writes into the package's weights only in a checkout")


def finish_training(result, out: str, seen: str, export: Callable[[], tuple[dict, list]] | None,
                    export_dir: str | None) -> int:
    """Prints the run's table and returns the exit status: 130 for an interrupted run (its checkpoint holds the
    last completed step), else 0 after ``export() -> (manifest, rows measured on held-out data)`` when given.

    Args:
        result: the training's result (``nimg``, ``seconds``, ``checkpoint``, ``interrupted``).
        seen: what ``nimg`` counts ("kernels seen", "pairs seen").
    """
    from blindfast.models.shipped import WEIGHTS_DIR
    from blindfast.train.steps import LOG_NAME

    rows = [(seen, result.nimg), ("training time", f"{result.seconds:.0f} s"), ("checkpoint", result.checkpoint),
            ("log", os.path.join(out, LOG_NAME))]
    if result.interrupted:
        print_table(rows)
        print("interrupted: the checkpoint holds the last completed step; continue with --resume")
        return 130  # the shell's status for a run ended by SIGINT
    if export is not None:
        manifest, measured = export()
        folder = export_dir or WEIGHTS_DIR
        rows += measured + [("wrote", os.path.join(folder, manifest["weights"])),
                            ("manifest", os.path.join(folder, f"{manifest['name']}.json"))]
    print_table(rows)
    return 0
