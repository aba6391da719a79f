"""DDM step 2 data-parallel: two gloo processes, each on half of every global batch, take the steps one process
takes on the whole batch (the exact-prior problem of test_matching.py); only rank 0 writes; a batch that does not
split over the ranks is refused."""

import os

import pytest
import torch

from _spawn import rank_results, save_result, set_torchrun_variables
from blindfast.methods.ddm.matching import CHECKPOINT_NAME, CURVE_NAME, MatchingConfig, Stage, match_operator
from blindfast.methods.ddm.photos import BlurryPatches, SharpPatches
from blindfast.train import World
from test_matching import KSIZE, PATCH, _camera, _exact_prior

WORLD_SIZE = 2
STEPS = 3


def _fit(out_dir, world=World(), batch=32):
    """A lens stage, then a free grid (whose every tap gets a gradient), with the twin and the learnt noise."""
    sharp, blurry_set, _ = _camera()
    blurry = BlurryPatches(blurry_set, PATCH)
    config = MatchingConfig(stages=(Stage("lens", STEPS, 0.02), Stage("grid", STEPS, 1e-3)), batch=batch,
                            lr_aux=0.02, reference="twin", snapshot_steps=1, init_sigma=1.0)
    losses = []
    result = match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame), grid=(2, 2),
                            kernel_size=KSIZE, sigma=0.01, config=config, out_dir=out_dir, progress=False,
                            world=world, callback=lambda step, grid: losses.append(step) or {})
    return result, losses


def _worker(rank, port, root):
    set_torchrun_variables(rank, WORLD_SIZE, port)
    torch.set_num_threads(1)
    outcome = {}
    with World.from_environment("cpu") as world:
        result, callbacks = _fit(root / "fit", world)
        outcome.update(psf_grid=result.psf_grid, noise_std=result.noise_std, steps=result.steps, callbacks=callbacks)
        try:
            _fit(root / "odd", world, batch=31)
        except ValueError as err:
            outcome["batch_error"] = str(err)
    save_result(root, rank, outcome)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddm_ddp")
    return root, rank_results(_worker, root, WORLD_SIZE)


def _losses(folder):
    rows = (folder / CURVE_NAME).read_text().splitlines()[1:]
    return torch.tensor([float(row.split(",")[2]) for row in rows], dtype=torch.float64)


def test_two_processes_fit_as_one_on_the_global_batch(ranks, tmp_path):
    root, results = ranks
    alone, _ = _fit(tmp_path)
    # both ranks apply the same all-reduced gradients: the same estimate
    assert torch.equal(results[0]["psf_grid"], results[1]["psf_grid"])
    assert results[0]["noise_std"] == results[1]["noise_std"] and results[0]["steps"] == 2 * STEPS
    # Each gradient is a float32 mean of the same 32 patches' terms summed in another order (two halves of 16
    # added after the all-reduce): relative differences of ~1e-6; Adam's steps (~lr m / sqrt(v)) move by that
    # fraction of lr per step, far below atol 1e-6 on taps of ~1e-2 after 6 steps.
    torch.testing.assert_close(results[0]["psf_grid"], alone.psf_grid, rtol=0, atol=1e-6)
    assert results[0]["noise_std"] == pytest.approx(alone.noise_std, rel=1e-5)
    # the curve's loss is the global batch's mean on every step
    torch.testing.assert_close(_losses(root / "fit"), _losses(tmp_path), rtol=1e-4, atol=1e-7)


def test_only_rank_zero_writes_and_calls_back(ranks):
    root, results = ranks
    assert sorted(os.listdir(root / "fit")) == sorted([CHECKPOINT_NAME, CURVE_NAME])
    assert results[0]["callbacks"] == list(range(1, 2 * STEPS + 1)) and results[1]["callbacks"] == []


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(ranks):
    _, results = ranks
    for r in results:
        assert "batch must be divisible by world size" in r["batch_error"] and "batch=31, world size 2" in \
            r["batch_error"]
