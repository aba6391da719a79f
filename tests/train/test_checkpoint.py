"""Checkpoints: exact round trips of tensors and training state, atomic replacement, no unpickling, clear errors
for missing, truncated, corrupt and foreign files and for state that does not fit."""

import json
import os
import pickle
import stat

import pytest
import torch
from _files import flip_bits
from safetensors.torch import save_file
from torch import nn

from blindfast import atomic_file
from blindfast.train import checkpoint as ckpt
from blindfast.train.checkpoint import (CheckpointError, load_training_state, load_weights, read_checkpoint,
                                        save_training_state, write_checkpoint)
from blindfast.train.ema import PowerEMA

F64 = torch.float64


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f64": torch.randn(5, generator=g, dtype=F64),
        "bf16": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).to(torch.float16),
        "i64": torch.arange(-3, 3),
        "u8": torch.Generator().get_state(),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "strided": torch.randn(4, 6, generator=g)[:, ::2],  # non-contiguous: written as its values
    }


def _write(tmp_path, name="state.safetensors", header=None):
    path = tmp_path / name
    write_checkpoint(path, _tensors(), header if header is not None else {"nimg": 128, "note": "x"})
    return path


def test_tensors_and_header_round_trip_exactly(tmp_path):
    path = _write(tmp_path, header={"nimg": 128, "lr": 0.1, "stds": (0.05, 0.1), "nested": {"a": [1, None]}})
    tensors, header = read_checkpoint(path)
    expected = _tensors()
    assert sorted(tensors) == sorted(expected)
    for name, t in expected.items():
        assert tensors[name].dtype == t.dtype and tensors[name].shape == t.shape
        assert torch.equal(tensors[name], t), name
    assert header == {"nimg": 128, "lr": 0.1, "stds": [0.05, 0.1], "nested": {"a": [1, None]},
                      "format": ckpt.FORMAT, "version": ckpt.VERSION}


def test_file_is_safetensors_with_a_json_header(tmp_path):
    """The layout safetensors specifies: an 8-byte little-endian header length, then JSON; ours is in
    __metadata__, so any safetensors reader (no code execution) can open it."""
    data = _write(tmp_path).read_bytes()
    length = int.from_bytes(data[:8], "little")
    outer = json.loads(data[8:8 + length])
    assert json.loads(outer["__metadata__"]["blindfast"])["nimg"] == 128
    assert outer["f64"]["dtype"] == "F64" and outer["f64"]["shape"] == [5]


def test_rewrite_replaces_and_leaves_no_temporary_file(tmp_path):
    path = _write(tmp_path, header={"nimg": 1})
    write_checkpoint(path, {"x": torch.ones(2)}, {"nimg": 2})
    tensors, header = read_checkpoint(path)
    assert header["nimg"] == 2 and list(tensors) == ["x"]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    path = _write(tmp_path, header={"nimg": 1})

    def fail(fd):  # the new file is written but cannot be flushed to disk
        raise failure

    monkeypatch.setattr(atomic_file.os, "fsync", fail)
    with pytest.raises(type(failure)):
        write_checkpoint(path, {"x": torch.ones(2)}, {"nimg": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)[1]["nimg"] == 1
    assert os.listdir(tmp_path) == [path.name]


def test_failed_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = _write(tmp_path, header={"nimg": 1})

    def refuse(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(atomic_file.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_checkpoint(path, {"x": torch.ones(2)}, {"nimg": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)[1]["nimg"] == 1
    assert os.listdir(tmp_path) == [path.name]


def test_checkpoint_is_flushed_to_disk_with_the_umask_permissions(tmp_path, monkeypatch):
    synced = []
    real_fsync = atomic_file.os.fsync
    monkeypatch.setattr(atomic_file.os, "fsync", lambda fd: (synced.append(os.fstat(fd)), real_fsync(fd)))
    previous = os.umask(0o022)
    try:
        path = _write(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [stat.S_ISREG(s.st_mode) for s in synced] == [True, False]  # the file, then its folder
    assert synced[0].st_size == path.stat().st_size


def test_header_not_json_rejected_before_writing(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_checkpoint(tmp_path / "a.safetensors", {"x": torch.ones(1)}, {"bad": object()})
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.safetensors"
    with pytest.raises(FileNotFoundError, match=rf"checkpoint {path} does not exist"):
        read_checkpoint(path)


@pytest.mark.parametrize("keep", [4, 100, -1], ids=["in-length", "in-header", "in-data"])
def test_truncated_file(tmp_path, keep):
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is truncated or not a safetensors file"):
        read_checkpoint(path)


def test_flipped_byte_in_tensor_data(tmp_path):
    path = _write(tmp_path)
    flip_bits(path, -20, 0x10)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is corrupt: its contents do not match"):
        read_checkpoint(path)


def test_changed_value_in_header(tmp_path):
    """A digit changed inside the JSON keeps it valid JSON of the same length: the digest catches it."""
    path = _write(tmp_path, header={"nimg": 128})
    data = path.read_bytes()
    assert data.count(b'\\"nimg\\": 128') == 1
    path.write_bytes(data.replace(b'\\"nimg\\": 128', b'\\"nimg\\": 129'))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is corrupt"):
        read_checkpoint(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is truncated or not a safetensors file"):
        read_checkpoint(path)


def test_safetensors_file_of_someone_else(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"without a blindfast header \(metadata keys \['format'\]\)"):
        read_checkpoint(path)


def test_unknown_version(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.ones(2)}, str(path),
              metadata={"blindfast": json.dumps({"format": ckpt.FORMAT, "version": 99})})
    with pytest.raises(CheckpointError, match=rf"expected format '{ckpt.FORMAT}' version 1, got "
                                              rf"\('{ckpt.FORMAT}', 99\)"):
        read_checkpoint(path)


# ---------------------------------------------------------------------------------------------------------------
# Training state


class _Net(nn.Module):
    """Parameters, a float buffer and an integer buffer (BatchNorm), and a config() like UNet's."""

    def __init__(self, width=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.width = width
        self.body = nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Linear(width, 2))

    def config(self):
        return {"width": self.width}

    def forward(self, x):
        return self.body(x)


def _run(steps=3, seed=0):
    """A net, its EMA, Adam and two generators after ``steps`` steps."""
    net = _Net(seed=seed)
    ema = PowerEMA(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.99))
    generators = {"data": torch.Generator().manual_seed(seed + 1), "noise": torch.Generator().manual_seed(seed + 2)}
    for step in range(1, steps + 1):
        _step(net, optimizer, generators)
        ema.update(net, 8 * step, 8)
    return net, ema, optimizer, generators


def _step(net, optimizer, generators):
    x = torch.randn(8, 3, generator=generators["data"])
    target = torch.randn(8, 2, generator=generators["noise"])
    loss = (net(x) - target).square().mean() + 0.01 * torch.randn(()).abs()  # the global generator too
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _fresh():
    net = _Net(seed=7)  # other initial weights: everything must come from the file
    optimizer = torch.optim.Adam(net.parameters(), lr=1.0, betas=(0.5, 0.5))
    return net, PowerEMA(net), optimizer, {"data": torch.Generator(), "noise": torch.Generator()}


def _assert_same_state(a, b):
    (net_a, ema_a, opt_a, gen_a), (net_b, ema_b, opt_b, gen_b) = a, b
    for x, y in [(net_a, net_b), *zip(ema_a.averages, ema_b.averages)]:
        sa, sb = x.state_dict(), y.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = opt_a.state_dict(), opt_b.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert isinstance(opt_b.param_groups[0]["betas"], tuple)
    assert oa["state"].keys() == ob["state"].keys()
    for index in oa["state"]:
        for key, value in oa["state"][index].items():
            assert torch.equal(value, ob["state"][index][key]), (index, key)
    for name in gen_a:
        assert torch.equal(gen_a[name].get_state(), gen_b[name].get_state())


def test_training_state_round_trip_continues_exactly(tmp_path):
    original = _run()
    path = tmp_path / "state.safetensors"
    save_training_state(path, net=original[0], ema=original[1], optimizer=original[2], generators=original[3],
                        nimg=24, config={"batch": 8})
    global_state = torch.get_rng_state()
    torch.manual_seed(123)  # clobbered: the file must restore it
    restored = _fresh()
    nimg, config = load_training_state(path, net=restored[0], ema=restored[1], optimizer=restored[2],
                                       generators=restored[3])
    assert (nimg, config) == (24, {"batch": 8})
    assert torch.equal(torch.get_rng_state(), global_state)
    _assert_same_state(original, restored)
    # one more step from each: bit-identical
    for run in (original, restored):
        torch.set_rng_state(global_state)
        _step(run[0], run[2], run[3])
        run[1].update(run[0], 32, 8)
    _assert_same_state(original, restored)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    net, ema, optimizer, generators = _run()
    path = tmp_path / "state.safetensors"
    save_training_state(path, net=net, ema=ema, optimizer=optimizer, generators=generators, nimg=24, config={})

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    restored = _fresh()
    load_training_state(path, net=restored[0], ema=restored[1], optimizer=restored[2], generators=restored[3])
    _assert_same_state((net, ema, optimizer, generators), restored)


def _saved(tmp_path):
    net, ema, optimizer, generators = _run()
    path = tmp_path / "state.safetensors"
    save_training_state(path, net=net, ema=ema, optimizer=optimizer, generators=generators, nimg=24, config={})
    return path, net, ema


def test_other_architecture_rejected(tmp_path):
    path, _, _ = _saved(tmp_path)
    net = _Net(width=5)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} was written by a network with config "
                                              rf"\{{'width': 4\}}, this one has \{{'width': 5\}}"):
        load_training_state(path, net=net, ema=PowerEMA(net), optimizer=torch.optim.Adam(net.parameters()),
                            generators={"data": torch.Generator(), "noise": torch.Generator()})


def test_state_that_does_not_fit_the_network_rejected(tmp_path):
    path, _, _ = _saved(tmp_path)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # no config(): the state dict itself does not fit
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: the network state does not fit this network"):
        load_training_state(path, net=net, ema=PowerEMA(net), optimizer=torch.optim.Adam(net.parameters()),
                            generators={"data": torch.Generator(), "noise": torch.Generator()})


def test_other_ema_stds_rejected(tmp_path):
    path, _, _ = _saved(tmp_path)
    net = _Net()
    with pytest.raises(CheckpointError, match=r"holds EMAs with stds \[0.05, 0.1\], this run tracks \[0.2\]"):
        load_training_state(path, net=net, ema=PowerEMA(net, [0.2]), optimizer=torch.optim.Adam(net.parameters()),
                            generators={"data": torch.Generator(), "noise": torch.Generator()})


def test_other_generators_rejected(tmp_path):
    path, _, _ = _saved(tmp_path)
    net = _Net()
    with pytest.raises(CheckpointError, match=r"holds the generators \['data', 'noise'\], expected \['data'\]"):
        load_training_state(path, net=net, ema=PowerEMA(net), optimizer=torch.optim.Adam(net.parameters()),
                            generators={"data": torch.Generator()})


def test_other_optimizer_groups_rejected(tmp_path):
    path, _, _ = _saved(tmp_path)
    net = _Net()
    groups = [{"params": net.body[0].parameters()}, {"params": [*net.body[1].parameters(), *net.body[2].parameters()]}]
    with pytest.raises(CheckpointError, match=r"holds 1 optimiser parameter groups, this optimiser has 2"):
        load_training_state(path, net=net, ema=PowerEMA(net), optimizer=torch.optim.Adam(groups),
                            generators={"data": torch.Generator(), "noise": torch.Generator()})


@pytest.mark.parametrize("which", [None, 0.05, 0.10])
def test_load_weights_of_an_ema_or_the_training_weights(tmp_path, which):
    path, net, ema = _saved(tmp_path)
    source = net if which is None else ema.averages[ema.stds.index(which)]
    target = load_weights(path, _Net(seed=9), ema_std=which)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_load_weights_of_an_absent_ema(tmp_path):
    path, _, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds EMAs with stds \[0.05, 0.1\], got ema_std=0.2"):
        load_weights(path, _Net(), ema_std=0.2)
