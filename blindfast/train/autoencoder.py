r"""Training the KL autoencoder of the latent prior: Adam on its loss, atomic checkpoints, exact resume, then the
latent scaling factor.

Each step draws a batch of patches :math:`x \in [-1, 1]` and minimises :meth:`KLAutoencoder.loss
<blindfast.models.autoencoder.KLAutoencoder.loss>`, :math:`\|x - D(z)\|_1 + \lambda_{KL} \mathrm{KL}(q(z \mid x) \|
\mathcal N(0, I))` with :math:`z = \mu + \sigma \odot \epsilon` (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", Sec. 3), with Adam (Kingma & Ba 2015). Once the run reaches its length,
:meth:`~blindfast.models.autoencoder.KLAutoencoder.fit_scaling_factor` sets the scaling factor from the latents of
a fixed draw of training patches (Rombach et al. 2022, Sec. 4.3.2), and the checkpoint holds it.

Progress is counted in images as in :func:`blindfast.train.train_prior`, with the same data sources
(:mod:`blindfast.train.data_sources`) and step loop (:func:`blindfast.train.steps.run_steps`: seeding, log, Ctrl-C
handling, snapshots). All randomness comes from two generators seeded from the run's seed, the data generator (patch
positions) and the noise generator (the reparameterisation :math:`\epsilon`); both are checkpointed, so a resumed run
repeats an uninterrupted one bit for bit on the CPU. The checkpoint (:func:`blindfast.train.write_checkpoint`:
safetensors and a checksummed JSON header, no pickle) holds the autoencoder under ``net/`` (so
:func:`blindfast.train.load_weights` with ``ema_std=None`` reads it), the optimiser under ``optimizer/`` and the
generators under ``rng/``; its header has ``"kind": "autoencoder"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from blindfast.models.autoencoder import KLAutoencoder
from blindfast.train.checkpoint import (CheckpointError, check_resumable, flatten_optimizer, load_module_state,
                                        prefixed, read_checkpoint, restore_optimizer, unprefixed, write_checkpoint)
from blindfast.train.data_sources import as_source, draw_batch
from blindfast.train.steps import (CHECKPOINT_NAME, DATA_STREAM, FIT_STREAM, LOG_NAME, NOISE_STREAM, run_steps,
                                   stream_seed)

__all__ = ["train_autoencoder", "AutoencoderResult", "AUTOENCODER_KIND"]

AUTOENCODER_KIND = "autoencoder"  # the header's "kind": what tells this checkpoint from a prior's
_RESUMABLE_CHANGES = ("total_nimg", "snapshot_nimg")


class AutoencoderResult(NamedTuple):
    """What :func:`train_autoencoder` leaves.

    Attributes:
        nimg: images trained on (the checkpoint's count).
        interrupted: True when a KeyboardInterrupt stopped training before ``total_nimg``.
        checkpoint: the checkpoint file.
        scaling_factor: the fitted scaling factor, None when interrupted (not fitted yet).
    """
    nimg: int
    interrupted: bool
    checkpoint: Path
    scaling_factor: float | None


def _check_config(config: dict) -> None:
    for name in ("total_nimg", "batch", "fit_nimg"):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = config["snapshot_nimg"]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"snapshot_nimg must be a non-negative integer, got {value!r}")
    if not (isinstance(config["lr"], numbers.Real) and math.isfinite(config["lr"]) and config["lr"] > 0):
        raise ValueError(f"lr must be a positive number, got {config['lr']!r}")
    if len(config["betas"]) != 2 or not all(0 <= b < 1 for b in config["betas"]):
        raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(config['betas'])!r}")
    if isinstance(config["seed"], bool) or not isinstance(config["seed"], numbers.Integral) or config["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {config['seed']!r}")


def _save(path: Path, ae: KLAutoencoder, optimizer: torch.optim.Optimizer,
          generators: dict[str, torch.Generator], nimg: int, config: dict) -> None:
    optimizer_tensors, optimizer_index = flatten_optimizer(optimizer)
    tensors = {**prefixed("net", ae.state_dict()), **prefixed("optimizer", optimizer_tensors),
               **prefixed("rng", {name: g.get_state() for name, g in generators.items()})}
    header = {"kind": AUTOENCODER_KIND, "nimg": int(nimg), "config": config, "net_class": type(ae).__qualname__,
              "net_config": ae.config(), "optimizer": optimizer_index, "generators": sorted(generators)}
    write_checkpoint(path, tensors, header)


def _load(path: Path, ae: KLAutoencoder, optimizer: torch.optim.Optimizer,
          generators: dict[str, torch.Generator], config: dict) -> int:
    tensors, header = read_checkpoint(path)
    if header.get("kind") != AUTOENCODER_KIND:
        raise CheckpointError(f"checkpoint {path} is not an autoencoder checkpoint: expected kind "
                              f"{AUTOENCODER_KIND!r}, got {header.get('kind')!r}")
    if header["net_config"] != ae.config():
        raise CheckpointError(f"checkpoint {path} was written by an autoencoder with config {header['net_config']}, "
                              f"this one has {ae.config()}")
    check_resumable(path, header["config"], config, _RESUMABLE_CHANGES, "a different configuration")
    load_module_state(ae, unprefixed("net", tensors), "the autoencoder state", path)
    restore_optimizer(optimizer, unprefixed("optimizer", tensors), header["optimizer"], path)
    rng = unprefixed("rng", tensors)
    for name, generator in generators.items():
        generator.set_state(rng[name])
    return int(header["nimg"])


def train_autoencoder(ae: KLAutoencoder, data, out_dir, *, total_nimg: int, batch: int = 16, lr: float = 1e-3,
                      seed: int = 0, betas: tuple[float, float] = (0.9, 0.999), snapshot_nimg: int = 0,
                      fit_nimg: int = 1024, resume: bool = False, device=None,
                      callback: Callable[[int, float], None] | None = None,
                      progress: bool = True) -> AutoencoderResult:
    r"""Trains ``ae`` on its loss until ``total_nimg`` images, then fits its scaling factor.

    Writes ``out_dir/checkpoint.safetensors`` (atomically, every ``snapshot_nimg`` images and at the end) and
    ``out_dir/log.csv`` (nimg, loss, lr, images/s per step; the loss is :meth:`KLAutoencoder.loss`'s total, a sum
    over each image's pixels averaged over the batch). After the last step the scaling factor is fitted on
    ``fit_nimg`` patches drawn from ``data`` by a generator seeded from ``seed`` alone (the same patches however the
    run was split), and the final checkpoint holds it. A KeyboardInterrupt (Ctrl-C, or raised by ``data`` or
    ``callback``) stops training cleanly: the last completed step is checkpointed and returned with
    ``interrupted=True``; ``resume=True`` continues from it.

    Args:
        ae: the autoencoder, trained in place in the dtype of its parameters.
        data: (N, C, H, W) tensor of patches in [-1, 1], or a callable ``(count, generator) -> (count, C, H, W)``
            drawing from the given CPU generator only (e.g. :class:`blindfast.train.ImagePatches`); H and W
            divisible by the downsampling factor.
        out_dir: folder for the checkpoint and the log (created if missing).
        total_nimg: training length, images.
        batch: images per Adam step.
        lr: Adam's learning rate, constant.
        seed: seeds the data and noise generators (the initial weights are the caller's).
        betas: Adam's moment decay rates (Kingma & Ba 2015's defaults).
        snapshot_nimg: a checkpoint every this many images; 0: only at the end.
        fit_nimg: patches the scaling factor is fitted on.
        resume: continue from ``out_dir``'s checkpoint (only ``total_nimg`` and ``snapshot_nimg`` may change).
        device: where to train; default the device of ``ae``'s parameters.
        callback: called as ``callback(nimg, loss)`` after every step.
        progress: show a tqdm progress bar.
    Returns:
        :class:`AutoencoderResult`.
    Raises:
        TypeError: ``ae`` is not a :class:`KLAutoencoder`, or ``data`` neither a tensor nor a callable.
        ValueError: a setting out of range, data that does not fit ``ae``, or a resume with another configuration.
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
        FileExistsError: a fresh run in an ``out_dir`` that holds a checkpoint.
        blindfast.train.CheckpointError: an unreadable checkpoint, one of another architecture or not an
            autoencoder's.
    """
    if not isinstance(ae, KLAutoencoder):
        raise TypeError(f"ae must be a KLAutoencoder, got {type(ae).__name__}")
    config = {"total_nimg": total_nimg, "batch": batch, "lr": lr, "betas": list(betas), "seed": seed,
              "snapshot_nimg": snapshot_nimg, "fit_nimg": fit_nimg}
    _check_config(config)
    source = as_source(data)
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    parameter = next(ae.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = parameter.dtype
    ae.to(device).train()
    optimizer = torch.optim.Adam(ae.parameters(), lr=lr, betas=tuple(betas))
    generators = {"data": torch.Generator().manual_seed(stream_seed(seed, DATA_STREAM)),
                  "noise": torch.Generator(device).manual_seed(stream_seed(seed, NOISE_STREAM))}
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir} (expected {checkpoint})")
        nimg = _load(checkpoint, ae, optimizer, generators, config)
    else:
        if checkpoint.exists():
            raise FileExistsError(f"{out_dir} already holds a checkpoint ({checkpoint}): resume it or choose another "
                                  f"output folder")
        nimg = 0
    out_dir.mkdir(parents=True, exist_ok=True)

    def step(nimg: int) -> float:
        x, _ = draw_batch(source, batch, slice(None), generators["data"], ae, device, dtype)
        loss = ae.loss(x, generators["noise"])["total"]
        loss.backward()
        return loss.item()

    def commit(nimg: int) -> float:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return lr

    def save(nimg: int) -> None:
        _save(checkpoint, ae, optimizer, generators, nimg, config)

    steps = run_steps(nimg=nimg, total_nimg=total_nimg, batch=batch, step=step, commit=commit, save=save,
                      generators=generators, log_path=out_dir / LOG_NAME, resume=resume, snapshot_nimg=snapshot_nimg,
                      callback=callback, progress=progress)
    scaling_factor = None
    if steps.interrupted:
        optimizer.zero_grad(set_to_none=True)  # the abandoned step's gradients
        if steps.unsaved:
            save(steps.nimg)
    else:
        fit_patches, _ = draw_batch(source, fit_nimg, slice(None),
                                    torch.Generator().manual_seed(stream_seed(seed, FIT_STREAM)), ae, device, dtype)
        scaling_factor = ae.fit_scaling_factor(fit_patches)
        save(steps.nimg)
    return AutoencoderResult(steps.nimg, steps.interrupted, checkpoint, scaling_factor)
