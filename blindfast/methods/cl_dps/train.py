r"""Training CL-DPS's contrastive encoder with MoCo on positive (x_t, y) pairs, ``blindfast train-cl``.

Each step draws ``batch`` pairs (:func:`~blindfast.methods.cl_dps.pairs.draw_pairs`) from the photos (a folder, or
``data="embedded"``: the embedded train photos, :func:`blindfast.data.embedded_images`), and for each pair a fair
coin decides which side is the query and which the key: the query is x_t for about half the pairs and y for the
others. At inference one encoder maps both the measurement's patches and the estimate's, so both domains must reach
the trained (query) encoder, and a queue holding keys of both domains makes a feature that tells the domains apart
useless (a key of the query's own domain from another place would outscore the positive). With ``two_encoders``
the encoder is an :class:`~blindfast.methods.cl_dps.encoder.EncoderPair` (F_x for x_t, F_y for y), even rows are
x_t queries and odd rows y queries, and ``hard_negatives`` N adds per pair the same content under other operators
as negatives (:meth:`MoCo.forward_pair`, where the docstring says why: the sampler's optimum moves off y). The loss is
:class:`~blindfast.methods.cl_dps.moco.MoCo`'s (InfoNCE + lambda colour MSE); Adam with a cosine-decayed learning
rate; after each step the key encoder's momentum update and the enqueue of the step's keys (MoCo, Alg. 1).

Data parallel under torchrun (:class:`blindfast.train.World`): every rank draws the same global batch and trains
on its slice, the gradients are averaged and the keys of all ranks gathered before the enqueue, so the weights and
the queue stay the same on every rank.

The step driver is :func:`blindfast.train.steps.run_steps`; ``OUT/checkpoint.safetensors`` holds both encoders, the
queue and its pointer, Adam, the generators and the commands, written atomically every ``snapshot_kimg`` and on
interrupt, so ``resume=True`` continues bit for bit on the CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch

from blindfast import _validate
from blindfast.data import ImageFolder, embedded_images
from blindfast.methods.cl_dps.encoder import SMALL, WIDE, ContrastiveEncoder, EncoderPair, encoder_from_config
from blindfast.methods.cl_dps.moco import MoCo, concat_all_gather
from blindfast.methods.cl_dps.pairs import FAMILIES, PairConfig, draw_pairs, parse_families
from blindfast.train.distributed import World
from blindfast.train.small_run import cosine_lr, open_run, save_run
from blindfast.train.steps import CHECKPOINT_NAME, DATA_STREAM, LOG_NAME, NOISE_STREAM, run_steps, stream_seed

__all__ = ["CLConfig", "CLTrainResult", "train_cl", "load_photos", "build_encoder", "EMBEDDED", "PRESETS", "COMMAND",
           "INIT_STREAM"]

COMMAND = "train-cl"
EMBEDDED = "embedded"  # the data name of the embedded train photos
PRESETS = {"small": SMALL, "wide": WIDE}
INIT_STREAM = 4  # the initial weights and queue (the data and noise streams are blindfast.train.steps')


@dataclass(frozen=True)
class CLConfig:
    """The training settings (all but ``snapshot_kimg`` must stay the same on resume).

    Attributes:
        data: a folder of photos, or ``"embedded"`` (the embedded train photos).
        families: operator families of the pairs (:data:`~blindfast.methods.cl_dps.pairs.FAMILIES`).
        patch, margin, time_range, noise_range: as :class:`~blindfast.methods.cl_dps.pairs.PairConfig`.
        preset: the encoder, ``"small"`` (CPU) or ``"wide"`` (GPUs).
        kimg: training length, thousands of pairs.
        batch: pairs per Adam step (global, over all ranks).
        lr: Adam's initial learning rate, cosine-decayed to 0 at ``kimg``.
        queue: K, MoCo's queue of negatives.
        momentum: m of the key encoder.
        temperature: tau of the InfoNCE.
        colour_weight: lambda of the colour MSE (see :mod:`~blindfast.methods.cl_dps.moco`).
        snapshot_kimg: a checkpoint every this many thousand pairs (0: only at the end and on interrupt).
        seed: seeds the weights, the queue, the pairs and the noise.
        two_encoders: F_x and F_y (:class:`~blindfast.methods.cl_dps.encoder.EncoderPair`) instead of one encoder.
        hard_negatives: N, hard negatives per pair and side (two encoders only; 0: none).
    The last two are left out of :meth:`to_json` at their defaults, so a one-encoder run's settings (and the
    checkpoints and manifests written before they existed) read as before.
    """
    data: str = EMBEDDED
    families: tuple[str, ...] = FAMILIES
    patch: int = 64
    margin: int = 32
    time_range: tuple[float, float] = (0.5, 1.0)
    noise_range: tuple[float, float] = (0.0, 0.05)
    preset: str = "small"
    kimg: float = 100.0
    batch: int = 64
    lr: float = 1e-3
    queue: int = 4096
    momentum: float = 0.999
    temperature: float = 0.07
    colour_weight: float = 1.0
    snapshot_kimg: float = 10.0
    seed: int = 0
    two_encoders: bool = False
    hard_negatives: int = 0

    def __post_init__(self):
        if not isinstance(self.data, (str, os.PathLike)):
            raise TypeError(f"data must be a folder path or {EMBEDDED!r}, got {type(self.data).__name__}")
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "families", parse_families(self.families))
        _validate.choice("preset", self.preset, tuple(PRESETS))
        _validate.real("kimg", self.kimg, 0, low_open=True)
        _validate.positive_int("batch", self.batch)
        _validate.real("lr", self.lr, 0, low_open=True)
        _validate.positive_int("queue", self.queue)
        if self.batch > self.queue:
            raise ValueError(f"queue must hold at least one batch of keys, got queue {self.queue} < batch "
                             f"{self.batch}")
        _validate.real("momentum", self.momentum, 0, 1)
        _validate.real("temperature", self.temperature, 0, low_open=True)
        _validate.real("colour_weight", self.colour_weight, 0)
        _validate.real("snapshot_kimg", self.snapshot_kimg, 0)
        _validate.integer("seed", self.seed, 0)
        if not isinstance(self.two_encoders, bool):
            raise TypeError(f"two_encoders must be a bool, got {type(self.two_encoders).__name__}")
        _validate.integer("hard_negatives", self.hard_negatives, 0)
        if self.hard_negatives and not self.two_encoders:
            raise ValueError(f"hard negatives need two encoders (with one, no negative moves the optimum off y); got "
                             f"hard_negatives {self.hard_negatives} without two_encoders")
        if self.two_encoders and self.batch % 2:
            raise ValueError(f"two encoders need an even batch (half x_t queries, half y queries), got {self.batch}")
        pairs = self.pairs  # validates the pair settings
        object.__setattr__(self, "time_range", pairs.time_range)
        object.__setattr__(self, "noise_range", pairs.noise_range)

    @property
    def pairs(self) -> PairConfig:
        """The pair settings."""
        return PairConfig(patch=self.patch, margin=self.margin, families=self.families, time_range=self.time_range,
                          noise_range=self.noise_range)

    def to_json(self) -> dict:
        """The settings as JSON values (tuples as lists), as the checkpoint stores them."""
        values = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        if not self.two_encoders:
            del values["two_encoders"], values["hard_negatives"]
        return values

    @classmethod
    def from_json(cls, values: dict) -> CLConfig:
        """The inverse of :meth:`to_json`."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items() if key in names})

    def command(self, out_dir, resume: bool) -> str:
        """The ``blindfast`` command line that runs these settings."""
        words = ["blindfast", COMMAND, "--data", self.data, "--ops", ",".join(self.families), "--out", str(out_dir),
                 "--patch", str(self.patch), "--margin", str(self.margin), "--time-range",
                 f"{self.time_range[0]!r},{self.time_range[1]!r}", "--noise-range",
                 f"{self.noise_range[0]!r},{self.noise_range[1]!r}", "--preset", self.preset, "--kimg",
                 repr(self.kimg), "--batch", str(self.batch), "--lr", repr(self.lr), "--queue", str(self.queue),
                 "--momentum", repr(self.momentum), "--temperature", repr(self.temperature), "--colour-weight",
                 repr(self.colour_weight), "--snapshot-kimg", repr(self.snapshot_kimg), "--seed", str(self.seed)]
        if self.two_encoders:
            words += ["--two-encoders", "--hard-negatives", str(self.hard_negatives)]
        return " ".join(words + (["--resume"] if resume else []))


class CLTrainResult(NamedTuple):
    """What :func:`train_cl` leaves.

    Attributes:
        moco: the trained :class:`MoCo` (``moco.query`` is the encoder that ships), train mode.
        nimg: pairs trained on.
        checkpoint: the checkpoint file.
        seconds: training time over all runs of the folder (wall clock, steps only).
        interrupted: True when a KeyboardInterrupt stopped the run (the checkpoint holds its last completed step).
    """
    moco: MoCo
    nimg: int
    checkpoint: Path
    seconds: float
    interrupted: bool


def load_photos(data: str, crop: int, split: str = "train") -> list:
    """The photos of ``data`` (a folder, or ``"embedded"``: the embedded photos of ``split``), each checked to hold a
    ``crop`` x ``crop`` crop.

    Returns:
        list of (C, H, W) float32 tensors in [0, 1].
    Raises:
        FileNotFoundError: a missing folder or one without photos; NotADirectoryError: a file.
        ValueError: a photo smaller than the crop, or photos of different channel counts.
    """
    if data == EMBEDDED:
        photos = embedded_images(split)
        names = [f"embedded {split} photo {i}" for i in range(len(photos))]
    else:
        folder = ImageFolder(data)
        photos = [folder[i] for i in range(len(folder))]
        names = [str(path) for path in folder.files]
    for name, photo in zip(names, photos):
        if min(photo.shape[-2:]) < crop:
            raise ValueError(f"every photo must be at least {crop} x {crop} pixels (the patch plus twice the "
                             f"margin), got {name} of {photo.shape[-2]} x {photo.shape[-1]}")
    channels = {photo.shape[0] for photo in photos}
    if len(channels) > 1:
        raise ValueError(f"the photos must share one channel count, got {sorted(channels)}")
    return photos


def build_encoder(preset: str, channels: int, seed: int,
                  two_encoders: bool = False) -> ContrastiveEncoder | EncoderPair:
    """The preset's encoder (an :class:`EncoderPair` with ``two_encoders``), initialised from ``seed``'s init stream
    (torch's global generator left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, INIT_STREAM))
        return encoder_from_config({"channels": channels, **PRESETS[preset], "two_encoders": two_encoders})


def train_cl(out_dir, config: CLConfig = CLConfig(), *, resume: bool = False, progress: bool = True,
             device=None, dtype: torch.dtype = torch.float32, world: World = World(),
             callback: Callable[[int, float], None] | None = None) -> CLTrainResult:
    """Trains the contrastive encoder (module docstring).

    Writes ``out_dir/checkpoint.safetensors`` and ``out_dir/log.csv`` (per step: nimg, loss, lr; rank 0 only).

    Args:
        out_dir: the run's folder.
        config: the settings.
        resume: continue ``out_dir``'s checkpoint (same settings but ``snapshot_kimg``).
        progress: a progress bar (rank 0).
        device: where to train; default the CPU (pairs are drawn on the CPU and moved there).
        dtype: of the encoders, the queue and the pairs (float64 for the data-parallel test's exact comparison).
        world: this process's rank and the number of processes.
        callback: ``callback(nimg, loss)`` after every step (a KeyboardInterrupt raised there stops the run as
            Ctrl-C does).
    Returns:
        :class:`CLTrainResult`.
    Raises:
        FileNotFoundError: ``resume`` without a checkpoint, or a missing data folder; FileExistsError: a fresh run
            over a checkpoint.
        ValueError: resuming with other settings, a photo smaller than the crop, a batch not divisible by the world
            size.
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    device = torch.device("cpu") if device is None else _validate.device("device", device)
    pair_config = config.pairs
    part, _ = world.shard(config.batch)
    if config.two_encoders and (part.stop - part.start) % 2:
        raise ValueError(f"two encoders need an even part of the batch on every rank, got batch {config.batch} over "
                         f"{world.size} ranks")
    photos = load_photos(config.data, pair_config.crop)
    encoder = build_encoder(config.preset, photos[0].shape[0], config.seed, config.two_encoders)
    init = torch.Generator().manual_seed(stream_seed(config.seed, INIT_STREAM))
    moco = MoCo(encoder, config.queue, config.momentum, generator=init, patch=config.patch).to(device=device,
                                                                                             dtype=dtype)
    optimizer = torch.optim.Adam(moco.query.parameters(), lr=config.lr)
    generators = {"data": torch.Generator().manual_seed(stream_seed(config.seed, DATA_STREAM)),
                  "noise": torch.Generator().manual_seed(stream_seed(config.seed, NOISE_STREAM))}
    state = open_run(checkpoint, what="train-cl", resume=resume, config=config.to_json(),
                     may_change=("snapshot_kimg",), module=moco, prefix="moco", optimizer=optimizer,
                     generators=generators)
    world.broadcast_module(moco)
    state["commands"] = state["commands"] + [config.command(out_dir, resume)]
    total_nimg = round(config.kimg * 1000)
    started = time.perf_counter()
    seconds_before = state["seconds"]
    writer = world.rank == 0
    pending = {}

    def save(_nimg: int = 0) -> None:
        if writer:
            counters = {**state, "seconds": seconds_before + time.perf_counter() - started}
            encoder = {k: list(v) if isinstance(v, tuple) else v for k, v in moco.query.config.items()}
            save_run(checkpoint, module=moco, prefix="moco", optimizer=optimizer, generators=generators,
                     counters=counters, config=config.to_json(), header={"encoder": encoder})

    def step(_nimg: int) -> float:
        pairs = draw_pairs(photos, config.batch, pair_config, generators["data"],
                           hard_negatives=config.hard_negatives)
        if config.two_encoders:
            loss, _, _, y_keys, x_keys = moco.forward_pair(
                *(None if batch is None else batch[part].to(device=device, dtype=dtype)
                  for batch in (pairs.x_t, pairs.y, pairs.clean, pairs.x_negatives, pairs.y_negatives)),
                config.temperature, config.colour_weight)
            pending["keys"] = (y_keys, x_keys)
        else:
            query_is_x = torch.rand(config.batch, generator=generators["noise"]) < 0.5
            side = query_is_x.reshape(-1, 1, 1, 1)
            queries, keys = torch.where(side, pairs.x_t, pairs.y), torch.where(side, pairs.y, pairs.x_t)
            loss, _, _, k = moco(*(batch[part].to(device=device, dtype=dtype)
                                   for batch in (queries, keys, pairs.clean)), config.temperature,
                                 config.colour_weight)
            pending["keys"] = (k, None)
        loss.backward()
        return world.average_gradients(moco.query.parameters(), loss.detach()).item()

    def commit(nimg: int) -> float:
        lr = cosine_lr(config.lr, nimg, config.batch, total_nimg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        moco.momentum_update()  # MoCo, Alg. 1: after the query encoder's update, then the enqueue
        keys, x_keys = pending.pop("keys")
        moco.enqueue(concat_all_gather(keys))
        if x_keys is not None:
            moco.enqueue(concat_all_gather(x_keys), x_side=True)
        state["nimg"] = nimg
        return lr

    moco.train()
    steps = run_steps(nimg=state["nimg"], total_nimg=total_nimg, batch=config.batch, step=step, commit=commit,
                      save=save, generators=generators, log_path=out_dir / LOG_NAME if writer else None,
                      resume=resume, snapshot_nimg=round(config.snapshot_kimg * 1000), callback=callback,
                      progress=progress and writer)
    optimizer.zero_grad(set_to_none=True)  # an abandoned step's gradients
    pending.clear()
    if steps.unsaved or steps.interrupted or not resume:
        save()  # a resume that ran no step (the run was complete) leaves the checkpoint and its commands as they were
    world.barrier()
    return CLTrainResult(moco, steps.nimg, checkpoint, seconds_before + time.perf_counter() - started,
                         steps.interrupted)
