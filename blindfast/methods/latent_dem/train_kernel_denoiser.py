r"""Training LatentDEM's kernel denoiser (:class:`~blindfast.methods.latent_dem.kernel_denoiser.KernelDenoiser`) on
generated motion kernels, ``blindfast train-kernel-denoiser``.

Data (LatentDEM trains on 60k motion kernels; the CPU preset on fewer): ``kernels`` clean kernels drawn once by
:func:`blindfast.physics.motion_kernel` (``kernel_size`` 33, the issue's ``--kernel-size 33``), in chunks of
:data:`INTENSITY_CHUNK` that share an intensity drawn uniformly in ``intensity_range`` (``motion_kernel`` takes one
intensity per call; [0, 1] spans straight to highly irregular paths, since the M-step meets whatever the E-step
gives). They are stored in ``OUT/kernels.safetensors`` so a resumed run reuses them without redrawing.

Each step draws ``batch`` of them, a noise level per kernel log-uniformly in ``noise_range`` and Gaussian noise of
that std. Levels are in mean-tap units, multiples of :math:`1/k^2` (see the denoiser's docstring for why): the
default range [0.05, 5] has its geometric centre at the M-step's default level :math:`\sqrt{\lambda/\delta} =
4.5\cdot10^{-4}` (lambda = 1, delta = 5e6), which is 0.49 mean taps at k = 33, and spans a factor 10 either way
(:math:`4.6\cdot10^{-5}` to :math:`4.6\cdot10^{-3}` absolute; 5 mean taps is about 14% of a typical 33 x 33 motion
kernel's largest tap, 0.033). Loss: DnCNN's residual MSE (Zhang et al. 2017, Eq. 1), the predicted noise against the
drawn one, both in units of the noise std (so every level weighs alike; see the denoiser's docstring); Adam with a
cosine-decayed learning rate.

The step driver is :func:`blindfast.train.steps.run_steps` (progress bar, log, Ctrl-C held back while the state
changes); ``OUT/checkpoint.safetensors`` holds the network, Adam, the generators and the commands, written atomically
every ``snapshot_kimg`` and on interrupt, so ``resume=True`` continues bit for bit on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.methods.latent_dem.kernel_denoiser import KernelDenoiser
from blindfast.physics import motion_kernel
from blindfast.train.checkpoint import read_checkpoint, write_checkpoint
from blindfast.train.small_run import cosine_lr, open_run, save_run
from blindfast.train.steps import CHECKPOINT_NAME, DATA_STREAM, LOG_NAME, NOISE_STREAM, run_steps, stream_seed

__all__ = ["KernelDenoiserConfig", "KernelTrainResult", "train_kernel_denoiser", "training_kernels",
           "noisy_kernels", "KERNELS_NAME", "INTENSITY_CHUNK", "INIT_STREAM", "KERNEL_STREAM", "COMMAND"]

KERNELS_NAME = "kernels.safetensors"
COMMAND = "train-kernel-denoiser"
INTENSITY_CHUNK = 64  # kernels per motion_kernel call, sharing one intensity
# Generator streams beyond blindfast.train.steps': the initial weights, and the clean training kernels.
INIT_STREAM, KERNEL_STREAM = 4, 5


@dataclass(frozen=True)
class KernelDenoiserConfig:
    """The training settings (all but ``snapshot_kimg`` must stay the same on resume).

    Attributes:
        kernel_size: k, odd: the kernels' window (k, k).
        kernels: number of clean training kernels.
        kimg: training length, thousands of noisy kernels.
        batch: kernels per Adam step.
        lr: Adam's initial learning rate, decayed by a cosine to 0 at ``kimg``.
        intensity_range: (low, high) within [0, 1], motion_kernel's intensity, drawn uniformly per chunk.
        noise_range: (low, high) noise std in mean-tap units (times k^2), drawn log-uniformly.
        snapshot_kimg: a checkpoint every this many thousand kernels (0: only at the end and on interrupt).
        seed: seeds the weights, the kernels and the noise.
    """
    kernel_size: int = 33
    kernels: int = 8192
    kimg: float = 60.0
    batch: int = 64
    lr: float = 1e-3
    intensity_range: tuple[float, float] = (0.0, 1.0)
    noise_range: tuple[float, float] = (0.05, 5.0)
    snapshot_kimg: float = 8.0
    seed: int = 0

    def __post_init__(self):
        size = _validate.positive_int("kernel_size", self.kernel_size)
        if size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centre tap), got {size}")
        _validate.positive_int("kernels", self.kernels)
        _validate.positive_int("batch", self.batch)
        _validate.real("kimg", self.kimg, 0, low_open=True)
        _validate.real("lr", self.lr, 0, low_open=True)
        _validate.real("snapshot_kimg", self.snapshot_kimg, 0)
        _validate.integer("seed", self.seed, 0)
        low, high = _validate.real_range("intensity_range", self.intensity_range, 0)
        if high > 1:
            raise ValueError(f"intensity_range must lie within [0, 1], got {tuple(self.intensity_range)!r}")
        _validate.real_range("noise_range", self.noise_range, 0, open_below=True)
        object.__setattr__(self, "intensity_range", (low, high))
        object.__setattr__(self, "noise_range", tuple(map(float, self.noise_range)))

    def to_json(self) -> dict:
        """The settings as JSON values (tuples as lists), as the checkpoint stores them."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def command(self, out_dir, resume: bool) -> str:
        """The ``blindfast`` command line that runs these settings."""
        words = ["blindfast", COMMAND, "--out", str(out_dir), "--kernel-size", str(self.kernel_size), "--kernels",
                 str(self.kernels), "--kimg", repr(self.kimg), "--batch", str(self.batch), "--lr", repr(self.lr),
                 "--snapshot-kimg", repr(self.snapshot_kimg), "--seed", str(self.seed)]
        return " ".join(words + (["--resume"] if resume else []))


class KernelTrainResult(NamedTuple):
    """What :func:`train_kernel_denoiser` leaves.

    Attributes:
        net: the trained denoiser (train mode, CPU).
        nimg: noisy kernels trained on.
        checkpoint: the checkpoint file.
        seconds: training time over all runs of the folder (wall clock, steps only).
        interrupted: True when a KeyboardInterrupt stopped the run (the checkpoint holds its last completed step).
    """
    net: KernelDenoiser
    nimg: int
    checkpoint: Path
    seconds: float
    interrupted: bool


def training_kernels(count: int, size: int, intensity_range: tuple[float, float],
                     generator: torch.Generator) -> Tensor:
    """``count`` motion kernels, in chunks of :data:`INTENSITY_CHUNK` with one intensity drawn uniformly in
    ``intensity_range`` per chunk.

    Returns:
        (count, 1, size, size) float32, each non-negative with sum 1.
    """
    low, high = intensity_range
    chunks = []
    for start in range(0, count, INTENSITY_CHUNK):
        intensity = low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()
        chunks.append(motion_kernel(min(INTENSITY_CHUNK, count - start), size, intensity,
                                    generator=generator)["kernel"])
    return torch.cat(chunks)


def noisy_kernels(clean: Tensor, noise_range: tuple[float, float],
                  generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Noise of a log-uniform std in ``noise_range`` (mean-tap units) added to each kernel.

    Args:
        clean: (B, 1, kh, kw) kernels.
        noise_range: (low, high), stds times kh kw.
    Returns:
        (noisy, noise, levels): (B, 1, kh, kw) twice, in the kernels' units, and (B,) the absolute stds.
    """
    batch = clean.shape[0]
    low, high = (math.log(v) for v in noise_range)
    scale = clean.shape[-2] * clean.shape[-1]
    levels = torch.exp(low + (high - low) * torch.rand(batch, generator=generator, dtype=clean.dtype)) / scale
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype) * levels.reshape(-1, 1, 1, 1)
    return clean + noise, noise, levels


def _residual_loss(net: KernelDenoiser, noisy: Tensor, noise: Tensor, levels: Tensor) -> Tensor:
    """DnCNN's residual MSE in units of the noise std: mean of (F(z) - n / sigma)^2."""
    return (net.normalised_noise(noisy, levels) - noise / levels.reshape(-1, 1, 1, 1)).square().mean()


def _kernels_file(out_dir: Path, config: KernelDenoiserConfig, resume: bool) -> Tensor:
    """The clean training kernels: drawn and saved in ``out_dir`` by a fresh run, read back on resume."""
    path = out_dir / KERNELS_NAME
    settings = {key: config.to_json()[key] for key in ("kernel_size", "kernels", "intensity_range", "seed")}
    if resume and path.is_file():
        tensors, header = read_checkpoint(path)
        if header.get("settings") != settings:
            raise ValueError(f"{path} holds kernels of other settings ({header.get('settings')}), expected "
                             f"{settings}")
        return tensors["kernels"]
    generator = torch.Generator().manual_seed(stream_seed(config.seed, KERNEL_STREAM))
    kernels = training_kernels(config.kernels, config.kernel_size, config.intensity_range, generator)
    write_checkpoint(path, {"kernels": kernels}, {"settings": settings})
    return kernels


def train_kernel_denoiser(out_dir, config: KernelDenoiserConfig = KernelDenoiserConfig(), *, resume: bool = False,
                          progress: bool = True,
                          callback: Callable[[int, float], None] | None = None) -> KernelTrainResult:
    """Trains a :class:`KernelDenoiser` on motion kernels (see the module docstring) on the CPU.

    Writes ``out_dir/checkpoint.safetensors`` (network, Adam, generators, settings, commands, image count),
    ``out_dir/kernels.safetensors`` (the clean kernels) and ``out_dir/log.csv`` (per step: nimg, loss, lr).

    Args:
        out_dir: the run's folder.
        config: the settings.
        resume: continue ``out_dir``'s checkpoint (same settings but ``snapshot_kimg``).
        progress: a progress bar.
        callback: ``callback(nimg, loss)`` after every step (a KeyboardInterrupt raised there stops the run as
            Ctrl-C does).
    Returns:
        :class:`KernelTrainResult`.
    Raises:
        FileNotFoundError: ``resume`` without a checkpoint; FileExistsError: a fresh run over one.
        ValueError: resuming with other settings.
        blindfast.train.CheckpointError: an unreadable checkpoint.
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, INIT_STREAM))
        net = KernelDenoiser()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generators = {"data": torch.Generator().manual_seed(stream_seed(config.seed, DATA_STREAM)),
                  "noise": torch.Generator().manual_seed(stream_seed(config.seed, NOISE_STREAM))}
    state = open_run(checkpoint, what="kernel-denoiser", resume=resume, config=config.to_json(),
                     may_change=("snapshot_kimg",), module=net, prefix="net", optimizer=optimizer,
                     generators=generators)
    state["commands"] = state["commands"] + [config.command(out_dir, resume)]
    kernels = _kernels_file(out_dir, config, resume)
    total_nimg = round(config.kimg * 1000)
    started = time.perf_counter()
    seconds_before = state["seconds"]

    def save(_nimg: int = 0) -> None:
        counters = {**state, "seconds": seconds_before + time.perf_counter() - started}
        save_run(checkpoint, module=net, prefix="net", optimizer=optimizer, generators=generators,
                 counters=counters, config=config.to_json(), header={"net_config": net.config()})

    def step(_nimg: int) -> float:
        picks = torch.randint(kernels.shape[0], (config.batch,), generator=generators["data"])
        noisy, noise, levels = noisy_kernels(kernels[picks], config.noise_range, generators["noise"])
        loss = _residual_loss(net, noisy, noise, levels)
        loss.backward()
        return loss.item()

    def commit(nimg: int) -> float:
        lr = cosine_lr(config.lr, nimg, config.batch, total_nimg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["nimg"] = nimg
        return lr

    net.train()
    steps = run_steps(nimg=state["nimg"], total_nimg=total_nimg, batch=config.batch, step=step, commit=commit,
                      save=save, generators=generators, log_path=out_dir / LOG_NAME, resume=resume,
                      snapshot_nimg=round(config.snapshot_kimg * 1000), callback=callback, progress=progress)
    optimizer.zero_grad(set_to_none=True)  # an abandoned step's gradients
    if steps.unsaved or steps.interrupted or not resume:
        save()  # a resume that ran no step (the run was complete) leaves the checkpoint and its commands as they were
    return KernelTrainResult(net, steps.nimg, checkpoint, seconds_before + time.perf_counter() - started,
                             steps.interrupted)
