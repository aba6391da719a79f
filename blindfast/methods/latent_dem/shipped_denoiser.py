r"""The shipped kernel denoiser: ``blindfast/weights/<name>.safetensors`` and its ``<name>.json`` manifest.

Like the shipped priors (:mod:`blindfast.models.shipped`: the same folder, name pattern and SHA-256 check), but the
priors' manifest format (``blindfast-shipped-prior``: U-Net arguments, flow losses, denoising PSNRs of images) does
not describe a kernel denoiser, so this is a small sibling format, ``blindfast-shipped-kernel-denoiser``, which
:func:`blindfast.models.shipped.shipped_priors` skips. Its fields: ``format``, ``version``, ``name``, ``weights``,
``sha256`` (of the weights file), ``dtype``, ``parameters``, ``net`` (:class:`KernelDenoiser` arguments),
``commands`` (the training commands, in order), ``export_command``, ``settings`` (the training settings),
``data`` (generator, kernel size, intensity and noise ranges, count, seed), ``images_seen``, ``training_seconds``,
``environment``, ``held_out`` (count, seed, levels) and ``mse``: per held-out noise level, the MSE of the noisy
kernels and of the denoised ones against the clean ones and the gain in dB, :math:`10 \log_{10}` of their ratio.

The weights file holds the state dict in float32 (28,641 parameters, 115 KB: the issue's 5 blocks of 32 channels), the
trained weights bit for bit, so the manifest's figures are those of the weights a user loads.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from blindfast import _validate
from blindfast.methods.latent_dem.kernel_denoiser import KernelDenoiser
from blindfast.methods.latent_dem.train_kernel_denoiser import (COMMAND, KernelDenoiserConfig, noisy_kernels,
                                                                training_kernels)
from blindfast.models.shipped import WEIGHTS_DIR, check_export_name, load_shipped_module, save_shipped_module
from blindfast.train.checkpoint import load_module_state, read_checkpoint, unprefixed
from blindfast.train.steps import CHECKPOINT_NAME, stream_seed

__all__ = ["load_kernel_denoiser", "export_kernel_denoiser", "measure_kernel_denoiser", "held_out_kernels",
           "DEFAULT_NAME", "MANIFEST_FORMAT", "MANIFEST_VERSION", "HELD_OUT_LEVELS", "HELD_OUT_KERNELS",
           "HELD_OUT_STREAM"]

DEFAULT_NAME = "kernel_denoiser_k33"
MANIFEST_FORMAT = "blindfast-shipped-kernel-denoiser"
MANIFEST_VERSION = 1
# Measured noise levels, mean-tap units (times k^2): the training range's ends, the M-step's default 0.49 (at
# k = 33), and a factor about 3 between neighbours.
HELD_OUT_LEVELS = (0.05, 0.15, 0.5, 1.5, 5.0)
HELD_OUT_KERNELS = 512
# The held-out kernels and their noise come from streams the training never uses (its are 0-5).
HELD_OUT_STREAM = 10
_EVAL_BATCH = 256


def measure_kernel_denoiser(denoiser: nn.Module, clean: Tensor, levels: tuple[float, ...],
                            generator: torch.Generator) -> list[dict]:
    """MSE of noisy and denoised kernels against the clean ones at each noise level.

    Args:
        denoiser: ``denoiser(z, noise_level) -> z`` on (B, 1, k, k).
        clean: (N, 1, k, k) kernels of sum 1.
        levels: noise stds in mean-tap units (times k^2), each applied to every kernel.
        generator: the noise.
    Returns:
        per level: ``noise_level_mean_taps``, ``noise_level`` (absolute), ``mse_noisy``, ``mse_denoised``,
        ``gain_db`` = 10 log10(mse_noisy / mse_denoised).
    """
    scale = clean.shape[-2] * clean.shape[-1]
    rows = []
    for level in levels:
        noisy_error = denoised_error = 0.0
        for part in clean.split(_EVAL_BATCH):
            noisy, _, _ = noisy_kernels(part, (level, level), generator)
            with torch.no_grad():
                denoised = denoiser(noisy, level / scale)
            noisy_error += (noisy - part).double().square().sum().item()
            denoised_error += (denoised - part).double().square().sum().item()
        rows.append({"noise_level_mean_taps": level, "noise_level": level / scale,
                     "mse_noisy": noisy_error / clean.numel(), "mse_denoised": denoised_error / clean.numel(),
                     "gain_db": 10 * math.log10(noisy_error / denoised_error)})
    return rows


def held_out_kernels(config: KernelDenoiserConfig, count: int) -> Tensor:
    """``count`` kernels drawn as the training ones, from the held-out stream of ``config.seed``:
    (count, 1, k, k)."""
    generator = torch.Generator().manual_seed(stream_seed(config.seed, HELD_OUT_STREAM))
    return training_kernels(count, config.kernel_size, config.intensity_range, generator)


def export_kernel_denoiser(run_dir, name: str = DEFAULT_NAME, *, out_dir=None,
                           held_out: int = HELD_OUT_KERNELS) -> dict:
    """Measures the trained denoiser of ``run_dir`` on held-out kernels and writes ``out_dir/<name>.safetensors``
    and the manifest ``out_dir/<name>.json`` (see the module docstring), both atomically, the weights first.

    Args:
        run_dir: the folder of a :func:`~blindfast.methods.latent_dem.train_kernel_denoiser.train_kernel_denoiser`
            run.
        name: a file stem (letters, digits, ``_``, ``.``, ``-``).
        out_dir: where to write; default ``blindfast/weights`` in the package.
        held_out: the number of held-out kernels.
    Returns:
        the manifest.
    Raises:
        ValueError: a bad name or ``held_out``.
        FileNotFoundError: no checkpoint in ``run_dir``.
        blindfast.train.CheckpointError: an unreadable checkpoint.
    """
    run_dir = Path(run_dir)
    name = check_export_name(name)
    held_out = _validate.positive_int("held_out", held_out)
    out_dir = WEIGHTS_DIR if out_dir is None else Path(out_dir)
    checkpoint = run_dir / CHECKPOINT_NAME
    tensors, header = read_checkpoint(checkpoint)
    saved = header["config"]
    config = KernelDenoiserConfig(**{key: tuple(v) if isinstance(v, list) else v for key, v in saved.items()})
    net = KernelDenoiser(**header["net_config"])
    load_module_state(net, unprefixed("net", tensors), "the kernel denoiser", checkpoint)
    net.eval()
    noise = torch.Generator().manual_seed(stream_seed(config.seed, HELD_OUT_STREAM + 1))
    mse = measure_kernel_denoiser(net, held_out_kernels(config, held_out), HELD_OUT_LEVELS, noise)

    scale = config.kernel_size ** 2
    fields = {
        "net": net.config(), "commands": header["commands"],
        "export_command": f"{config.command(run_dir, resume=True)} --export {name} --held-out {held_out}"
                          + ("" if out_dir == WEIGHTS_DIR else f" --export-dir {out_dir}"),
        "settings": saved,
        "data": {"generator": "blindfast.physics.motion_kernel", "kernel_size": config.kernel_size,
                 "kernels": config.kernels, "intensity_range": list(config.intensity_range),
                 "noise_range_mean_taps": list(config.noise_range),
                 "noise_range": [level / scale for level in config.noise_range], "seed": config.seed},
        "images_seen": header["nimg"], "training_seconds": header["seconds"],
        "held_out": {"kernels": held_out, "seed": config.seed, "stream": HELD_OUT_STREAM,
                     "levels_mean_taps": list(HELD_OUT_LEVELS)},
        "mse": mse,
    }
    return save_shipped_module(net, name, out_dir, manifest_format=MANIFEST_FORMAT,
                               manifest_version=MANIFEST_VERSION, fields=fields)


def load_kernel_denoiser(name: str = DEFAULT_NAME, directory=None, *, device=None) -> KernelDenoiser:
    """The shipped kernel denoiser, in eval mode with frozen parameters; pass it as
    :func:`blindfast.ops.hqs_kernel_update`'s ``denoiser``.

    Args:
        name: its name (the manifest's file stem).
        directory: where it is; default ``blindfast/weights`` in the installed package.
        device: where to put it; default the CPU.
    Returns:
        a :class:`KernelDenoiser`.
    Raises:
        TypeError: a name that is not a str.
        ValueError: a name that does not match the pattern.
        FileNotFoundError: no manifest of that name, or its weights file is missing.
        ShippedPriorError: a manifest of another format, or a corrupt weights file (SHA-256 mismatch), or weights
            that do not fit the manifest's architecture.
    """
    return load_shipped_module(name, directory, what="shipped kernel denoiser", manifest_format=MANIFEST_FORMAT,
                               manifest_version=MANIFEST_VERSION, command=COMMAND,
                               build=lambda manifest: KernelDenoiser(**manifest["net"]), device=device)
