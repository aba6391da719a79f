"""Data-parallel training: two gloo processes train as one process does on the same global batch, only rank 0
writes, a resumed two-process run repeats an uninterrupted one bit for bit, the gradient mean; `blindfast
train-prior` under torchrun; bad launches and batches."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from _spawn import DEADLINE_S, free_port, rank_results, save_result, set_torchrun_variables
from _standin import SIZE, gaussian_data, stand_in
from blindfast.train import CHECKPOINT_NAME, LOG_NAME, TrainConfig, World, read_checkpoint, train_prior
from blindfast.train.distributed import LAUNCH_VARIABLES

F64 = torch.float64
WORLD_SIZE = 2
# Four steps of a global batch of 8 (per rank: 4 images, as 2 micro-batches of 2), a snapshot half-way.
RUN = dict(total_nimg=32, batch=8, lr=1e-2, snapshot_nimg=16)


def _parameters(net):
    return [p.detach().clone() for p in net.parameters()]


def _mean_of_gradients(world):
    """Gradients rank + 1 (everywhere), none (on no rank), and rank + 1 on rank 0 only, averaged over the world."""
    shape = (2, 3)
    everywhere, nowhere, rank0 = (torch.nn.Parameter(torch.zeros(shape, dtype=F64)) for _ in range(3))
    everywhere.grad = torch.full(shape, world.rank + 1.0, dtype=F64)
    if world.rank == 0:
        rank0.grad = torch.full(shape, 1.0, dtype=F64)
    loss = world.average_gradients([everywhere, nowhere, rank0], torch.tensor(10.0 * (world.rank + 1), dtype=F64))
    return {"everywhere": everywhere.grad, "nowhere": nowhere.grad, "rank0": rank0.grad, "loss": loss}


def _worker(rank, port, root):
    """Rank ``rank`` of 2, launched as torchrun would (its variables), trains the stand-in in float64 and saves what
    the tests check to ``root/result<rank>.pt``."""
    set_torchrun_variables(rank, WORLD_SIZE, port)
    torch.set_num_threads(1)
    result = {}
    with World.from_environment("cpu") as world:
        result["world"] = (world.rank, world.size, world.local_rank)
        # Other initial weights on rank 1: the broadcast from rank 0 must make them equal. A folder per rank, so
        # that a file written by rank 1 would show.
        losses = []
        net = stand_in(seed=rank, dropout=0.0).double()
        train_prior(net, gaussian_data, root / f"alone{rank}", TrainConfig(micro_batch=2, **RUN), world=world,
                    callback=lambda nimg, loss: losses.append(loss), progress=False)
        result["parameters"], result["losses"] = _parameters(net), losses
        # With dropout (a stream per rank): half the run, resumed into fresh networks, against the whole run.
        net = stand_in().double()
        train_prior(net, gaussian_data, root / "whole", TrainConfig(micro_batch=2, **RUN), world=world,
                    progress=False)
        result["whole"] = _parameters(net)
        half = TrainConfig(micro_batch=2, **{**RUN, "total_nimg": 16})
        train_prior(stand_in().double(), gaussian_data, root / "split", half, world=world, progress=False)
        net = stand_in(seed=5).double()
        train_prior(net, gaussian_data, root / "split", TrainConfig(micro_batch=2, **RUN), resume=True,
                    world=world, progress=False)
        result["split"] = _parameters(net)
        result["mean"] = _mean_of_gradients(world)
        # batch 12 = 2 ranks x 6 images, not whole micro-batches of 4
        try:
            train_prior(stand_in().double(), gaussian_data, root / "bad", TrainConfig(total_nimg=24, batch=12,
                        micro_batch=4), world=world, progress=False)
        except Exception as err:
            result["batch_error"] = (type(err).__name__, str(err))
    result["initialised_after_exit"] = dist.is_initialized()
    save_result(root, rank, result)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The folder the two ranks trained in, and their results."""
    root = tmp_path_factory.mktemp("ddp")
    return root, rank_results(_worker, root, WORLD_SIZE)


def _log_rows(folder):
    with open(folder / LOG_NAME, newline="") as f:
        return [(int(r["nimg"]), float(r["loss"]), float(r["lr"])) for r in csv.DictReader(f)]


def test_ranks_come_from_the_environment_and_leave_the_group(ranks):
    _, results = ranks
    assert [r["world"] for r in results] == [(0, 2, 0), (1, 2, 1)]
    assert not any(r["initialised_after_exit"] for r in results)


def test_two_processes_train_as_one_on_the_global_batch(ranks, tmp_path):
    root, results = ranks
    losses = []
    net = stand_in(dropout=0.0).double()
    train_prior(net, gaussian_data, tmp_path, TrainConfig(**RUN), callback=lambda nimg, loss: losses.append(loss),
                progress=False)
    # Both ranks apply the same all-reduced gradient: identical weights.
    for p, q in zip(results[0]["parameters"], results[1]["parameters"]):
        assert torch.equal(p, q)
    # Each gradient entry sums N = 8 x 3 x 8 x 8 = 1536 products; the two orders of summation (one batch of 8; two
    # ranks x two micro-batches of 2) differ by a relative N eps = 3.4e-13. Adam's step lr m/sqrt(v) is invariant to
    # the gradient's scale, so it moves by about that fraction of its size lr: four steps, < 4 x 1e-2 x 2 N eps =
    # 2.7e-14; atol 1e-12 leaves room for the rounding of the weights themselves (|w| < 1, eps 2.2e-16 per step).
    for got, want in zip(results[0]["parameters"], _parameters(net)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # The reported loss is the global mean: a mean of N positive terms, relative rounding N eps, plus the weights'
    # drift above (loss gradient O(1)).
    N = 8 * 3 * SIZE * SIZE
    for r in results:
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=F64), torch.tensor(losses, dtype=F64),
                                   rtol=N * torch.finfo(F64).eps + 1e-12, atol=0)
    # The checkpoints agree: the generators exactly (all ranks draw the global batch from the same states; the
    # dropout stream of rank 0 is the single process's), the rest to the weights' tolerance.
    (ddp, ddp_header), (alone, alone_header) = (read_checkpoint(root / "alone0" / CHECKPOINT_NAME),
                                                read_checkpoint(tmp_path / CHECKPOINT_NAME))
    assert ddp.keys() == alone.keys() and ddp_header["nimg"] == alone_header["nimg"] == 32
    for name in ddp:
        if name.startswith("rng/") or not ddp[name].is_floating_point():
            assert torch.equal(ddp[name], alone[name]), name
        else:
            torch.testing.assert_close(ddp[name], alone[name], rtol=0, atol=1e-12, msg=name)


def test_only_rank_zero_writes(ranks):
    root, _ = ranks
    assert sorted(os.listdir(root / "alone0")) == [CHECKPOINT_NAME, LOG_NAME]
    assert not (root / "alone1").exists()
    assert [row[0] for row in _log_rows(root / "alone0")] == [8, 16, 24, 32]


def test_two_process_run_resumes_exactly(ranks):
    """Half a run with dropout, resumed into networks of other initial weights, equals the whole run bit for bit:
    on both ranks, in the checkpoint and in the log."""
    root, results = ranks
    for r in results:
        for p, q in zip(r["split"], r["whole"]):
            assert torch.equal(p, q)
    (split, split_header), (whole, whole_header) = (read_checkpoint(root / "split" / CHECKPOINT_NAME),
                                                    read_checkpoint(root / "whole" / CHECKPOINT_NAME))
    assert split.keys() == whole.keys()
    for name in split:
        assert torch.equal(split[name], whole[name]), name
    assert split_header["nimg"] == whole_header["nimg"] == 32
    assert _log_rows(root / "split") == _log_rows(root / "whole")


def test_gradients_and_loss_are_averaged_over_the_ranks(ranks):
    """(1 + 2) / 2 where both ranks have a gradient, (1 + 0) / 2 where only rank 0 has one, None where neither
    has; the loss (10 + 20) / 2. All exact in binary floating point."""
    _, results = ranks
    for r in results:
        mean = r["mean"]
        assert torch.equal(mean["everywhere"], torch.full((2, 3), 1.5, dtype=F64))
        assert torch.equal(mean["rank0"], torch.full((2, 3), 0.5, dtype=F64))
        assert mean["nowhere"] is None
        assert mean["loss"].dtype == F64 and mean["loss"].item() == 15.0


# ---------------------------------------------------------------------------------------------------------------
# The command line under torchrun


def test_train_prior_under_torchrun(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(folder / f"image{i}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD_SIZE),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "blindfast", "train-prior", "--data", str(folder), "--out", str(out), "--preset", "tiny",
               "--patch", "16", "--kimg", "0.064", "--batch", "8", "--micro-batch", "2", "--lr", "2e-3",
               "--snapshot-kimg", "0", "--seed", "3", "--quiet"]
    # Run outside the source tree: `-m` puts the working directory first on sys.path, and the source tree's
    # blindfast has no built extension (the installed package has).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(os.listdir(out)) == [CHECKPOINT_NAME, LOG_NAME]
    assert read_checkpoint(out / CHECKPOINT_NAME)[1]["nimg"] == 64
    assert [row[0] for row in _log_rows(out)] == list(range(8, 65, 8))
    # only rank 0 prints the summary
    assert [line.split()[0] for line in done.stdout.splitlines() if line.startswith("checkpoint")] == ["checkpoint"]


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_batch_not_divisible_by_world_size_times_micro_batch(ranks):
    _, results = ranks
    for r in results:
        kind, message = r["batch_error"]
        assert kind == "ValueError"
        assert ("batch must be divisible by world size x micro_batch (batch = micro_batch x accumulation rounds x "
                "world size), got batch=12, world size 2, micro_batch=4") in message


@pytest.fixture
def launch(monkeypatch):
    """torchrun's variables for rank 0 of 2 (nothing listens on the port: every error comes before connecting)."""
    for name, value in zip(LAUNCH_VARIABLES, ("0", "2", "0", "127.0.0.1", "1")):
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_a_plain_process_is_a_world_of_one(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with World.from_environment() as world:
        assert world == World(0, 1, 0)
    assert not dist.is_initialized()


def test_launch_variables_missing(launch):
    launch.delenv("MASTER_ADDR")
    launch.delenv("MASTER_PORT")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 asks for data-parallel training, which needs all of "
                                         r"\['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'\] "
                                         r"\(torchrun sets them\), got \['MASTER_ADDR', 'MASTER_PORT'\] missing"):
        World.from_environment()


def test_launch_variable_not_an_integer(launch):
    launch.setenv("RANK", "first")
    with pytest.raises(ValueError, match=r"environment variable RANK must be an integer, got 'first'"):
        World.from_environment()


def test_rank_outside_the_world(launch):
    launch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK and LOCAL_RANK must lie in \[0, WORLD_SIZE\), got RANK=2, "
                                         r"LOCAL_RANK=0, WORLD_SIZE=2"):
        World.from_environment()


def test_device_without_a_backend(launch):
    with pytest.raises(ValueError, match=r"data-parallel training runs on cpu \(gloo\) or cuda \(nccl\), got "
                                         r"device 'meta'"):
        World.from_environment("meta")


def test_world_larger_than_its_process_group():
    with pytest.raises(ValueError, match=r"a world of size 3 needs an initialised torch.distributed process group "
                                         r"of that size .* got size 3 and no process group"):
        World(rank=1, size=3)


def test_world_of_size_zero():
    with pytest.raises(ValueError, match=r"the world size must be at least 1, got 0"):
        World(rank=0, size=0)
