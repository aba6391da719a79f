"""`psf-estimate --sr 2` and `deblur --sr 2` end to end on tiny folders (a tiny preset swapped in), and their clear
errors on bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from test_psf_estimate import TINY, _write_photos
from blindfast.cli import main
from blindfast.methods.ddm.matching import MatchingConfig, Stage
from blindfast.methods.ddm.presets import Preset

TINY_SR = Preset("tiny", 16, TINY.step1,
                 MatchingConfig(stages=(Stage("gaussian", 3, 2e-2), Stage("linear", 3, 1e-4)), batch=8,
                                sparsity_weight=0.1, centre_weight=0.1, sum_to_one_weight=0.1, snapshot_steps=2))


@pytest.fixture
def tiny_sr_preset(monkeypatch):
    monkeypatch.setattr("blindfast.methods.ddm.preset", lambda name, seed=0, uniform=False, sr=1: TINY_SR)


def _folders(tmp_path, sharp_size=(48, 56)):
    """High-resolution sharp photos and low-resolution ones of another size (unpaired: not half the sharp size)."""
    return _write_photos(tmp_path / "sharp", 3, sharp_size, 0), _write_photos(tmp_path / "low", 2, (40, 40), 1)


def _estimate(tmp_path, sharp, low, *extra):
    return main(["psf-estimate", "--sharp", str(sharp), "--blurry", str(low), "--out", str(tmp_path / "o"),
                 "--ksize", "5", "--quiet", *extra])


def test_sr_writes_one_kernel_and_deblur_restores_at_twice_the_size(tmp_path, tiny_sr_preset, capsys):
    sharp, low = _folders(tmp_path)
    assert _estimate(tmp_path, sharp, low, "--sr", "2") == 0
    grid = np.load(tmp_path / "o" / "psf_grid.npy")
    assert grid.shape == (1, 3, 1, 1, 5, 5) and grid.dtype == np.float32
    assert (grid >= 0).all() and np.allclose(grid.sum(axis=(-2, -1)), 1, atol=1e-5)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["sr_factor"] == 2 and report["grid"] == [1, 1] and report["frame"] == [40, 40]
    assert [stage["kind"] for stage in report["step2"]["stages"]] == ["gaussian", "linear"]

    restored = tmp_path / "restored.png"
    reference = _write_photos(tmp_path / "ref", 1, (80, 80), 5) / "photo0.png"
    assert main(["deblur", "--psf-grid", str(tmp_path / "o" / "psf_grid.npy"), "--sr", "2", "--input",
                 str(low / "photo0.png"), "--out", str(restored), "--reference", str(reference), "--quiet"]) == 0
    assert np.asarray(Image.open(restored)).shape == (80, 80, 3)
    deblur_report = json.loads((tmp_path / "restored.report.json").read_text())
    assert deblur_report["sr_factor"] == 2 and "measurement" not in deblur_report
    assert set(deblur_report["restored"]) == {"psnr", "ssim"}


@pytest.mark.parametrize("args, message", [
    (["--sr", "3"], "--sr must be one of the supported factors 2, got 3"),
    (["--sr", "2", "--grid", "2x2"], "not allowed with argument"),
    (["--sr", "2", "--uniform"], "not allowed with argument"),
])
def test_sr_bad_options_exit_2_with_the_reason(tmp_path, tiny_sr_preset, capsys, args, message):
    sharp, low = _folders(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _estimate(tmp_path, sharp, low, *args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sr_needs_sharp_photos_of_twice_the_patch_plus_the_kernel(tmp_path, tiny_sr_preset, capsys):
    sharp, low = _folders(tmp_path, sharp_size=(35, 60))        # 2 x 16 + 5 - 1 = 36 > 35
    with pytest.raises(SystemExit) as exit_info:
        _estimate(tmp_path, sharp, low, "--sr", "2")
    assert exit_info.value.code == 2
    assert "sharp photo 0 is (35, 60) pixels, smaller than the 36 x 36 crop (patch 2 x 16 + kernel 5 - 1)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--solver", "wiener"], "--sr restores by --solver cg, got --solver wiener"),
    (["--tile", "16"], "--sr restores the whole photo: expected no --tile"),
    (["--reference", "REF"], "expected the restored shape (3, 48, 48) (C, H, W), got (3, 24, 24)"),
    (["--grid"], "expected a 1x1 --psf-grid (psf-estimate --sr), got a 2x2 grid"),
])
def test_deblur_sr_bad_inputs_exit_2(tmp_path, capsys, extra, message):
    photo = _write_photos(tmp_path / "in", 1, (24, 24), 0) / "photo0.png"
    kernel = tmp_path / "k.npy"
    np.save(kernel, np.full((5, 5), 1 / 25, np.float32))
    blur = ["--kernel", str(kernel)]
    if extra == ["--reference", "REF"]:
        extra = ["--reference", str(photo)]
    elif extra == ["--grid"]:
        np.save(tmp_path / "g.npy", np.full((1, 3, 2, 2, 5, 5), 1 / 25, np.float32))
        blur, extra = ["--psf-grid", str(tmp_path / "g.npy")], []
    with pytest.raises(SystemExit) as exit_info:
        main(["deblur", *blur, "--sr", "2", "--input", str(photo), "--out", str(tmp_path / "x.png"), "--quiet",
              *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
