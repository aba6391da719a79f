"""train_cl data parallel: two gloo processes, launched as torchrun launches them, train as one process does on the
same global batch (float64): the same weights and, through the all-gather of the keys, the same queue on every rank;
likewise with two encoders and hard negatives (both queues, and the hard negatives gathered as in one process)."""

import json

import pytest
import torch

from _spawn import rank_results, save_result, set_torchrun_variables
from blindfast.methods.cl_dps.train import CLConfig, train_cl
from blindfast.train import World

WORLD_SIZE = 2
TINY = dict(patch=16, margin=16, kimg=0.024, batch=4, queue=8, snapshot_kimg=0.0)  # 6 steps, 2 pairs per rank
CONFIGS = {"one": TINY, "two": {**TINY, "two_encoders": True, "hard_negatives": 2}}


def _worker(rank, port, root):
    set_torchrun_variables(rank, WORLD_SIZE, port)
    torch.set_num_threads(1)
    with World.from_environment("cpu") as world:
        config = CLConfig(**json.loads((root / "config.json").read_text()))
        result = train_cl(root / "ddp", config, dtype=torch.float64, world=world, progress=False)
    save_result(root, rank, {k: v.detach().clone() for k, v in result.moco.state_dict().items()})


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def ranks(tmp_path_factory, request):
    root = tmp_path_factory.mktemp(f"cl_ddp_{request.param}")
    (root / "config.json").write_text(json.dumps(CONFIGS[request.param]))   # what the spawned ranks train
    return request.param, rank_results(_worker, root, WORLD_SIZE)


def test_two_processes_train_as_one_with_one_queue(ranks, tmp_path):
    mode, (rank0, rank1) = ranks
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    alone = train_cl(tmp_path, CLConfig(**CONFIGS[mode]), dtype=torch.float64, progress=False).moco.state_dict()
    # Each gradient entry sums at most 4 pairs x 16 x 16 x 32 products: the two orders of summation (one batch of
    # 4; two ranks of 2, then their mean) differ by a relative N eps ~ 3e-12; Adam's scale-free step moves by that
    # fraction of lr = 1e-3 per step, 6 steps; atol 1e-12 leaves room for the weights' own rounding.
    for name, value in alone.items():
        if value.is_floating_point():
            torch.testing.assert_close(rank0[name], value, rtol=0, atol=1e-12, msg=name)
        else:
            assert torch.equal(rank0[name], value), name
    # one encoder: 24 keys through a queue of 8; two: 12 keys through each
    assert int(rank0["pointer"]) == (0 if mode == "one" else 4)
