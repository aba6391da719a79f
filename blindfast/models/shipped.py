"""The priors shipped inside the package: ``blindfast/weights/<name>.safetensors`` and its ``<name>.json`` manifest.

A shipped prior is a small network trained by ``blindfast train-shipped-pixel`` or ``blindfast
train-shipped-latent`` on the embedded photographs (:func:`blindfast.data.embedded_images`, the train split) and
written by ``blindfast export-prior``. The manifest says how it was made and how good it is (see
:mod:`blindfast.train.shipped`); the weights file holds the prior's state dict (``net.*``, and ``autoencoder.*`` for a
latent prior) in float32, and the manifest its SHA-256, checked on every load. Weights are read with safetensors
only, never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

import blindfast
from blindfast import _validate
from blindfast.atomic_file import save_atomic
from blindfast.models.latent_prior import LatentFlowPrior
from blindfast.models.prior import NetworkPrior
from blindfast.models.unet import UNet

__all__ = ["load_shipped_prior", "load_prior", "shipped_priors", "file_sha256", "check_weights_file",
           "load_shipped_module", "save_shipped_module", "check_export_name", "ShippedPriorError", "WEIGHTS_DIR",
           "MANIFEST_FORMAT", "MANIFEST_VERSION", "KINDS", "NAME_PATTERN", "MAKE_ONE"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_FORMAT = "blindfast-shipped-prior"
MANIFEST_VERSION = 1
KINDS = ("pixel", "latent")
# A name is a file stem in WEIGHTS_DIR: no separators, so no name reaches outside it.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The commands that made the shipped pixel_tiny (about 70 min on 2 cores): 300k images give a gain of 2.23 dB over the
# best Gaussian smoothing on 256 held-out 64 x 64 patches, against the 1.5 dB bar of blindfast.train.shipped.
MAKE_ONE = ("blindfast train-shipped-pixel --out runs/pixel --kimg 300, then blindfast export-prior --checkpoint "
            "runs/pixel/checkpoint.safetensors --name pixel_tiny")


class ShippedPriorError(ValueError):
    """A shipped prior whose manifest or weights are unreadable, corrupt or inconsistent."""


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_file(weights: Path, sha256, what: str) -> None:
    """The shipped weights file ``weights`` exists and its bytes have the manifest's SHA-256 ``sha256``; ``what``
    names the shipped thing in the errors ("shipped prior 'pixel_tiny'").

    Raises:
        FileNotFoundError: no such file.
        ShippedPriorError: another SHA-256 (a corrupt or replaced file).
    """
    if not weights.is_file():
        raise FileNotFoundError(f"{what}: its weights file {weights} does not exist")
    got = file_sha256(weights)
    if got != sha256:
        raise ShippedPriorError(f"{what}: {weights} is corrupt: expected SHA-256 {sha256}, got {got}")


def load_shipped_module(name: str, directory, *, what: str, manifest_format: str, manifest_version: int,
                        command: str, build: Callable[[dict], nn.Module], device=None) -> nn.Module:
    """A shipped network other than a prior (the kernel denoiser, the contrastive encoder), in eval mode with frozen
    parameters: the manifest ``<name>.json`` of ``manifest_format`` / ``manifest_version`` in ``directory`` (default
    ``blindfast/weights``), the weights ``<name>.safetensors`` checked against its SHA-256, loaded into
    ``build(manifest)``.

    Args:
        what: the kind in messages ("shipped kernel denoiser").
        command: the blindfast command that exports one (``--export NAME``), named when none exists.
    Raises:
        TypeError: a name that is not a str.
        ValueError: a name that does not match :data:`NAME_PATTERN`.
        FileNotFoundError: no such manifest, or its weights file is missing.
        ShippedPriorError: a manifest of another format, a corrupt weights file, weights that do not fit.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, the name of a {what}, got {type(name).__name__}")
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must match {NAME_PATTERN.pattern} (a file name without extension), got {name!r}")
    folder = WEIGHTS_DIR if directory is None else Path(_validate.path_like("directory", directory))
    device = torch.device("cpu") if device is None else _validate.device("device", device)
    manifest_path = folder / f"{name}.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {what} {name!r}: {manifest_path} does not exist; make one with blindfast "
                                f"{command} --out DIR --export {name}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShippedPriorError(f"manifest {manifest_path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != manifest_format \
            or manifest.get("version") != manifest_version:
        got = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else type(manifest)
        raise ShippedPriorError(f"manifest {manifest_path}: expected format {manifest_format!r} version "
                                f"{manifest_version}, got {got}")
    weights = folder / f"{name}.safetensors"
    check_weights_file(weights, manifest.get("sha256"), f"{what} {name!r}")
    try:
        module = build(manifest)
        module.load_state_dict(load_file(str(weights)))
    except (KeyError, TypeError, ValueError, SafetensorError, RuntimeError) as err:
        raise ShippedPriorError(f"{what} {name!r}: its manifest or weights do not fit: {err}") from None
    return module.to(device).eval().requires_grad_(False)


def check_export_name(name) -> str:
    """``name`` as a shipped file stem (letters, digits, ``_``, ``.``, ``-``); ValueError otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must match {NAME_PATTERN.pattern} (a file name without extension), got {name!r}")
    return name


def save_shipped_module(module: nn.Module, name: str, out_dir, *, manifest_format: str, manifest_version: int,
                        fields: dict) -> dict:
    """Ships a network other than a prior: its float32 weights ``out_dir/<name>.safetensors``, then the manifest
    ``out_dir/<name>.json`` (format, version, name, weights, SHA-256, dtype, parameter count, the environment, and
    ``fields``), both atomically, the weights first: what :func:`load_shipped_module` reads back.

    Returns:
        the manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = save({key: value.detach().to(torch.float32).contiguous() for key, value in module.state_dict().items()})
    weights = out_dir / f"{check_export_name(name)}.safetensors"
    save_atomic(weights, lambda f: f.write(data))
    manifest = {
        "format": manifest_format, "version": manifest_version, "name": name, "weights": weights.name,
        "sha256": hashlib.sha256(data).hexdigest(), "dtype": "float32",
        "parameters": sum(p.numel() for p in module.parameters()),
        "environment": {"blindfast": blindfast.__version__, "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
        **fields,
    }
    save_atomic(out_dir / f"{name}.json", lambda f: f.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8")))
    return manifest


def _directory(directory) -> Path:
    """``directory`` (None for the package's ``blindfast/weights``) as a Path; TypeError for one that is not a path,
    NotADirectoryError for an existing file."""
    folder = WEIGHTS_DIR if directory is None else Path(_validate.path_like("directory", directory))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"directory must be a folder of shipped priors, got the file {folder}")
    return folder


def _read_manifest(path: Path) -> dict | None:
    """The manifest in ``path``, or None for a JSON file that is not one (another tool's file)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShippedPriorError(f"manifest {path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if manifest.get("version") != MANIFEST_VERSION:
        raise ShippedPriorError(f"manifest {path}: expected version {MANIFEST_VERSION}, got "
                                f"{manifest.get('version')!r}")
    return manifest


def shipped_priors(directory=None) -> dict[str, dict]:
    """The shipped priors: name -> manifest, for every ``<name>.json`` manifest in ``directory``.

    Args:
        directory: where the priors are; default ``blindfast/weights`` in the installed package.
    Returns:
        dict name -> manifest (sorted by name); empty when the directory is missing or holds none.
    Raises:
        TypeError: a directory that is not a str or os.PathLike.
        NotADirectoryError: a directory that is a file.
        ShippedPriorError: a manifest that is not valid JSON or of another version.
    """
    folder = _directory(directory)
    if not folder.is_dir():
        return {}
    priors = {}
    for path in sorted(folder.glob("*.json")):
        manifest = _read_manifest(path)
        if manifest is not None:
            priors[path.stem] = manifest
    return priors


def load_shipped_prior(name: str, directory=None, *, device=None) -> NetworkPrior | LatentFlowPrior:
    """A shipped prior, in eval mode with frozen parameters (``requires_grad`` False; gradients still reach the
    inputs, as posterior sampling needs).

    The weights file's SHA-256 is checked against the manifest before it is read; the architecture is rebuilt from
    the manifest (``net``: :class:`~blindfast.models.unet.UNet` arguments; ``autoencoder`` too for a latent prior).

    Args:
        name: the prior's name, a key of :func:`shipped_priors`.
        directory: where the priors are; default ``blindfast/weights`` in the installed package.
        device: where to put it; default the CPU.
    Returns:
        a :class:`~blindfast.models.prior.NetworkPrior` (kind "pixel", images (B, 3, H, W) in [-1, 1]) or a
        :class:`~blindfast.models.latent_prior.LatentFlowPrior` (kind "latent").
    Raises:
        TypeError: a name that is not a str, a directory that is not a path, a device that is neither a
            torch.device nor a str.
        NotADirectoryError: a directory that is a file.
        ValueError: a name that is not shipped (the message lists those that are, or says how to make one), a
            device name that names no device.
        FileNotFoundError: the manifest's weights file is missing.
        ShippedPriorError: a corrupt weights file (SHA-256 mismatch), an unreadable manifest or weights, or
            weights that do not fit the manifest's architecture.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, the name of a shipped prior, got {type(name).__name__} {name!r}")
    device = torch.device("cpu") if device is None else _validate.device("device", device)
    folder = _directory(directory)
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must match {NAME_PATTERN.pattern} (a file name without extension), got {name!r}")
    priors = shipped_priors(folder)
    if name not in priors:
        available = f"available: {', '.join(sorted(priors))}" if priors else \
            f"none is available yet; make one with: {MAKE_ONE}"
        raise ValueError(f"no shipped prior named {name!r} in {folder}; {available}")
    manifest = priors[name]
    weights = folder / manifest.get("weights", f"{name}.safetensors")
    if weights.parent != folder:
        raise ShippedPriorError(f"manifest {folder / (name + '.json')}: weights must be a file name in {folder}, "
                                f"got {manifest.get('weights')!r}")
    check_weights_file(weights, manifest.get("sha256"), f"shipped prior {name!r}")
    kind = manifest.get("kind")
    try:
        if kind == "pixel":
            prior = NetworkPrior(UNet(**manifest["net"]))
        elif kind == "latent":
            prior = LatentFlowPrior.from_config({"autoencoder": manifest["autoencoder"], "net": manifest["net"]})
        else:
            raise ShippedPriorError(f"shipped prior {name!r}: kind must be one of {KINDS}, got {kind!r}")
        state = load_file(str(weights))
    except (KeyError, TypeError, SafetensorError) as err:
        raise ShippedPriorError(f"shipped prior {name!r}: its manifest or weights are unreadable: {err!r}") from None
    try:
        prior.load_state_dict(state)
    except RuntimeError as err:
        raise ShippedPriorError(f"shipped prior {name!r}: {weights} does not fit the manifest's architecture: "
                                f"{err}") from None
    return prior.to(device).eval().requires_grad_(False)


def load_prior(name_or_folder: str, *, device=None) -> NetworkPrior | LatentFlowPrior:
    """A prior named on a command line (``--prior``): a folder holding exactly one prior (its manifest and
    weights, as ``blindfast export-prior`` writes), else the name of a shipped one (:func:`load_shipped_prior`).

    Raises:
        ValueError: a folder that holds no prior or several; the errors of :func:`load_shipped_prior`.
    """
    folder = Path(name_or_folder)
    if folder.is_dir():
        priors = shipped_priors(folder)
        if len(priors) != 1:
            raise ValueError(f"--prior {folder}: expected a folder holding one prior (a manifest .json and its "
                             f"weights), got {len(priors)}: {sorted(priors)}")
        return load_shipped_prior(next(iter(priors)), folder, device=device)
    return load_shipped_prior(name_or_folder, device=device)
