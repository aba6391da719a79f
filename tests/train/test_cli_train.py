"""`blindfast train-prior`: a few hundred images of the tiny UNet on a folder of photos, resumed bit for bit; the
errors a user meets (missing folder, unknown preset, bad length, a checkpoint in the way)."""

import csv

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from blindfast.__main__ import main
from blindfast.models.unet import UNet
from blindfast.train import CHECKPOINT_NAME, LOG_NAME, load_weights, read_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Crops of three scikit-image photos, saved as PNG and JPEG (the reader handles both)."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[:96, 100:196])).save(folder / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(skimage.data.coffee()[100:180, 200:320])).save(folder / "coffee.png")
    Image.fromarray(np.ascontiguousarray(skimage.data.chelsea()[50:130, 100:200])).save(folder / "chelsea.jpg",
                                                                                         quality=95)
    return folder


def _train(photos, out, kimg, *extra):
    return main(["train-prior", "--data", str(photos), "--out", str(out), "--preset", "tiny", "--patch", "16",
                 "--kimg", str(kimg), "--batch", "8", "--micro-batch", "4", "--lr", "2e-3", "--snapshot-kimg", "0.1",
                 "--seed", "3", "--quiet", *extra])


def test_train_then_resume_equals_one_run(photos, tmp_path, capsys):
    split, whole = tmp_path / "split", tmp_path / "whole"
    assert _train(photos, split, 0.2) == 0
    printed = capsys.readouterr().out
    assert str(split / CHECKPOINT_NAME) in printed and str(split / LOG_NAME) in printed
    assert read_checkpoint(split / CHECKPOINT_NAME)[1]["nimg"] == 200
    assert _train(photos, split, 0.4, "--resume") == 0
    assert _train(photos, whole, 0.4) == 0

    (ts, hs), (tw, hw) = read_checkpoint(split / CHECKPOINT_NAME), read_checkpoint(whole / CHECKPOINT_NAME)
    assert hs["nimg"] == hw["nimg"] == 400
    assert ts.keys() == tw.keys()
    for name in ts:
        assert torch.equal(ts[name], tw[name]), name
    with open(split / LOG_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["nimg"]) for r in rows] == list(range(8, 401, 8))
    # the checkpoint rebuilds the network: UNet(**net_config), then an EMA's weights
    net = load_weights(split / CHECKPOINT_NAME, UNet(**hs["net_config"]), ema_std=0.10)
    assert net(torch.zeros(2, 3, 16, 16), torch.full((2,), 0.5)).shape == (2, 3, 16, 16)


def test_missing_data_folder(tmp_path, capsys):
    assert _train(tmp_path / "missing", tmp_path / "out", 0.1) == 2
    assert f"image folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_unknown_preset(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _train(photos, tmp_path / "out", 0.1, "--preset", "huge")
    assert exit_info.value.code == 2
    assert "preset must be one of ['base', 'small', 'tiny'], got 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("kimg", ["0", "-1"])
def test_non_positive_kimg(photos, tmp_path, capsys, kimg):
    with pytest.raises(SystemExit) as exit_info:
        _train(photos, tmp_path / "out", kimg)
    assert exit_info.value.code == 2
    assert f"argument --kimg: must be a finite number > 0, got '{kimg}'" in capsys.readouterr().err


def test_existing_checkpoint_needs_resume(photos, tmp_path, capsys):
    assert _train(photos, tmp_path, 0.016) == 0
    assert _train(photos, tmp_path, 0.016) == 2
    assert f"{tmp_path} already holds a checkpoint" in capsys.readouterr().err


def test_resume_without_checkpoint(photos, tmp_path, capsys):
    assert _train(photos, tmp_path, 0.016, "--resume") == 2
    assert f"no checkpoint to resume in {tmp_path}" in capsys.readouterr().err
