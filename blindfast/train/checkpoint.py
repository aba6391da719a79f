"""Training checkpoints: one safetensors file, written atomically, read without executing anything from it.

Every tensor (network, power-function EMAs, optimiser state, generator states) is a safetensors entry; everything
else (image count, training and network configuration, optimiser hyperparameters, the optimiser state's index)
is JSON in the safetensors header. Neither format can carry code, so loading a checkpoint never unpickles: no
``torch.load`` and no ``pickle``. A SHA-256 over the JSON and the tensors' names, dtypes, shapes and bytes, stored in
the header, turns silent corruption anywhere in the file into a clear error.

Entries of a training checkpoint (see :func:`save_training_state`):

==========================  ======================================================================================
``net/<name>``              ``net.state_dict()``
``ema<i>/<name>``           the state dict of the i-th average of :class:`blindfast.train.PowerEMA`
``optimizer/<p>/<key>``     tensor entries of ``optimizer.state_dict()["state"][p]``
``rng/<name>``              ``get_state()`` of the training generators, ``torch.get_rng_state()`` as
                            ``rng/torch_cpu`` and each CUDA device's as ``rng/torch_cuda<i>``
==========================  ======================================================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from blindfast.atomic_file import save_atomic
from blindfast.train.ema import PowerEMA

__all__ = ["CheckpointError", "write_checkpoint", "read_checkpoint", "check_resumable", "save_training_state",
           "load_training_state", "load_weights", "FORMAT", "VERSION", "prefixed", "unprefixed", "global_rng_states",
           "set_global_rng_states", "flatten_optimizer", "restore_optimizer", "load_module_state"]

FORMAT = "blindfast-training-state"
VERSION = 1
_HEADER_KEY = "blindfast"  # the one safetensors metadata entry: our JSON


class CheckpointError(ValueError):
    """A file that is not a readable blindfast checkpoint, or does not fit what it is loaded into."""


def _digest(tensors: Mapping[str, Tensor], header: Mapping) -> str:
    """SHA-256 over the header (canonical JSON) and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_checkpoint(path, tensors: Mapping[str, Tensor], header: Mapping) -> None:
    """Writes ``tensors`` and the JSON ``header`` to ``path`` atomically.

    The file is serialised in memory, written to a temporary file in the same folder, flushed to disk, then
    renamed over ``path`` (:func:`blindfast.atomic_file.save_atomic` with ``durable=True``), so ``path`` always holds
    either the previous checkpoint or the complete new one, never a partial file.

    Args:
        path: the checkpoint file (its folder must exist).
        tensors: name -> tensor (any device; written from CPU copies).
        header: JSON-serialisable dict; ``format``, ``version`` and ``sha256`` (of the header and the tensors)
            are added.
    Raises:
        TypeError: ``header`` is not JSON-serialisable.
    """
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    header = {**header, "format": FORMAT, "version": VERSION}
    text = json.dumps({**header, "sha256": _digest(tensors, header)})
    data = save(tensors, metadata={_HEADER_KEY: text})
    save_atomic(path, lambda f: f.write(data), durable=True)


def read_checkpoint(path) -> tuple[dict[str, Tensor], dict]:
    """Reads a file written by :func:`write_checkpoint` and checks its integrity.

    Args:
        path: the checkpoint file.
    Returns:
        (tensors, header): name -> CPU tensor, and the JSON header as a dict.
    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated, corrupt, not a safetensors file, or not a blindfast checkpoint of
            a known version (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file: {err}") from None
    if _HEADER_KEY not in metadata:
        raise CheckpointError(f"checkpoint {path} is a safetensors file without a blindfast header (metadata keys "
                              f"{sorted(metadata)})")
    try:
        header = json.loads(metadata[_HEADER_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {path} has a corrupt header: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        got = (header.get("format"), header.get("version")) if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"checkpoint {path}: expected format {FORMAT!r} version {VERSION}, got {got}")
    if header.pop("sha256", None) != _digest(tensors, header):
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match the SHA-256 in its header")
    return tensors, header


# ---------------------------------------------------------------------------------------------------------------
# What a training run saves


def check_resumable(path, saved: Mapping, current: Mapping, may_change: tuple[str, ...], settings: str) -> None:
    """Refuses to resume the checkpoint ``path`` with other settings: every key of ``current`` but those in
    ``may_change`` must have its value in the checkpoint's ``saved`` settings.

    Raises:
        ValueError: ``cannot resume <path> with <settings> (<key>: <saved> -> <current>, ...); only <may_change> may
            change``, where ``settings`` words what differs ("a different configuration", "other settings").
    """
    changed = {key: (saved.get(key), value) for key, value in current.items()
               if key not in may_change and saved.get(key) != value}
    if changed:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(f"cannot resume {path} with {settings} ({listed}); only {' and '.join(may_change)} may "
                         f"change")


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with names ``<prefix>/<name>``: one group of a checkpoint's entries."""
    return {f"{prefix}/{name}": t for name, t in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries ``<prefix>/<name>`` of ``tensors``, named ``<name>``: the inverse of :func:`prefixed`."""
    start = len(prefix) + 1
    return {name[start:]: t for name, t in tensors.items() if name.startswith(prefix + "/")}


def global_rng_states() -> dict[str, Tensor]:
    """torch's default generators: dropout and any other draw without an explicit generator uses them."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states.update({f"torch_cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_global_rng_states(states: Mapping[str, Tensor]) -> None:
    """Restores :func:`global_rng_states` (CUDA states only where CUDA is available)."""
    torch.set_rng_state(states["torch_cpu"])
    devices = sum(name.startswith("torch_cuda") for name in states)
    if devices and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([states[f"torch_cuda{i}"] for i in range(devices)])


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The optimiser state as tensors and a JSON index (param_groups, and the state's non-tensor values)."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state_values": scalars,
                     "state_tensors": sorted(tensors)}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], index: Mapping,
                       path: Path) -> None:
    """Loads :func:`flatten_optimizer`'s ``tensors`` and ``index`` into ``optimizer``.

    Raises:
        CheckpointError: a tensor the index lists is missing, or the state does not fit ``optimizer``.
    """
    state: dict[int, dict] = {}
    for name in index["state_tensors"]:
        if name not in tensors:
            raise CheckpointError(f"checkpoint {path} lacks the optimiser tensor {name!r} its index lists")
        parameter, key = name.split("/", 1)
        state.setdefault(int(parameter), {})[key] = tensors[name]
    for parameter, values in index["state_values"].items():
        state.setdefault(int(parameter), {}).update(values)
    live = optimizer.state_dict()["param_groups"]
    if len(live) != len(index["param_groups"]):
        raise CheckpointError(f"checkpoint {path} holds {len(index['param_groups'])} optimiser parameter groups, "
                              f"this optimiser has {len(live)}")
    # JSON turned tuples (Adam's betas) into lists: give each value back the type it has in the live optimiser.
    groups = [{key: tuple(value) if isinstance(mine.get(key), tuple) else value for key, value in saved.items()}
              for mine, saved in zip(live, index["param_groups"])]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path}: its optimiser state does not fit this optimiser: {err}") from None


def load_module_state(module: nn.Module, tensors: Mapping[str, Tensor], what: str, path: Path) -> None:
    """``module.load_state_dict(tensors)``, with a mismatch raised as a CheckpointError naming ``what`` and
    ``path``."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: {what} does not fit this network: {err}") from None


def _network_config(net: nn.Module) -> dict | None:
    """``net.config()`` (constructor arguments, e.g. of :class:`blindfast.models.unet.UNet`) where it exists."""
    return net.config() if callable(getattr(net, "config", None)) else None


def save_training_state(path, *, net: nn.Module, ema: PowerEMA, optimizer: torch.optim.Optimizer,
                        generators: Mapping[str, torch.Generator], nimg: int, config: Mapping) -> None:
    """Writes everything a run needs to continue exactly, atomically (see the module docstring for the layout).

    Args:
        path: the checkpoint file.
        net, ema, optimizer: the network, its averages and its optimiser.
        generators: name -> the run's generators (data, noise), saved with torch's default generators.
        nimg: images trained on so far.
        config: the run's training configuration, JSON-serialisable.
    """
    optimizer_tensors, optimizer_index = flatten_optimizer(optimizer)
    rng = {name: g.get_state() for name, g in generators.items()}
    global_rng = global_rng_states()
    tensors = {**prefixed("net", net.state_dict()), **prefixed("optimizer", optimizer_tensors),
               **prefixed("rng", {**rng, **global_rng})}
    for i, average in enumerate(ema.averages):
        tensors.update(prefixed(f"ema{i}", average.state_dict()))
    header = {"nimg": int(nimg), "config": dict(config), "net_class": type(net).__qualname__,
              "net_config": _network_config(net), "ema_stds": list(ema.stds), "optimizer": optimizer_index,
              "generators": sorted(rng), "global_generators": sorted(global_rng)}
    write_checkpoint(path, tensors, header)


def load_training_state(path, *, net: nn.Module, ema: PowerEMA, optimizer: torch.optim.Optimizer,
                        generators: Mapping[str, torch.Generator]) -> tuple[int, dict]:
    """Restores a :func:`save_training_state` checkpoint into live objects, and torch's default generators.

    Args:
        path: the checkpoint file.
        net, ema, optimizer: built as for the run that wrote it (same architecture, EMA stds, parameter groups).
        generators: name -> generator, the names the run saved.
    Returns:
        (nimg, config): images trained on, and the saved training configuration.
    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable (see :func:`read_checkpoint`), or it does not fit ``net``, ``ema``,
            ``optimizer`` or ``generators``.
    """
    path = Path(path)
    tensors, header = read_checkpoint(path)
    saved_config = header.get("net_config")
    if saved_config is not None and _network_config(net) is not None and saved_config != _network_config(net):
        raise CheckpointError(f"checkpoint {path} was written by a network with config {saved_config}, this one "
                              f"has {_network_config(net)}")
    if header["ema_stds"] != list(ema.stds):
        raise CheckpointError(f"checkpoint {path} holds EMAs with stds {header['ema_stds']}, this run tracks "
                              f"{list(ema.stds)}")
    if sorted(generators) != header["generators"]:
        raise CheckpointError(f"checkpoint {path} holds the generators {header['generators']}, expected "
                              f"{sorted(generators)}")
    load_module_state(net, unprefixed("net", tensors), "the network state", path)
    for i, average in enumerate(ema.averages):
        load_module_state(average, unprefixed(f"ema{i}", tensors), f"the EMA with std {ema.stds[i]}", path)
    restore_optimizer(optimizer, unprefixed("optimizer", tensors), header["optimizer"], path)
    rng = unprefixed("rng", tensors)
    for name, generator in generators.items():
        generator.set_state(rng[name])
    set_global_rng_states({name: rng[name] for name in header["global_generators"]})
    return int(header["nimg"]), header["config"]


def load_weights(path, net: nn.Module, *, ema_std: float | None = None) -> nn.Module:
    """Loads trained weights from a training checkpoint into ``net``: an EMA's, or the raw training weights.

    Args:
        path: a checkpoint written by :func:`save_training_state`.
        net: a network of the checkpoint's architecture (e.g. ``UNet(**header["net_config"])``).
        ema_std: the relative std of the EMA to load (one of the checkpoint's ``ema_stds``), or None for the
            weights the optimiser left.
    Returns:
        ``net``, with the weights loaded.
    Raises:
        FileNotFoundError, CheckpointError: as :func:`read_checkpoint`; also for an ``ema_std`` the checkpoint
            lacks, or weights that do not fit ``net``.
    """
    path = Path(path)
    tensors, header = read_checkpoint(path)
    if ema_std is None:
        load_module_state(net, unprefixed("net", tensors), "the network state", path)
        return net
    stds = header.get("ema_stds", [])
    if float(ema_std) not in stds:
        raise CheckpointError(f"checkpoint {path} holds EMAs with stds {stds}, got ema_std={ema_std}")
    index = stds.index(float(ema_std))
    load_module_state(net, unprefixed(f"ema{index}", tensors), f"the EMA with std {ema_std}", path)
    return net
