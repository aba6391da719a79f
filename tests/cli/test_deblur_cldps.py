"""blindfast deblur --method cldps: the photo and its report, the method's own options, and its bad inputs (exit 2
under the command's usage, nothing written)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from blindfast.__main__ import main
from blindfast.data import embedded_images
from blindfast.methods.cl_dps import deblur_method
from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.physics import RotationBlur, rotation_params


@pytest.fixture()
def tiny_encoder(monkeypatch):
    """--encoder loads a small untrained encoder (downsampling 4) and records the name asked for."""
    asked = []

    def load(name_or_dir):
        asked.append(name_or_dir)
        torch.manual_seed(0)
        return ContrastiveEncoder(widths=(8, 16), blocks=(1, 1)).eval()

    monkeypatch.setattr(deblur_method, "_load_encoder", load)
    return asked


@pytest.fixture(scope="module")
def sharp():
    return embedded_images("test")[0][None, :, 150:214, 200:264].contiguous()   # (1, 3, 64, 64) coffee


def _write_png8(path, image):
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(path)


@pytest.fixture()
def files(tmp_path, sharp):
    op = RotationBlur(padding="reflect")
    y = op.A(sharp, **rotation_params(1, generator=torch.Generator().manual_seed(0)))
    _write_png8(tmp_path / "blurred.png", (y + 0.01 * torch.randn(y.shape)).clamp(0, 1))
    _write_png8(tmp_path / "sharp.png", sharp)
    _write_png8(tmp_path / "small.png", sharp[..., :40, :40])
    return tmp_path


def test_cldps_writes_the_photo_and_its_report(files, tiny_encoder, capsys):
    out = files / "restored.png"
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(out), "--method", "cldps",
                 "--encoder", "my_encoder", "--steps", "2", "--patch-stride", "8", "--zeta", "3", "--low-pass", "0.5",
                 "--reference", str(files / "sharp.png"), "--quiet"]) == 0
    assert tiny_encoder == ["my_encoder"]
    restored = np.asarray(Image.open(out))
    assert restored.shape == (64, 64, 3) and restored.dtype == np.uint8
    report = json.loads((files / "restored.report.json").read_text())
    assert report["method"] == "cldps" and report["solver"] is None
    method = report["method_report"]
    assert (method["steps"], method["zeta"], method["low_pass"], method["stride"], method["patch"]) == \
        (2, 3.0, 0.5, 8, 64)
    assert method["tiles"] == 1 and method["patches_per_step"] == 1 and method["encoder"] == "my_encoder"
    assert method["prior"] == "pixel_tiny" and method["sampling_s"] > 0
    assert set(report["restored"]) == {"psnr", "ssim"}
    assert "PSNR" in capsys.readouterr().out


def test_cldps_bad_inputs_exit_2_and_write_nothing(files, tiny_encoder, capsys):
    inp = str(files / "blurred.png")
    cases = [
        (["--input", str(files / "small.png")], r"at least one patch (64 x 64), got 40 x 40"),
        (["--input", inp, "--patch-stride", "0"], "argument --patch-stride: must be a positive integer, got '0'"),
        (["--input", inp, "--patch-stride", "65"], "stride must be at most the patch size 64"),
        (["--input", inp, "--zeta", "-1"], "argument --zeta: must be a finite number > 0, got '-1'"),
        (["--input", inp, "--low-pass", "-1"], "argument --low-pass: must be a finite number >= 0, got '-1'"),
        (["--input", inp, "--solver", "cg"], "--method cldps restores the photo itself: expected no --solver"),
        (["--input", inp, "--prior", "no_such_prior"], "no_such_prior"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["deblur", "--out", str(files / "bad.png"), "--method", "cldps", "--steps", "1", "--quiet", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "usage: blindfast deblur" in err and message in err, (argv, err)
        assert not (files / "bad.png").exists() and not (files / "bad.report.json").exists()


def test_cldps_defaults_to_the_shipped_encoder_and_prior(files):
    out = files / "default.png"
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(out), "--method", "cldps", "--steps",
                 "1", "--quiet"]) == 0
    method = json.loads((files / "default.report.json").read_text())["method_report"]
    assert (method["encoder"], method["prior"], method["zeta"], method["low_pass"], method["stride"],
            method["steps"]) == ("cl_tiny", "pixel_tiny", 30.0, 0.3, 32, 1)
    assert np.asarray(Image.open(out)).shape == (64, 64, 3)


def test_cldps_missing_encoder_exits_2(files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "bad.png"), "--method", "cldps",
              "--encoder", "no_such_encoder", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: blindfast deblur" in err and "no_such_encoder" in err
    assert not (files / "bad.png").exists()
