"""`psf-estimate`, `deblur --method ddm` and the `demo` main job end to end on tiny inputs (a tiny preset swapped
in: the real presets take minutes), and their clear errors on bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _spawn import free_port, run_ranks, set_torchrun_variables
from blindfast.cli import main
from blindfast.methods.ddm.gauge import node_centroids
from blindfast.methods.ddm.matching import MatchingConfig, Stage
from blindfast.methods.ddm.presets import Preset
from blindfast.train import TrainConfig

TINY = Preset("tiny", 16, TrainConfig(total_nimg=64, batch=16, lr=2e-4, ema_stds=(0.05,), seed=0),
              MatchingConfig(stages=(Stage("lens", 3, 1e-2), Stage("grid", 3, 1e-4)), batch=8, snapshot_steps=2))
TINY_UNIFORM = Preset("tiny", 16, TINY.step1,
                      MatchingConfig(stages=(Stage("gaussian", 3, 2e-2), Stage("kernel", 3, 2e-4)), batch=8,
                                     gaussian_weight=0.0, sparsity_fraction=0.1, snapshot_steps=2))


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setattr("blindfast.methods.ddm.preset",
                        lambda name, seed=0, uniform=False: TINY_UNIFORM if uniform else TINY)
    monkeypatch.setattr("blindfast.methods.ddm.demo.make_preset", lambda name, seed=0: TINY)


def _write_photos(folder, count, size, seed, grey=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (*size, 3) if not grey else size
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"photo{i}.png")
    return folder


def _folders(tmp_path):
    return _write_photos(tmp_path / "sharp", 3, (48, 56), 0), _write_photos(tmp_path / "blurry", 2, (40, 40), 1)


def test_psf_estimate_writes_a_normalised_grid_and_resumes(tmp_path, tiny_preset, capsys):
    sharp, blurry = _folders(tmp_path)
    out = tmp_path / "out"
    args = ["psf-estimate", "--sharp", str(sharp), "--blurry", str(blurry), "--out", str(out), "--grid", "2x3",
            "--ksize", "5", "--quiet"]
    assert main(args) == 0
    for name in ("psf_grid.npy", "psf_grid.png", "curve.csv", "curve.png", "report.json"):
        assert (out / name).is_file() and str(out / name) in capsys.readouterr().out + str(out / name)
    grid = np.load(out / "psf_grid.npy")
    assert grid.shape == (1, 3, 2, 3, 5, 5) and grid.dtype == np.float32
    assert (grid >= 0).all() and np.allclose(grid.sum(axis=(-2, -1)), 1, atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert report["grid"] == [2, 3] and report["frame"] == [40, 40] and report["step2_steps"] == 6
    # the unobservable common shift of each node is fixed at zero (methods/ddm/gauge.py), to a hundredth of a pixel
    # (the Fourier shift is exact for band-limited kernels, which 5x5 ones are not)
    assert node_centroids(torch.from_numpy(grid).double()).abs().max() < 0.01
    assert report["common_shift_removed_px"]["max"] >= report["common_shift_removed_px"]["mean"] > 0
    # a finished run resumes to the same grid; without --resume the command refuses to overwrite it
    assert main(args + ["--resume"]) == 0
    assert np.array_equal(np.load(out / "psf_grid.npy"), grid)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "add --resume" in capsys.readouterr().err

    # step 3 through deblur, with the learned grid
    restored = tmp_path / "restored.png"
    assert main(["deblur", "--method", "ddm", "--psf-grid", str(out / "psf_grid.npy"), "--input",
                 str(blurry / "photo0.png"), "--out", str(restored), "--quiet"]) == 0
    assert np.asarray(Image.open(restored)).shape == (40, 40, 3)


def test_uniform_blur_gives_a_one_node_grid(tmp_path, tiny_preset):
    """--uniform takes the preset's uniform variant (a Gaussian stage, then one kernel for every channel)."""
    sharp, blurry = _folders(tmp_path)
    assert main(["psf-estimate", "--sharp", str(sharp), "--blurry", str(blurry), "--out", str(tmp_path / "o"),
                 "--uniform", "--ksize", "5", "--quiet"]) == 0
    grid = np.load(tmp_path / "o" / "psf_grid.npy")
    assert grid.shape == (1, 3, 1, 1, 5, 5) and np.allclose(grid.sum(axis=(-2, -1)), 1, atol=1e-5)
    assert np.array_equal(grid[:, 0], grid[:, 1]) and np.array_equal(grid[:, 0], grid[:, 2])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [stage["kind"] for stage in report["step2"]["stages"]] == ["gaussian", "kernel"]
    assert report["step2_steps"] == 6


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no image"),
    ("corrupt", "cannot read image"),
    ("small", "smaller than the 16 x 16 patch"),
    ("sizes", "must all have one size"),
    ("grid", "must not exceed the blurry frame"),
    ("even", "--ksize must be odd"),
    ("missing", "does not exist"),
])
def test_bad_inputs_exit_2_with_the_reason(tmp_path, tiny_preset, capsys, case, message):
    sharp, blurry = _folders(tmp_path)
    grid, ksize = "2x2", "5"
    if case == "empty":
        for f in blurry.iterdir():
            f.unlink()
    elif case == "corrupt":
        (blurry / "photo1.png").write_bytes(b"\x89PNG broken")
    elif case == "small":
        _write_photos(blurry, 2, (12, 40), 2)
    elif case == "sizes":
        _write_photos(tmp_path / "blurry", 1, (40, 44), 3).joinpath("photo0.png").rename(blurry / "odd.png")
    elif case == "grid":
        grid = "41x2"
    elif case == "even":
        ksize = "6"
    elif case == "missing":
        blurry = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        main(["psf-estimate", "--sharp", str(sharp), "--blurry", str(blurry), "--out", str(tmp_path / "o"),
              "--grid", grid, "--ksize", ksize, "--quiet"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_deblur_method_ddm_needs_the_learned_grid(tmp_path, capsys):
    photo = _write_photos(tmp_path / "in", 1, (24, 24), 0) / "photo0.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["deblur", "--method", "ddm", "--input", str(photo), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and "pass --psf-grid" in capsys.readouterr().err


def test_demo_runs_the_main_job_and_reports_the_baselines(tmp_path, tiny_preset, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in ("psf_true_vs_learned.png", "before_after.png", "demo_report.json"):
        assert (out / name).is_file() and str(out / name) in printed
    report = json.loads((out / "demo_report.json").read_text())
    kernels = report["kernels"]
    assert set(kernels) == {"learned", "delta", "gaussian", "gaussian_per_node"}
    # the baselines are nested fits: per node beats one Gaussian beats a delta
    errors = [kernels[name]["relative_error"] for name in ("gaussian_per_node", "gaussian", "delta")]
    assert errors == sorted(errors) and errors[0] < errors[1]
    # the non-blind upper bound restores
    for true, blurry in zip(report["psnr"]["true"], report["psnr"]["blurry"]):
        assert true > blurry + 1
    assert abs(report["noise_estimated"] - report["noise"]) < 0.005


def _rank_under_torchrun(rank, port, root, args):
    """One of two processes with torchrun's variables, running the command with the tiny preset."""
    import torch

    import blindfast.methods.ddm

    torch.set_num_threads(1)
    set_torchrun_variables(rank, 2, port)
    blindfast.methods.ddm.preset = lambda name, seed=0, uniform=False: TINY
    (root / f"status{rank}").write_text(str(main(args)))


def test_psf_estimate_runs_data_parallel_under_torchrun_variables(tmp_path, capfd):
    sharp, blurry = _folders(tmp_path)
    out = tmp_path / "out"
    args = ["psf-estimate", "--sharp", str(sharp), "--blurry", str(blurry), "--out", str(out), "--grid", "2x2",
            "--ksize", "5", "--device", "cpu", "--quiet"]
    run_ranks(_rank_under_torchrun, (free_port(), tmp_path, args), 2)
    assert [(tmp_path / f"status{rank}").read_text() for rank in range(2)] == ["0", "0"]
    report = json.loads((out / "report.json").read_text())
    assert report["processes"] == 2 and report["step2_steps"] == 6
    grid = np.load(out / "psf_grid.npy")
    assert grid.shape == (1, 3, 2, 2, 5, 5) and np.allclose(grid.sum(axis=(-2, -1)), 1, atol=1e-5)
    # rank 0 alone prints the summary
    assert capfd.readouterr().out.count("wrote:") == 1
