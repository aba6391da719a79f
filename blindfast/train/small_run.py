"""A small training run's state between sessions (one module, its optimizer, the data / noise generators and the
counters) in one atomic checkpoint, for the runs that are not a flow prior's (:mod:`blindfast.train.loop`): the
kernel denoiser's, the contrastive encoder's. Starting refuses to overwrite a run; resuming restores every state
and refuses other settings (:func:`blindfast.train.checkpoint.check_resumable`), so a resumed run repeats an
uninterrupted one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from blindfast.train.checkpoint import (check_resumable, flatten_optimizer, global_rng_states, load_module_state,
                                        prefixed, read_checkpoint, restore_optimizer, set_global_rng_states,
                                        unprefixed, write_checkpoint)

__all__ = ["open_run", "save_run", "cosine_lr"]


def open_run(checkpoint: Path, *, what: str, resume: bool, config: Mapping, may_change: tuple[str, ...],
             module: nn.Module, prefix: str, optimizer: torch.optim.Optimizer,
             generators: dict[str, torch.Generator]) -> dict:
    """Starts a run whose checkpoint will be ``checkpoint``, or resumes it (``resume``): the module's state under
    ``prefix``, the optimizer's, the generators' and torch's global generators' are restored.

    Args:
        what: the run's kind in messages ("kernel-denoiser", "train-cl").
        config: the run's settings as JSON; on resume only the keys ``may_change`` may differ.
    Returns:
        the counters ``{"nimg", "seconds", "commands"}`` (zeros and no commands for a new run).
    Raises:
        FileNotFoundError: resuming without a checkpoint.
        FileExistsError: starting over an existing checkpoint.
        ValueError: resuming with other settings.
    """
    out_dir = checkpoint.parent
    if not resume:
        if checkpoint.exists():
            raise FileExistsError(f"{out_dir} already holds a {what} checkpoint ({checkpoint}): resume it or choose "
                                  f"another output folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"nimg": 0, "seconds": 0.0, "commands": []}
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no {what} checkpoint to resume in {out_dir} (expected {checkpoint})")
    tensors, header = read_checkpoint(checkpoint)
    check_resumable(checkpoint, header.get("config", {}), config, may_change, "other settings")
    load_module_state(module, unprefixed(prefix, tensors), f"the {what} state", checkpoint)
    restore_optimizer(optimizer, unprefixed("optimizer", tensors), header["optimizer"], checkpoint)
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng/{name}"])
    set_global_rng_states(unprefixed("global_rng", tensors))
    return {key: header[key] for key in ("nimg", "seconds", "commands")}


def save_run(checkpoint: Path, *, module: nn.Module, prefix: str, optimizer: torch.optim.Optimizer,
             generators: dict[str, torch.Generator], counters: dict, config: Mapping, header: Mapping) -> None:
    """Writes what :func:`open_run` restores, atomically, plus ``header``'s entries (e.g. the architecture)."""
    flat, index = flatten_optimizer(optimizer)
    tensors = {**prefixed(prefix, {k: v.detach().cpu() for k, v in module.state_dict().items()}),
               **prefixed("optimizer", {k: v.cpu() for k, v in flat.items()}),
               **prefixed("rng", {name: g.get_state() for name, g in generators.items()}),
               **prefixed("global_rng", global_rng_states())}
    write_checkpoint(checkpoint, tensors, {"config": dict(config), **header, "optimizer": index, **counters})


def cosine_lr(lr: float, nimg: int, batch: int, total_nimg: int) -> float:
    """The learning rate of the step that starts at ``nimg - batch`` images: a cosine decay from ``lr`` to 0 over
    the run (Loshchilov & Hutter 2017, "SGDR", Eq. 5, one cycle)."""
    return lr * 0.5 * (1 + math.cos(math.pi * (nimg - batch) / total_nimg))
