"""The step loop the training runs share (:func:`blindfast.train.train_prior` and
:func:`blindfast.train.autoencoder.train_autoencoder`): seeds per stream, the CSV log, Ctrl-C held back while the
state changes, periodic checkpoints and the progress bar.

A run's randomness comes from generators it owns, each seeded by :func:`stream_seed` from (seed, stream, rank,
images seen), and from torch's default generators (dropout). :func:`run_steps` captures all their states after
every completed step; a KeyboardInterrupt rolls them back to that point, so the checkpoint of an interrupted run is
that of its last completed step and a resumed run repeats an uninterrupted one bit for bit on the CPU.
"""

from __future__ import annotations

import csv
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from blindfast.train.checkpoint import global_rng_states, set_global_rng_states

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "LOG_COLUMNS", "DATA_STREAM", "NOISE_STREAM", "DROPOUT_STREAM",
           "FIT_STREAM", "stream_seed", "capture_rng", "restore_rng", "sigint_deferred", "TrainingLog", "StepsResult",
           "run_steps"]

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.csv"
LOG_COLUMNS = ("nimg", "loss", "lr", "images_per_s")

# The generator streams: the data (patch positions), the noise (x0, times, the autoencoder's epsilon), torch's
# default generator per step (dropout), and the patches the autoencoder's scaling factor is fitted on.
DATA_STREAM, NOISE_STREAM, DROPOUT_STREAM, FIT_STREAM = 0, 1, 2, 3


def stream_seed(seed: int, stream: int, rank: int = 0, nimg: int = 0) -> int:
    """Independent 64-bit seeds per (seed, stream, rank, nimg) (numpy's SeedSequence hashes them apart; the tuple
    has a fixed length because SeedSequence ignores trailing zero words)."""
    return int(np.random.SeedSequence([seed, stream, rank, nimg]).generate_state(1, np.uint64)[0])


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, dict[str, Tensor]]:
    """The states of the run's generators and of torch's default ones (dropout)."""
    return {"run": {name: g.get_state() for name, g in generators.items()}, "global": global_rng_states()}


def restore_rng(generators: dict[str, torch.Generator], states: dict) -> None:
    """Sets the generators, and torch's default ones, back to :func:`capture_rng`'s ``states``."""
    for name, g in generators.items():
        g.set_state(states["run"][name])
    set_global_rng_states(states["global"])


@contextmanager
def sigint_deferred():
    """Holds back Ctrl-C while the state changes (optimiser step, EMA, counters), then delivers it: an interrupt
    can only land where the state is consistent. Signals can be caught only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, received[0])


class TrainingLog:
    """The CSV log (:data:`LOG_COLUMNS`), one row per step, flushed at once; on resume, rows past the checkpoint's
    ``nimg`` (written before a crash) and rows cut short are dropped."""

    def __init__(self, path: Path, nimg: int, resume: bool):
        rows = []
        if resume and path.exists():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    row_nimg = _row_nimg(row)
                    if row_nimg is not None and row_nimg <= nimg:
                        rows.append(row)
        self.file = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_COLUMNS)
        self.writer.writeheader()
        self.writer.writerows({key: row[key] for key in LOG_COLUMNS} for row in rows)
        self.file.flush()

    def write(self, nimg: int, loss: float, lr: float, images_per_s: float) -> None:
        self.writer.writerow({"nimg": nimg, "loss": repr(loss), "lr": repr(lr), "images_per_s": f"{images_per_s:.1f}"})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _row_nimg(row: dict) -> int | None:
    """The nimg of a log row, None for a damaged row (a line cut short by a crash)."""
    try:
        return int(row["nimg"]) if all(row.get(key) not in (None, "") for key in LOG_COLUMNS) else None
    except ValueError:
        return None


class StepsResult(NamedTuple):
    """What :func:`run_steps` leaves.

    Attributes:
        nimg: images trained on after the last completed step.
        interrupted: True when a KeyboardInterrupt stopped the steps before ``total_nimg``.
        unsaved: True when no checkpoint holds the state after ``nimg`` images yet.
    """
    nimg: int
    interrupted: bool
    unsaved: bool


def run_steps(*, nimg: int, total_nimg: int, batch: int, step: Callable[[int], float], commit: Callable[[int], float],
              save: Callable[[int], None], generators: dict[str, torch.Generator], log_path: Path | None,
              resume: bool, snapshot_nimg: int = 0, callback: Callable[[int, float], None] | None = None,
              progress: bool = True) -> StepsResult:
    """Runs training steps of ``batch`` images from ``nimg`` until ``total_nimg``.

    Each step calls ``loss = step(nimg)`` (draw a batch, accumulate the gradients; nimg is the count before the
    step), then, with Ctrl-C held back, ``lr = commit(nimg + batch)`` (apply the update; it returns the learning rate
    for the log), counts the images, captures the generators' states and writes the log row. Then the progress
    bar, ``callback(nimg, loss)`` and, when the count passes a multiple of ``snapshot_nimg``, ``save(nimg)``.

    A KeyboardInterrupt (Ctrl-C, or raised by ``step`` or ``callback``) ends the steps with the generators set back
    to the last completed step; the caller discards the abandoned step's gradients and saves if ``unsaved``.

    Args:
        nimg: images seen before the first step (0, or the resumed checkpoint's count).
        total_nimg: the run's length, images.
        batch: images per step.
        step: ``nimg -> loss`` of the step about to run.
        commit: ``nimg -> lr``, the update ending at ``nimg`` images.
        save: ``nimg -> None``, writes the checkpoint.
        generators: the run's generators (with torch's default ones they are rolled back on interrupt).
        log_path: the CSV log; None: no log (a data-parallel rank other than 0).
        resume: the run continues a checkpoint of ``nimg`` images (kept log rows, nothing unsaved yet).
        snapshot_nimg: a checkpoint every this many images; 0: none during the steps.
        callback: called as ``callback(nimg, loss)`` after every step.
        progress: show a tqdm progress bar.
    Returns:
        :class:`StepsResult`.
    """
    log = TrainingLog(log_path, nimg, resume) if log_path is not None else None
    bar = tqdm(total=total_nimg, initial=nimg, unit="img", unit_scale=True, dynamic_ncols=True, disable=not progress)
    saved_nimg = nimg if resume else None
    consistent = capture_rng(generators)
    interrupted = False
    try:
        while nimg < total_nimg:
            start = time.perf_counter()
            loss = step(nimg)
            with sigint_deferred():
                lr = commit(nimg + batch)
                nimg += batch
                consistent = capture_rng(generators)
                if log is not None:
                    log.write(nimg, loss, lr, batch / (time.perf_counter() - start))
            bar.update(batch)
            bar.set_postfix(loss=f"{loss:.4g}")
            if callback is not None:
                callback(nimg, loss)
            if snapshot_nimg and nimg // snapshot_nimg != (nimg - batch) // snapshot_nimg:
                save(nimg)
                saved_nimg = nimg
    except KeyboardInterrupt:
        # Back to the last completed step: its weights are untouched (commit is atomic w.r.t. Ctrl-C); only the
        # generators advanced for the abandoned step.
        restore_rng(generators, consistent)
        interrupted = True
    finally:
        bar.close()
        if log is not None:
            log.close()
    return StepsResult(nimg, interrupted, saved_nimg != nimg)
