r"""The shipped priors: one command trains each on the embedded photographs, one exports, measures and writes it.

``blindfast train-shipped-pixel`` trains a flow-matching U-Net (:func:`blindfast.train.train_prior`) on random
patches of the train split of :func:`blindfast.data.embedded_images`. ``blindfast train-shipped-latent`` trains a
:class:`~blindfast.models.autoencoder.KLAutoencoder` (:func:`blindfast.train.autoencoder.train_autoencoder`, which
fits its scaling factor at the end) in ``OUT/autoencoder``, then a U-Net on the scaled latents :math:`s\,\mu(x)` of
the same patches, encoded as they are drawn (:class:`~blindfast.models.latent_prior.LatentFlowPrior`, Rombach et al.
2022, Sec. 3). Both record their settings and the command in ``OUT/shipped_run.json``; resuming appends the new
command.

``blindfast export-prior`` writes ``<name>.safetensors`` (one EMA of the U-Net, and for a latent prior the
autoencoder, in float32) and the ``<name>.json`` manifest into ``blindfast/weights`` (see
:mod:`blindfast.models.shipped`), with the quality measured on held-out patches of the *test* split:

- both kinds: the conditional flow-matching loss :math:`\mathbb E \lVert v_\theta(x_t, t) - (x_1 - x_0)\rVert^2`
  (Lipman et al. 2023, "Flow Matching for Generative Modeling", Eq. 22-23) at uniform times, ``heldout_flow_loss``,
  next to ``gaussian_flow_loss``, that of the exact prior of :math:`\mathcal N(\mu_c, s^2 I)` fitted to the very
  data measured (per-channel means, one standard deviation; :class:`~blindfast.models.prior.GaussianPrior`), with
  the same draws: the best a prior that knows only those moments can do, so the ratio says what the network learnt
  beyond them;
- pixel: the PSNRs of the prior as a one-step denoiser and of the best Gaussian smoothing at noise 0.1 and 0.2
  (images in [0, 1]), and the smaller gain, ``denoise_gain_db``
  (:func:`blindfast.models.denoising_quality.denoise_gain_db`), against the bar of 1.5 dB;
- latent: the autoencoder's reconstruction PSNR, ``autoencoder_psnr``.

Float32 weights: the tiny presets take 1.1 MB (pixel, 0.27M parameters) and 2.0 MB (latent: 0.27M + 0.23M), and
even a "small" pixel prior (4.38M parameters, 17.5 MB) fits next to a tiny latent one in the 20 MB budget
(:data:`WEIGHTS_BUDGET_BYTES`, checked at export), so nothing is rounded: the shipped weights are the trained EMA bit
for bit and the manifest's figures are those of the weights a user loads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save
from torch import Tensor

import blindfast
from blindfast.atomic_file import save_atomic
from blindfast.data import EMBEDDED_SPLITS, RandomPatches, embedded_images
from blindfast.metrics import psnr
from blindfast.models.autoencoder import KLAutoencoder
from blindfast.models.denoising_quality import denoise_gain_db
from blindfast.models.latent_prior import LatentFlowPrior
from blindfast.models.prior import GaussianPrior, NetworkPrior, Prior
from blindfast.models.shipped import MANIFEST_FORMAT, MANIFEST_VERSION, NAME_PATTERN, WEIGHTS_DIR
from blindfast.models.unet import UNet
from blindfast.ops import flow_interpolate, flow_matching_loss
from blindfast.train.autoencoder import AUTOENCODER_KIND, AutoencoderResult, train_autoencoder
from blindfast.train.checkpoint import load_weights, read_checkpoint
from blindfast.train.data_sources import ImagePatches
from blindfast.train.loop import TrainConfig, TrainResult, train_prior
from blindfast.train.steps import CHECKPOINT_NAME, LOG_NAME

__all__ = ["held_out_patches", "training_patches", "EncodedPatches", "train_shipped_pixel", "train_shipped_latent",
           "ShippedLatentResult", "export_shipped", "RUN_RECORD", "AUTOENCODER_DIR", "WEIGHTS_BUDGET_BYTES",
           "QUALITY_BAR_DB", "DENOISE_SIGMAS", "HELD_OUT_SEED"]

RUN_RECORD = "shipped_run.json"
AUTOENCODER_DIR = "autoencoder"
WEIGHTS_BUDGET_BYTES = 20_000_000  # the "total <= 20 MB" for everything in blindfast/weights
QUALITY_BAR_DB = 1.5  # the bar: the pixel prior beats the best Gaussian smoothing by this much
DENOISE_SIGMAS = (0.1, 0.2)  # the noise levels, images in [0, 1]
HELD_OUT_SEED = 0  # the held-out patches; the noise of the measurements uses HELD_OUT_SEED + 1 and + 2
FINAL_LOSS_STEPS = 100  # "final loss": the mean of the last this many logged batch losses (one batch is noisy)
_EVAL_BATCH = 64  # patches per forward pass when measuring
# Settings a resumed run may change; every other one must match the run record.
_LENGTHS = ("kimg", "ae_kimg", "snapshot_kimg")


# ---------------------------------------------------------------------------------------------------------------
# Data


def held_out_patches(count: int, size: int, seed: int = HELD_OUT_SEED) -> Tensor:
    """Random square crops of the test split of the embedded photographs, which training never sees.

    Positions are uniform over all crop positions of the test images (:class:`blindfast.data.RandomPatches`),
    drawn by a generator seeded with ``seed``: the same arguments give the same patches.

    Args:
        count: number of patches.
        size: patch side, pixels (at most the smallest test image's side).
        seed: seeds the positions.
    Returns:
        (count, 3, size, size) float32 in [0, 1].
    Raises:
        ValueError: ``count`` or ``size`` not a positive integer, or ``size`` larger than a test image.
    """
    generator = torch.Generator().manual_seed(seed)
    return RandomPatches(embedded_images("test"), size, count, generator=generator).sample().patches


def training_patches(size: int) -> ImagePatches:
    """The training data of the shipped priors: random ``size`` x ``size`` crops of the train split of the embedded
    photographs, in [-1, 1] (a data source of :func:`blindfast.train.train_prior`).

    Raises:
        ValueError: ``size`` not a positive integer or larger than a train image.
    """
    return ImagePatches(embedded_images("train"), size)


class EncodedPatches:
    r"""The data of a latent prior: the scaled latents :math:`s\,\mu(x)` (:meth:`LatentFlowPrior.encode`) of
    patches drawn from an image source, encoded without gradients on the autoencoder's device.

    Args:
        prior: supplies the (trained, scale-fitted) autoencoder.
        images: a data source ``(count, generator) -> (count, C, H, W)`` in [-1, 1].
    """

    def __init__(self, prior: LatentFlowPrior, images: Callable[[int, torch.Generator], Tensor]):
        self.prior, self.images = prior, images

    def __call__(self, count: int, generator: torch.Generator) -> Tensor:
        """(count, L, H/f, W/f) latents of ``count`` patches drawn from ``generator``."""
        parameter = next(self.prior.autoencoder.parameters())
        with torch.no_grad():
            return self.prior.encode(self.images(count, generator).to(parameter.device, parameter.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Training


def _command(name: str, out_dir: Path, options: dict, resume: bool, device) -> str:
    """The ``blindfast`` command line that repeats a run: every option spelt out, defaults included."""
    words = ["blindfast", name, "--out", str(out_dir)]
    for key, value in options.items():
        words += [f"--{key.replace('_', '-')}", str(value)]
    if device is not None:
        words += ["--device", str(device)]
    return " ".join(words + (["--resume"] if resume else []))


def _write_json(path: Path, content: dict) -> None:
    """Writes ``content`` to ``path`` atomically (:func:`blindfast.atomic_file.save_atomic`)."""
    save_atomic(path, lambda f: f.write((json.dumps(content, indent=2) + "\n").encode("utf-8")))


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON: {err}") from None


def _environment(device) -> dict:
    """What a command ran on, beside its settings: bit-exact reproduction needs the same versions, and on the CPU
    the same number of threads (they set the reduction order of the convolutions)."""
    return {"blindfast": blindfast.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device or "cpu"), "machine": platform.machine()}


def _start_record(out_dir: Path, kind: str, settings: dict, command: str, resume: bool,
                  checkpoints: tuple[Path, ...], device) -> dict:
    """The run record: a new one for a fresh run, or the saved one with ``command`` appended on resume (which needs
    the run record and ``checkpoints[0]``, the first network's checkpoint); ``environments[i]`` is what
    ``commands[i]`` ran on (:func:`_environment`)."""
    path = out_dir / RUN_RECORD
    if not resume:
        existing = [str(c) for c in checkpoints if c.exists()]
        if existing:
            raise FileExistsError(f"{out_dir} already holds a checkpoint ({', '.join(existing)}): resume it or "
                                  f"choose another output folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {"kind": kind, "settings": settings, "commands": [command], "environments": [_environment(device)]}
    else:
        if not path.is_file() or not checkpoints[0].is_file():
            raise FileNotFoundError(f"no run to resume in {out_dir} (expected {path} and {checkpoints[0]}, written "
                                    f"by blindfast train-shipped-{kind})")
        record = _read_json(path, "run record")
        if record.get("kind") != kind:
            raise ValueError(f"cannot resume {out_dir} as a {kind} run: it is a {record.get('kind')!r} run")
        saved = {key: value for key, value in record["settings"].items() if key not in _LENGTHS}
        current = {key: value for key, value in settings.items() if key not in _LENGTHS}
        if saved != current:
            changed = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
                                for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key))
            raise ValueError(f"cannot resume {out_dir} with different settings ({changed}); only "
                             f"{', '.join(_LENGTHS)} may change")
        record["settings"] = settings
        record["commands"].append(command)
        record.setdefault("environments", []).append(_environment(device))
    _write_json(path, record)
    return record


def _check_patch(patch, multiple: int, why: str) -> None:
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or patch % multiple:
        raise ValueError(f"patch must be a positive multiple of {multiple} ({why}), got {patch!r}")


def _nimg(name: str, kimg: float) -> int:
    if not (isinstance(kimg, (int, float)) and math.isfinite(kimg) and kimg > 0):
        raise ValueError(f"{name} must be > 0, got {kimg!r}")
    return round(kimg * 1000)


def train_shipped_pixel(out_dir, *, kimg: float, preset: str = "tiny", patch: int = 64, batch: int = 32,
                        lr: float = 2e-4, seed: int = 0, snapshot_kimg: float = 50.0, resume: bool = False,
                        device=None, progress: bool = True) -> TrainResult:
    """Trains the pixel prior: a U-Net of ``preset`` on random ``patch`` crops of the embedded train photographs.

    Writes ``out_dir/checkpoint.safetensors``, ``out_dir/log.csv`` (see :func:`blindfast.train.train_prior`) and
    the run record ``out_dir/shipped_run.json`` (the settings and the command, for the manifest). The initial
    weights come from ``seed`` (``torch.manual_seed``), as do the data and noise.

    Args:
        out_dir: the run's folder.
        kimg: training length, thousands of images.
        preset: :data:`blindfast.models.unet.PRESETS` name.
        patch: patch side, pixels (a multiple of the U-Net's 2^(levels - 1)).
        batch: images per Adam step.
        lr: Adam's learning rate, constant.
        seed: seeds the weights, the data and the noise.
        snapshot_kimg: a checkpoint every this many thousand images; 0: only at the end.
        resume: continue the run in ``out_dir`` (only ``kimg`` and ``snapshot_kimg`` may change).
        device: torch device; default the CPU.
        progress: show a progress bar.
    Returns:
        :class:`blindfast.train.TrainResult`.
    Raises:
        ValueError: a setting out of range, an unknown preset, a patch size the U-Net cannot take, or a resume with
            other settings.
        FileNotFoundError: ``resume`` without a run in ``out_dir``.
        FileExistsError: a fresh run in an ``out_dir`` that holds a checkpoint.
    """
    out_dir = Path(out_dir)
    total_nimg = _nimg("kimg", kimg)
    settings = {"kimg": total_nimg / 1000, "preset": preset, "patch": patch, "batch": batch, "lr": lr, "seed": seed,
                "snapshot_kimg": snapshot_kimg}
    config = TrainConfig(total_nimg=total_nimg, batch=batch, lr=lr, snapshot_nimg=round(snapshot_kimg * 1000),
                         seed=seed)
    torch.manual_seed(seed)  # the initial weights (overwritten by the checkpoint on resume)
    net = UNet.from_preset(preset)
    _check_patch(patch, 2 ** (len(net.channel_mults) - 1), "the U-Net's 2^(levels - 1)")
    data = training_patches(patch)
    checkpoint = out_dir / CHECKPOINT_NAME
    _start_record(out_dir, "pixel", settings, _command("train-shipped-pixel", out_dir, settings, resume, device),
                  resume, (checkpoint,), device)
    return train_prior(net, data, out_dir, config, resume=resume, device=device or "cpu", progress=progress)


class ShippedLatentResult(NamedTuple):
    """What :func:`train_shipped_latent` leaves.

    Attributes:
        autoencoder: the autoencoder's run.
        prior: the latent prior's run; None when the autoencoder's was interrupted (the prior did not start).
    """
    autoencoder: AutoencoderResult
    prior: TrainResult | None


def train_shipped_latent(out_dir, *, ae_kimg: float, kimg: float, preset: str = "tiny", ae_preset: str = "tiny",
                         patch: int = 64, batch: int = 32, lr: float = 2e-4, ae_batch: int = 16,
                         ae_lr: float = 1e-3, seed: int = 0, snapshot_kimg: float = 50.0, resume: bool = False,
                         device=None, progress: bool = True) -> ShippedLatentResult:
    """Trains the latent prior: a KL autoencoder of ``ae_preset`` in ``out_dir/autoencoder``, its scaling factor,
    then a U-Net of ``preset`` on the scaled latents of random ``patch`` crops of the embedded train photographs.

    Writes the autoencoder's checkpoint and log in ``out_dir/autoencoder``, the prior's in ``out_dir``, and the run
    record ``out_dir/shipped_run.json``. The initial weights of both networks come from ``seed``. On resume the
    autoencoder's run is continued (or found complete) first; once the prior has started on the latents of the
    autoencoder after N images, ``ae_kimg`` must stay N / 1000 (other latents would change the prior's data).

    Args:
        out_dir: the run's folder.
        ae_kimg, kimg: training lengths of the autoencoder and of the prior, thousands of images.
        preset, ae_preset: :data:`blindfast.models.unet.PRESETS` and
            :data:`blindfast.models.autoencoder.AUTOENCODER_PRESETS` names.
        patch: patch side, pixels: a multiple of f (the autoencoder's downsampling) times the U-Net's
            2^(levels - 1), 16 for the tiny presets.
        batch, lr: the prior's Adam batch and learning rate.
        ae_batch, ae_lr: the autoencoder's.
        seed: seeds the weights, the data and the noise.
        snapshot_kimg: a checkpoint of either network every this many thousand images; 0: only at the end.
        resume: continue the run in ``out_dir`` (only the lengths may change).
        device: torch device; default the CPU.
        progress: show progress bars.
    Returns:
        :class:`ShippedLatentResult`.
    Raises:
        ValueError: a setting out of range, an unknown preset, a patch size the networks cannot take, or a resume
            with other settings, or with another ``ae_kimg`` once the prior has started.
        FileNotFoundError: ``resume`` without a run in ``out_dir``.
        FileExistsError: a fresh run in an ``out_dir`` that holds a checkpoint.
    """
    out_dir = Path(out_dir)
    ae_nimg, total_nimg = _nimg("ae_kimg", ae_kimg), _nimg("kimg", kimg)
    settings = {"ae_kimg": ae_nimg / 1000, "kimg": total_nimg / 1000, "preset": preset, "ae_preset": ae_preset,
                "patch": patch, "batch": batch, "lr": lr, "ae_batch": ae_batch, "ae_lr": ae_lr, "seed": seed,
                "snapshot_kimg": snapshot_kimg}
    config = TrainConfig(total_nimg=total_nimg, batch=batch, lr=lr, snapshot_nimg=round(snapshot_kimg * 1000),
                         seed=seed)
    torch.manual_seed(seed)  # the initial weights of both networks (overwritten by the checkpoints on resume)
    ae = KLAutoencoder.from_preset(ae_preset)
    net = UNet.from_preset(preset, image_channels=ae.latent_channels)
    _check_patch(patch, ae.downsampling_factor * net.size_multiple,
                 f"the autoencoder's f = {ae.downsampling_factor} times the U-Net's {net.size_multiple}")
    data = training_patches(patch)
    ae_dir, checkpoint = out_dir / AUTOENCODER_DIR, out_dir / CHECKPOINT_NAME
    if resume and checkpoint.is_file() and (out_dir / RUN_RECORD).is_file():
        started = _read_json(out_dir / RUN_RECORD, "run record")["settings"].get("ae_kimg")
        if started != settings["ae_kimg"]:
            raise ValueError(f"the latent prior in {out_dir} was started on the latents of the autoencoder after "
                             f"{started} kimg: --ae-kimg must stay {started}, got {settings['ae_kimg']}")
    record = _start_record(out_dir, "latent", settings,
                           _command("train-shipped-latent", out_dir, settings, resume, device), resume,
                           (ae_dir / CHECKPOINT_NAME, checkpoint), device)
    device = device or "cpu"
    ae_result = train_autoencoder(ae, data, ae_dir, total_nimg=ae_nimg, batch=ae_batch, lr=ae_lr, seed=seed,
                                  snapshot_nimg=round(snapshot_kimg * 1000), resume=resume, device=device,
                                  progress=progress)
    if ae_result.interrupted:
        return ShippedLatentResult(ae_result, None)
    record["autoencoder_nimg"] = ae_result.nimg  # export checks that the autoencoder is still this one
    _write_json(out_dir / RUN_RECORD, record)
    # Built only now: LatentFlowPrior freezes the autoencoder's parameters.
    prior = LatentFlowPrior(ae.eval(), net)
    result = train_prior(prior.net, EncodedPatches(prior, data), out_dir, config,
                         resume=resume and checkpoint.is_file(), device=device, progress=progress)
    return ShippedLatentResult(ae_result, result)


# ---------------------------------------------------------------------------------------------------------------
# Export


def _final_loss(log: Path, nimg: int) -> tuple[float, int]:
    """The mean loss of the last :data:`FINAL_LOSS_STEPS` log rows up to ``nimg`` images, and the rows averaged."""
    if not log.is_file():
        raise FileNotFoundError(f"the training log {log} does not exist")
    with open(log, newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f) if int(row["nimg"]) <= nimg]
    if not losses:
        raise ValueError(f"the training log {log} has no step up to {nimg} images")
    last = losses[-FINAL_LOSS_STEPS:]
    return math.fsum(last) / len(last), len(last)


@torch.no_grad()
def _held_out_flow_loss(prior: Prior, data: Tensor, generator: torch.Generator) -> float:
    r"""The flow-matching loss :math:`\frac{1}{N n}\sum \lVert v(x_t, t) - (x_1 - x_0)\rVert^2` of ``prior`` on
    ``data`` (N, C, H, W) x_1, with x_0 standard normal and t uniform on [0, 1) from the CPU ``generator`` (the
    same draws whatever the device)."""
    x0 = torch.randn(data.shape, generator=generator, dtype=data.dtype).to(data.device)
    t = torch.rand(data.shape[0], generator=generator, dtype=data.dtype).to(data.device)
    total = 0.0
    for x1_part, x0_part, t_part in zip(data.split(_EVAL_BATCH), x0.split(_EVAL_BATCH), t.split(_EVAL_BATCH)):
        v = prior.velocity(flow_interpolate(x0_part, x1_part, t_part), t_part)
        total += flow_matching_loss(v, x0_part, x1_part).item() * x1_part.shape[0]
    return total / data.shape[0]


def _fitted_gaussian(data: Tensor) -> GaussianPrior:
    """The exact prior of N(mu_c, s^2 I) with the per-channel means and the standard deviation about them of
    ``data`` (N, C, H, W)."""
    mean = data.mean(dim=(0, 2, 3), keepdim=True)
    return GaussianPrior(mean[0], (data - mean).std().item())


@torch.no_grad()
def _reconstruction_psnr(ae: KLAutoencoder, patches: Tensor) -> float:
    """Mean PSNR of D(mu(x)) (mapped to [0, 1], clamped) against ``patches`` (N, C, H, W) in [0, 1]."""
    decoded = torch.cat([ae.decode(ae.encode(part * 2 - 1)) for part in patches.split(_EVAL_BATCH)])
    return psnr(((decoded + 1) / 2).clamp(0, 1), patches).mean().item()


def _checked_budget(out_dir: Path, name: str, new_bytes: int) -> None:
    """Raises ValueError when ``out_dir``'s files, with ``name``'s replaced by ``new_bytes``, pass the budget
    (temporary files, named ``.*``, do not count)."""
    mine = (f"{name}.safetensors", f"{name}.json")
    others = sum(p.stat().st_size for p in out_dir.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.name not in mine)
    if others + new_bytes > WEIGHTS_BUDGET_BYTES:
        raise ValueError(f"the shipped weights must total at most {WEIGHTS_BUDGET_BYTES} bytes: {out_dir} holds "
                         f"{others} bytes besides {name!r}, which adds {new_bytes}")


def export_shipped(checkpoint, name: str, *, out_dir=None, ema_std: float = 0.05, held_out: int = 256,
                   device=None) -> dict:
    """Writes ``out_dir/<name>.safetensors`` (the prior's state dict, float32, with the U-Net's EMA of relative std
    ``ema_std``) and the manifest ``out_dir/<name>.json``, measuring the quality on ``held_out`` patches of the
    test split (see the module docstring).

    The checkpoint must come from :func:`train_shipped_pixel` or :func:`train_shipped_latent`: its folder's run
    record gives the kind, the settings and the commands. Both files are written atomically, the weights first.

    Manifest fields: ``format``, ``version``, ``name``, ``kind``, ``weights`` (file name), ``sha256`` (of the
    weights file), ``dtype``, ``parameters``, ``net`` (U-Net arguments), ``commands`` (the training commands, in
    order), ``environments`` (what each command ran on: versions, threads, device), ``export_command``,
    ``settings``, ``seed``, ``images_seen``, ``final_loss`` and ``final_loss_steps`` (the mean of the last logged
    batch losses, the training weights), ``ema_std``, ``held_out`` (split, images, patches,
    size, seed), ``heldout_flow_loss``, ``gaussian_flow_loss``, ``blindfast_version``; pixel: ``denoising`` (``sigmas``, ``prior_psnr``,
    ``gaussian_psnr``, ``gaussian_width``, ``gain_db``), ``denoise_gain_db`` (the smaller gain),
    ``quality_bar_db`` and ``meets_quality_bar``; latent: ``autoencoder`` (its arguments), ``scaling_factor``,
    ``autoencoder_images_seen``, ``autoencoder_final_loss``, ``autoencoder_psnr``.

    Args:
        checkpoint: the prior's training checkpoint (``OUT/checkpoint.safetensors``).
        name: the prior's name, a file stem (letters, digits, ``_``, ``.``, ``-``).
        out_dir: where to write; default ``blindfast/weights`` in the package.
        ema_std: which of the checkpoint's EMAs to ship.
        held_out: number of held-out patches measured on.
        device: where to measure; default the CPU.
    Returns:
        the manifest.
    Raises:
        ValueError: a bad name or ``held_out``, an EMA the checkpoint lacks, a run record or log that does not fit
            the checkpoint, or files in ``out_dir`` that would exceed :data:`WEIGHTS_BUDGET_BYTES`.
        FileNotFoundError: the checkpoint, its run record, its log or the autoencoder's checkpoint is missing.
        blindfast.train.CheckpointError: an unreadable checkpoint.
    """
    checkpoint = Path(checkpoint)
    out_dir = WEIGHTS_DIR if out_dir is None else Path(out_dir)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must match {NAME_PATTERN.pattern} (a file name without extension), got {name!r}")
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 1:
        raise ValueError(f"held_out must be a positive integer, got {held_out!r}")
    _, header = read_checkpoint(checkpoint)
    if header.get("kind") == AUTOENCODER_KIND:
        raise ValueError(f"{checkpoint} is the autoencoder's checkpoint: export the prior's, "
                         f"{checkpoint.parent.parent / CHECKPOINT_NAME}")
    record_path = checkpoint.parent / RUN_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{checkpoint} has no run record {record_path}: export-prior ships priors trained by "
                                f"blindfast train-shipped-pixel or train-shipped-latent")
    record = _read_json(record_path, "run record")
    device = torch.device(device or "cpu")
    net = load_weights(checkpoint, UNet(**header["net_config"]), ema_std=ema_std)
    images_seen = int(header["nimg"])
    final_loss, final_steps = _final_loss(checkpoint.parent / LOG_NAME, images_seen)
    settings = record["settings"]
    patches = held_out_patches(held_out, settings["patch"])
    quality: dict = {"held_out": {"split": "test", "images": list(EMBEDDED_SPLITS["test"]), "patches": held_out,
                                  "size": settings["patch"], "seed": HELD_OUT_SEED}}
    extra: dict = {}
    if record["kind"] == "pixel":
        prior = NetworkPrior(net).to(device).eval()
        data = patches * 2 - 1
    elif record["kind"] == "latent":
        ae_checkpoint = checkpoint.parent / AUTOENCODER_DIR / CHECKPOINT_NAME
        _, ae_header = read_checkpoint(ae_checkpoint)
        if ae_header["nimg"] != record.get("autoencoder_nimg"):
            raise ValueError(f"the autoencoder {ae_checkpoint} has trained on {ae_header['nimg']} images, the prior "
                             f"on the latents of its state after {record.get('autoencoder_nimg')}")
        ae = load_weights(ae_checkpoint, KLAutoencoder(**ae_header["net_config"]))
        prior = LatentFlowPrior(ae, net).to(device).eval()
        data = torch.cat([prior.encode(part.to(device) * 2 - 1) for part in patches.split(_EVAL_BATCH)])
        ae_loss, _ = _final_loss(ae_checkpoint.parent / LOG_NAME, ae_header["nimg"])
        extra = {"autoencoder": ae.config(), "scaling_factor": ae.scaling_factor.item(),
                 "autoencoder_images_seen": ae_header["nimg"], "autoencoder_final_loss": ae_loss}
        quality["autoencoder_psnr"] = _reconstruction_psnr(ae, patches.to(device))
    else:
        raise ValueError(f"run record {record_path}: kind must be 'pixel' or 'latent', got {record.get('kind')!r}")
    for key, measured in (("heldout_flow_loss", prior), ("gaussian_flow_loss", _fitted_gaussian(data))):
        quality[key] = _held_out_flow_loss(measured.to(device), data.to(device),
                                           torch.Generator().manual_seed(HELD_OUT_SEED + 2))
    if record["kind"] == "pixel":
        result = denoise_gain_db(prior, patches.to(device), DENOISE_SIGMAS,
                                 generator=torch.Generator().manual_seed(HELD_OUT_SEED + 1))
        gain = result.pop("denoise_gain_db")
        quality.update({"denoising": result, "denoise_gain_db": gain, "quality_bar_db": QUALITY_BAR_DB,
                        "meets_quality_bar": gain >= QUALITY_BAR_DB})

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in prior.state_dict().items()}
    weights = out_dir / f"{name}.safetensors"
    data = save(state)
    _checked_budget(out_dir, name, len(data))
    sha256 = hashlib.sha256(data).hexdigest()
    save_atomic(weights, lambda f: f.write(data))
    export_command = (f"blindfast export-prior --checkpoint {checkpoint} --name {name} --ema-std {ema_std!r} "
                      f"--held-out {held_out}" + ("" if out_dir == WEIGHTS_DIR else f" --out-dir {out_dir}"))
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": name, "kind": record["kind"],
                "weights": weights.name, "sha256": sha256, "dtype": "float32",
                "parameters": sum(p.numel() for p in prior.parameters()), "net": net.config(), **extra,
                "commands": record["commands"], "environments": record.get("environments", []),
                "export_command": export_command, "settings": settings,
                "seed": header["config"]["seed"], "images_seen": images_seen, "final_loss": final_loss,
                "final_loss_steps": final_steps, "ema_std": float(ema_std), **quality,
                "blindfast_version": blindfast.__version__}
    _write_json(out_dir / f"{name}.json", manifest)
    return manifest
