r"""Training a flow-matching prior: Adam, gradient accumulation, power-function EMA, atomic checkpoints, exact resume.

Each step draws a global batch of data :math:`x_1` (images in [-1, 1]), noise :math:`x_0 \sim \mathcal N(0, I)` and
times t, forms :math:`x_t = (1 - t) x_0 + t x_1` (:func:`blindfast.ops.flow_interpolate`) and minimises the
conditional flow-matching loss :math:`\lVert v_\theta(x_t, t) - (x_1 - x_0) \rVert^2`
(:func:`blindfast.ops.flow_matching_loss`; Lipman et al. 2023, "Flow Matching for Generative Modeling", Eq. 22-23).

Times are drawn uniformly on [0, 1) or, by default, logit-normally, :math:`t = \mathrm{sigmoid}(m + s\, n)`,
:math:`n \sim \mathcal N(0, 1)` (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image
Synthesis", Sec. 3.1, Eq. 19): with m = 0, s = 1 the middle times, where the velocity is hardest to predict, get
more samples than the ends. Their t = 1 is noise, ours is data, so their location m is our -m.

As in EDM2 (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models") progress is
counted in images, the learning rate may follow EDM2's inverse square-root decay, and the weights are averaged
with power-function EMAs (:class:`blindfast.train.PowerEMA`).

All randomness comes from two generators owned by the loop (data and noise) and torch's default generator
(dropout). The first two are seeded alike in every process and draw the global batch, of which each rank keeps its
slice (:mod:`blindfast.train.distributed`); their states are checkpointed. Torch's default generator is seeded
anew at every step from (seed, rank, images seen), so dropout differs between ranks yet nothing rank-specific needs
checkpointing: a resumed run repeats an uninterrupted one bit for bit on the CPU, whatever the number of processes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from blindfast.ops import flow_interpolate, flow_matching_loss
from blindfast.train.checkpoint import check_resumable, load_training_state, save_training_state
from blindfast.train.data_sources import as_source, draw_batch
from blindfast.train.distributed import World
from blindfast.train.ema import DEFAULT_EMA_STDS, PowerEMA, power_ema_gammas
from blindfast.train.steps import (CHECKPOINT_NAME, DATA_STREAM, DROPOUT_STREAM, LOG_NAME, NOISE_STREAM, run_steps,
                                   stream_seed)

__all__ = ["TrainConfig", "TrainResult", "sample_time", "learning_rate", "accumulate_gradients", "train_prior"]

TIME_SAMPLINGS = ("logit_normal", "uniform")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run; all but ``total_nimg`` and ``snapshot_nimg`` must stay the same on resume.

    Raises:
        ValueError: a value out of range, ``batch`` not divisible by ``micro_batch``, an unknown time sampling.
    """

    total_nimg: int                              # training length, images
    batch: int = 32                              # global batch: micro_batch x accumulation rounds x world size
    micro_batch: int | None = None               # images per forward/backward pass; None: a process's whole part
    lr: float = 1e-4                             # Adam learning rate (the reference rate of the schedule)
    lr_rampup_nimg: int = 0                      # linear warm-up over this many images; 0: none
    lr_decay_nimg: int = 0                       # EDM2's t_ref: lr / sqrt(nimg / t_ref) after it; 0: constant
    betas: tuple[float, float] = (0.9, 0.99)     # Adam's moment decay rates, EDM2's values
    eps: float = 1e-8                            # Adam's denominator floor
    ema_stds: tuple[float, ...] = DEFAULT_EMA_STDS  # relative stds of the power-function EMAs
    time_sampling: str = "logit_normal"          # "logit_normal" or "uniform", see the module docstring
    logit_mean: float = 0.0                      # m of the logit-normal times
    logit_std: float = 1.0                       # s of the logit-normal times
    snapshot_nimg: int = 0                       # a checkpoint every this many images; 0: only at the end
    seed: int = 0                                # seeds the data, noise and dropout generators
    bf16: bool = True                            # bf16 autocast of the network on CUDA (ignored on the CPU)

    def __post_init__(self):
        for name in ("total_nimg", "batch"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        micro = self.batch if self.micro_batch is None else self.micro_batch
        if not isinstance(micro, numbers.Integral) or micro < 1 or self.batch % micro:
            raise ValueError(f"batch must be a multiple of micro_batch (a positive integer), got batch={self.batch}, "
                             f"micro_batch={self.micro_batch!r}")
        for name in ("lr_rampup_nimg", "lr_decay_nimg", "snapshot_nimg"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")
        if not (math.isfinite(self.logit_std) and self.logit_std > 0) or not math.isfinite(self.logit_mean):
            raise ValueError(f"logit_std must be positive and logit_mean finite, got logit_mean={self.logit_mean!r}, "
                             f"logit_std={self.logit_std!r}")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        power_ema_gammas(self.ema_stds)

    def to_json(self) -> dict:
        """The fields as a JSON-ready dict (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


class TrainResult(NamedTuple):
    """What :func:`train_prior` leaves.

    Attributes:
        nimg: images trained on (the checkpoint's count).
        interrupted: True when a KeyboardInterrupt stopped training before ``total_nimg``.
        checkpoint: the checkpoint file.
        ema: the power-function EMAs of the network (``ema.averages[i]`` for ``ema.stds[i]``).
    """
    nimg: int
    interrupted: bool
    checkpoint: Path
    ema: PowerEMA


# ---------------------------------------------------------------------------------------------------------------
# One step


def sample_time(count: int, config: TrainConfig, generator: torch.Generator, *, dtype=torch.float32,
                device=None) -> Tensor:
    r"""Training times: uniform on [0, 1), or :math:`\mathrm{sigmoid}(m + s\,n)`, :math:`n \sim \mathcal N(0, 1)`.

    Args:
        count: number of times.
        config: supplies ``time_sampling``, ``logit_mean`` (m) and ``logit_std`` (s).
        generator: the source of randomness (on ``device``).
    Returns:
        (count,) times in [0, 1].
    """
    if config.time_sampling == "uniform":
        return torch.rand(count, generator=generator, dtype=dtype, device=device)
    normal = torch.randn(count, generator=generator, dtype=dtype, device=device)
    return torch.sigmoid(config.logit_mean + config.logit_std * normal)


def learning_rate(nimg: int, config: TrainConfig) -> float:
    r""":math:`\alpha = \alpha_{ref} \min(n / n_{rampup}, 1) / \sqrt{\max(n / t_{ref}, 1)}`: EDM2's inverse
    square-root decay after :math:`t_{ref}` images with a linear warm-up, each factor dropped when its length is 0.

    Args:
        nimg: images seen at the end of the step the rate is for.
        config: supplies ``lr``, ``lr_rampup_nimg`` and ``lr_decay_nimg``.
    """
    lr = config.lr
    if config.lr_decay_nimg:
        lr /= math.sqrt(max(nimg / config.lr_decay_nimg, 1.0))
    if config.lr_rampup_nimg:
        lr *= min(nimg / config.lr_rampup_nimg, 1.0)
    return lr


def accumulate_gradients(net: nn.Module, x1: Tensor, x0: Tensor, t: Tensor, cond: Tensor | None = None, *,
                         rounds: int = 1, bf16: bool = False) -> Tensor:
    r"""Adds to the parameters' ``.grad`` the gradient of the batch-mean flow-matching loss, in ``rounds`` passes.

    The batch is cut into ``rounds`` equal micro-batches; each contributes the gradient of its mean loss divided by
    ``rounds``, so the sum is the gradient of :math:`\frac{1}{B n}\sum_b \lVert v_\theta(x_{t,b}, t_b) -
    (x_{1,b} - x_{0,b})\rVert^2` whatever ``rounds`` is.

    Args:
        net: the velocity network ``net(x_t, t, cond)``.
        x1: (B, C, H, W) data; x0: (B, C, H, W) noise; t: (B,) times; cond: optional (B, C_cond, H, W).
        rounds: number of micro-batches, dividing B.
        bf16: run the network under bf16 autocast (CUDA only; the loss is computed in ``x1``'s dtype).
    Returns:
        0-dim detached mean loss over the batch.
    Raises:
        ValueError: ``rounds`` does not divide B.
    """
    B = x1.shape[0]
    if rounds < 1 or B % rounds:
        raise ValueError(f"rounds must be a positive divisor of the batch size {B}, got {rounds}")
    total = x1.new_zeros(())
    micro = B // rounds
    for start in range(0, B, micro):
        part = slice(start, start + micro)
        x_t = flow_interpolate(x0[part], x1[part], t[part])
        with torch.autocast(device_type=x_t.device.type, dtype=torch.bfloat16,
                            enabled=bf16 and x_t.device.type == "cuda"):
            v = net(x_t, t[part], None if cond is None else cond[part])
        loss = flow_matching_loss(v.to(x1.dtype), x0[part], x1[part])
        (loss / rounds).backward()
        total += loss.detach()
    return total / rounds


# ---------------------------------------------------------------------------------------------------------------
# The run


def train_prior(net: nn.Module, data, out_dir, config: TrainConfig, *, resume: bool = False, device=None,
                world: World = World(), callback: Callable[[int, float], None] | None = None,
                progress: bool = True) -> TrainResult:
    r"""Trains the velocity network ``net`` by flow matching until ``config.total_nimg`` images.

    Writes ``out_dir/checkpoint.safetensors`` (atomically, every ``config.snapshot_nimg`` images and at the end;
    see :mod:`blindfast.train.checkpoint`) and ``out_dir/log.csv`` (nimg, loss, lr, images/s per step). A
    KeyboardInterrupt (Ctrl-C, or raised by ``data`` or ``callback``) stops training cleanly: the state of the
    last completed step is checkpointed and returned with ``interrupted=True``; ``resume=True`` continues from it.
    Every step seeds torch's default generator (dropout draws from it) from (``config.seed``, rank, images seen).

    Data-parallel (``world.size`` W > 1, see :mod:`blindfast.train.distributed`): every rank draws the global batch
    of ``config.batch`` images, noises and times and trains on its contiguous slice, the gradients and the loss are
    averaged over the ranks, so W processes train as one would on the same global batch (up to rounding). Rank 0's
    weights are copied to all ranks at the start; only rank 0 writes files and shows the progress bar; the run ends
    with a barrier. ``out_dir`` must be the same folder on every rank (each reads it on resume). After a
    KeyboardInterrupt no rank takes part in a collective again (a peer may be waiting in an all-reduce this rank
    will never join); rank 0 checkpoints its last completed step, which every rank shares.

    Args:
        net: module ``net(x_t, t, cond) -> v`` with x_t (B, C, H, W), t (B,), cond None or (B, C_cond, H, W);
            trained in place, in the dtype of its parameters. If it has ``image_channels``, the data must match.
        data: (N, C, H, W) tensor of patches in [-1, 1] (see :class:`blindfast.train.TensorPatches`), or a callable
            ``(count, generator) -> batch`` drawing a (count, C, H, W) batch, or a (batch, cond) pair, from the
            given CPU generator only (e.g. :class:`blindfast.train.ImagePatches`).
        out_dir: folder for the checkpoint and the log (created if missing).
        config: the hyperparameters.
        resume: continue from ``out_dir``'s checkpoint (config may differ only in total_nimg and snapshot_nimg).
        device: where to train; default the device of ``net``'s parameters.
        world: this process's rank and the number of processes (:class:`blindfast.train.World`).
        callback: called as ``callback(nimg, loss)`` after every step.
        progress: show a tqdm progress bar.
    Returns:
        :class:`TrainResult`.
    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
        FileExistsError: a fresh run in an ``out_dir`` that holds a checkpoint.
        ValueError: the data does not fit the network, the checkpoint's configuration differs, or ``config.batch``
            is not divisible by world size x ``config.micro_batch``.
        blindfast.train.CheckpointError: an unreadable checkpoint, or one of another architecture.
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    part, rounds = world.shard(config.batch, config.micro_batch)
    source = as_source(data)
    parameter = next(net.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = parameter.dtype
    net.to(device).train()
    world.broadcast_module(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas, eps=config.eps)
    ema = PowerEMA(net, config.ema_stds)
    # Seeded alike on every rank: all draw the global batch (rank-independent states, one checkpoint for all).
    generators = {"data": torch.Generator().manual_seed(stream_seed(config.seed, DATA_STREAM)),
                  "noise": torch.Generator(device).manual_seed(stream_seed(config.seed, NOISE_STREAM))}
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir} (expected {checkpoint})")
        nimg, saved = load_training_state(checkpoint, net=net, ema=ema, optimizer=optimizer, generators=generators)
        check_resumable(checkpoint, saved, config.to_json(), ("total_nimg", "snapshot_nimg"),
                        "a different configuration")
    else:
        if checkpoint.exists():
            raise FileExistsError(f"{out_dir} already holds a checkpoint ({checkpoint}): resume it or choose another "
                                  f"output folder")
        nimg = 0
    writer = world.rank == 0
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)

    def step(nimg: int) -> float:
        torch.manual_seed(stream_seed(config.seed, DROPOUT_STREAM, world.rank, nimg))
        x1, cond = draw_batch(source, config.batch, part, generators["data"], net, device, dtype)
        # The whole batch's noise and times (cheap next to the network), so that the draws do not depend on the
        # world size; this rank keeps its slice.
        x0 = torch.randn((config.batch, *x1.shape[1:]), generator=generators["noise"], dtype=dtype,
                         device=device)[part]
        t = sample_time(config.batch, config, generators["noise"], dtype=dtype, device=device)[part]
        loss = accumulate_gradients(net, x1, x0, t, cond, rounds=rounds, bf16=config.bf16)
        return world.average_gradients(net.parameters(), loss).item()

    def commit(nimg: int) -> float:
        lr = learning_rate(nimg, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(net, nimg, config.batch)
        return lr

    def save(nimg: int) -> None:
        if writer:
            save_training_state(checkpoint, net=net, ema=ema, optimizer=optimizer, generators=generators, nimg=nimg,
                                config=config.to_json())

    steps = run_steps(nimg=nimg, total_nimg=config.total_nimg, batch=config.batch, step=step, commit=commit,
                      save=save, generators=generators, log_path=out_dir / LOG_NAME if writer else None,
                      resume=resume, snapshot_nimg=config.snapshot_nimg, callback=callback,
                      progress=progress and writer)
    if steps.interrupted:
        optimizer.zero_grad(set_to_none=True)  # the abandoned step's gradients
    if steps.unsaved:
        save(steps.nimg)
    if not steps.interrupted:
        # No rank leaves, or reads the checkpoint to resume, before rank 0 has written it.
        world.barrier()
    return TrainResult(steps.nimg, steps.interrupted, checkpoint, ema)
