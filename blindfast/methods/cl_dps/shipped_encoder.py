r"""The shipped contrastive encoder: ``blindfast/weights/<name>.safetensors`` and its ``<name>.json`` manifest.

Like the shipped kernel denoiser (:mod:`blindfast.methods.latent_dem.shipped_denoiser`: the same folder, name
pattern and SHA-256 check, a format of its own that :func:`blindfast.models.shipped.shipped_priors` skips),
format ``blindfast-cl-encoder``. Its fields: ``format``, ``version``, ``name``, ``weights``, ``sha256``, ``dtype``,
``parameters``, ``encoder`` (:class:`ContrastiveEncoder` arguments), ``commands`` (the training commands, in
order), ``export_command``, ``settings`` (the training settings), ``data``, ``pairs_seen``, ``training_seconds``,
``environment``, ``held_out`` (the held-out pairs: photos, count per family, seed, stream) and ``retrieval``: per
family, the top-1 accuracy of retrieving each x_t patch's own y patch among the N y patches of its family by the
inference feature :meth:`ContrastiveEncoder.features` (cosine similarity), at the training's flow times and at
t = 1 (the clean patch), next to chance, 1 / N, and those of the same pairs through the encoder as initialised
(``top1_untrained``, ``top1_clean_untrained``): the flattened map keeps the patch's layout, so an untrained encoder
already tells most places apart; the trained one must do better, across the blur.

The held-out pairs come from the embedded TEST photos (the training uses the train photos or a folder), drawn as
the training's pairs from a generator stream training never uses. The weights file holds the query encoder's state
dict (trunk and heads) in float32, the trained weights bit for bit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from blindfast import _validate
from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair, encoder_from_config
from blindfast.methods.cl_dps.pairs import PairConfig, draw_pairs
from blindfast.methods.cl_dps.train import COMMAND, EMBEDDED, CLConfig, build_encoder, load_photos
from blindfast.models.shipped import (NAME_PATTERN, WEIGHTS_DIR, check_export_name, load_shipped_module,
                                      save_shipped_module)
from blindfast.train.checkpoint import load_module_state, read_checkpoint, unprefixed
from blindfast.train.steps import CHECKPOINT_NAME, stream_seed

__all__ = ["load_encoder", "export_encoder", "measure_retrieval", "DEFAULT_NAME", "MANIFEST_FORMAT",
           "MANIFEST_VERSION", "HELD_OUT_PAIRS", "HELD_OUT_STREAM"]

DEFAULT_NAME = "cl_tiny"
MANIFEST_FORMAT = "blindfast-cl-encoder"
MANIFEST_VERSION = 1
HELD_OUT_PAIRS = 256  # per family
HELD_OUT_STREAM = 10  # training uses streams 0-4
_EVAL_BATCH = 128


def _features(features, patches: torch.Tensor) -> torch.Tensor:
    """``features`` (an encoder's bound ``features`` or ``measurement_features``) of (N, C, n, n) patches."""
    with torch.no_grad():
        return torch.cat([features(part) for part in patches.split(_EVAL_BATCH)])


def measure_retrieval(encoder: ContrastiveEncoder | EncoderPair, photos, config: PairConfig, count: int,
                      generator: torch.Generator) -> list[dict]:
    """Top-1 retrieval accuracy of x_t patches among y patches, per family of ``config``.

    For each family, ``count`` pairs are drawn (:func:`draw_pairs` with that family alone); the similarity of x_t
    patch i and y patch j is the dot product of their ``features`` and ``measurement_features`` (unit vectors; the
    same encoder's ``features`` on both sides for a :class:`ContrastiveEncoder`), and the
    retrieval of i is right when j = i scores highest among the ``count``.

    Args:
        encoder: the encoder (used as given; put it in eval mode first).
        photos: (C, H, W) photos in [0, 1], at least ``config.crop`` on both sides.
        config: the pair settings.
        count: N, pairs per family.
        generator: draws the pairs.
    Returns:
        per family: ``family``, ``pairs`` (N), ``chance`` (1 / N), ``top1`` (x_t at the training's times),
        ``top1_clean`` (t = 1: the clean patch against y), ``mean_time``.
    """
    rows = []
    for family in config.families:
        pairs = draw_pairs(photos, count, replace(config, families=(family,)), generator)
        keys = _features(encoder.measurement_features, pairs.y)
        accuracy = {}
        for name, queries in (("top1", pairs.x_t), ("top1_clean", pairs.clean)):
            best = (_features(encoder.features, queries) @ keys.T).argmax(dim=1)
            accuracy[name] = (best == torch.arange(count)).double().mean().item()
        rows.append({"family": family, "pairs": count, "chance": 1 / count, **accuracy,
                     "mean_time": pairs.t.double().mean().item()})
    return rows


def _run_encoder(run_dir: Path) -> tuple[ContrastiveEncoder | EncoderPair, dict, Path]:
    """The query encoder (or pair) of a train-cl run folder, its checkpoint header and the checkpoint path."""
    checkpoint = run_dir / CHECKPOINT_NAME
    tensors, header = read_checkpoint(checkpoint)
    encoder = encoder_from_config(header["encoder"])
    load_module_state(encoder, {name[len("query."):]: t for name, t in unprefixed("moco", tensors).items()
                                        if name.startswith("query.")}, "the query encoder", checkpoint)
    return encoder, header, checkpoint


def export_encoder(run_dir, name: str = DEFAULT_NAME, *, out_dir=None, held_out: int = HELD_OUT_PAIRS) -> dict:
    """Measures the trained encoder of ``run_dir`` on held-out pairs of the embedded test photos and writes
    ``out_dir/<name>.safetensors`` and the manifest ``out_dir/<name>.json`` (module docstring), both atomically,
    the weights first.

    Args:
        run_dir: the folder of a :func:`~blindfast.methods.cl_dps.train.train_cl` run.
        name: a file stem (letters, digits, ``_``, ``.``, ``-``).
        out_dir: where to write; default ``blindfast/weights`` in the package.
        held_out: N, held-out pairs per family.
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
    encoder, header, _ = _run_encoder(run_dir)
    encoder.eval()
    config = CLConfig.from_json(header["config"])
    pair_config = config.pairs
    generator = torch.Generator().manual_seed(stream_seed(config.seed, HELD_OUT_STREAM))
    photos = load_photos(EMBEDDED, pair_config.crop, "test")
    retrieval = measure_retrieval(encoder, photos, pair_config, held_out, generator)
    # the same pairs (the same generator state) through the encoder as initialised: what training added
    generator = torch.Generator().manual_seed(stream_seed(config.seed, HELD_OUT_STREAM))
    untrained = measure_retrieval(build_encoder(config.preset, encoder.channels, config.seed,
                                                config.two_encoders).eval(), photos,
                                  pair_config, held_out, generator)
    for row, before in zip(retrieval, untrained):
        row["top1_untrained"], row["top1_clean_untrained"] = before["top1"], before["top1_clean"]

    fields = {
        "encoder": {k: list(v) if isinstance(v, tuple) else v for k, v in encoder.config.items()},
        "commands": header["commands"],
        "export_command": f"{config.command(run_dir, resume=True)} --export {name} --held-out {held_out}"
                          + ("" if out_dir == WEIGHTS_DIR else f" --export-dir {out_dir}"),
        "settings": header["config"],
        "data": {"photos": "embedded train photos (blindfast.data.embedded_images('train'))"
                 if config.data == EMBEDDED else config.data, "pairs": pair_config.to_json()},
        "pairs_seen": header["nimg"], "training_seconds": header["seconds"],
        "held_out": {"photos": "embedded test photos (blindfast.data.embedded_images('test'))",
                     "pairs_per_family": held_out, "seed": config.seed, "stream": HELD_OUT_STREAM},
        "retrieval": retrieval,
    }
    return save_shipped_module(encoder, name, out_dir, manifest_format=MANIFEST_FORMAT,
                               manifest_version=MANIFEST_VERSION, fields=fields)


def load_encoder(name_or_dir=DEFAULT_NAME, *, directory=None,
                 device=None) -> ContrastiveEncoder | EncoderPair:
    """A contrastive encoder in eval mode with frozen parameters: a shipped one by name, or the query encoder of a
    ``train-cl`` run folder (an :class:`EncoderPair` where it was trained with two encoders).

    Args:
        name_or_dir: a shipped encoder's name (its manifest's file stem), or a folder holding a train-cl
            ``checkpoint.safetensors`` (an existing folder of that name wins over a shipped name).
        directory: where shipped encoders are; default ``blindfast/weights`` in the installed package.
        device: where to put it; default the CPU.
    Returns:
        a :class:`ContrastiveEncoder`.
    Raises:
        TypeError: not a str or path.
        ValueError: a name that does not match the pattern.
        FileNotFoundError: no manifest of that name, or its weights file is missing.
        ShippedPriorError: a manifest of another format, a corrupt weights file (SHA-256 mismatch), or weights that
            do not fit the manifest's architecture.
        blindfast.train.CheckpointError: an unreadable run checkpoint.
    """
    device = torch.device("cpu") if device is None else _validate.device("device", device)
    name_or_dir = _validate.path_like("name_or_dir", name_or_dir)
    if Path(name_or_dir).is_dir():
        encoder, _, _ = _run_encoder(Path(name_or_dir))
        return encoder.to(device).eval().requires_grad_(False)
    name = name_or_dir
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"expected a shipped encoder's name (matching {NAME_PATTERN.pattern}) or a train-cl run "
                         f"folder, got {name!r}")
    return load_shipped_module(name, directory, what="shipped contrastive encoder",
                               manifest_format=MANIFEST_FORMAT, manifest_version=MANIFEST_VERSION, command=COMMAND,
                               build=lambda manifest: encoder_from_config(manifest["encoder"]), device=device)
