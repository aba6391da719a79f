"""blindfast deblur: 8/16-bit round trips, the report, the method registry, and every bad input (exit 2 under the
command's usage, nothing written)."""

import json

import numpy as np
import pytest
import tifffile
import torch
from _cli import command_error
from PIL import Image

from blindfast.__main__ import main
from blindfast.cli.image_io import encode_png16
from blindfast.data import embedded_images, read_image
from blindfast.metrics import psnr
from blindfast.physics import Blur, SpaceVaryingBlur, gaussian_kernel
from blindfast.restore import registry
from blindfast.restore.registry import DeblurMethod, MethodResult, register_method

KERNEL = gaussian_kernel(9, 1.5)                    # (9, 9), sums to 1


@pytest.fixture(scope="module")
def sharp():
    return embedded_images("test")[0][None, :, 150:198, 200:264].contiguous()   # (1, 3, 48, 64) coffee


@pytest.fixture(scope="module")
def blurred(sharp):
    y = Blur(padding="reflect").A(sharp, kernel=KERNEL[None, None])
    return (y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


def _write_png16(path, image):
    pixels = (image[0].permute(1, 2, 0) * 65535).round().to(torch.int32).numpy().astype(np.uint16)
    path.write_bytes(encode_png16(pixels))


def _write_png8(path, image):
    pixels = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def files(tmp_path, sharp, blurred):
    _write_png16(tmp_path / "blurred.png", blurred)
    _write_png16(tmp_path / "sharp.png", sharp)
    np.save(tmp_path / "kernel.npy", KERNEL.numpy())
    return tmp_path


def test_png16_encoder_round_trips_through_an_independent_decoder(tmp_path, sharp):
    _write_png16(tmp_path / "x.png", sharp)
    expected = (sharp[0] * 65535).round() / 65535
    torch.testing.assert_close(read_image(tmp_path / "x.png"), expected, rtol=0, atol=1e-7)   # torchvision decodes


def test_deblur_16bit_png_round_trip_with_report(files, sharp, blurred, capsys):
    out = files / "restored.png"
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(out), "--kernel",
                 str(files / "kernel.npy"), "--solver", "cg", "--sigma", "0.01", "--reference",
                 str(files / "sharp.png"), "--quiet"]) == 0
    assert out.read_bytes()[24] == 16                                   # IHDR bit depth: the input's 16 bits
    restored = read_image(out)
    assert not torch.equal((restored * 255).round() / 255, restored)   # values finer than 8 bits survived
    report = json.loads((files / "restored.report.json").read_text())
    assert report["solver"] == "cg" and report["bits"] == 16 and report["settings"]["sigma"] == 0.01
    assert report["restored"]["psnr"] > report["measurement"]["psnr"] + 1
    assert abs(report["restored"]["psnr"] - psnr(restored[None], sharp).item()) < 0.01   # 16-bit rounding only
    assert report["times"]["solve_s"] > 0
    assert sorted(p.name for p in files.iterdir()) == ["blurred.png", "kernel.npy", "restored.png",
                                                       "restored.report.json", "sharp.png"]   # no temporary files
    assert str(out) in capsys.readouterr().out


def test_deblur_8bit_png_in_8bit_out_and_16bit_tiff(tmp_path, blurred):
    _write_png8(tmp_path / "in.png", blurred)
    np.save(tmp_path / "kernel.npy", KERNEL.numpy())
    assert main(["deblur", "--input", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png"), "--kernel",
                 str(tmp_path / "kernel.npy"), "--solver", "wiener", "--quiet"]) == 0
    with Image.open(tmp_path / "out.png") as image:
        assert image.mode == "RGB"
    pixels = (blurred[0].permute(1, 2, 0) * 65535).round().to(torch.int32).numpy().astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", pixels, photometric="rgb")
    assert main(["deblur", "--input", str(tmp_path / "in.tif"), "--out", str(tmp_path / "out.tif"), "--kernel",
                 str(tmp_path / "kernel.npy"), "--tile", "32", "--quiet"]) == 0
    assert tifffile.imread(tmp_path / "out.tif").dtype == np.uint16


def test_deblur_pnp_with_psf_grid_on_tiles(files, capsys):
    grid = np.broadcast_to(KERNEL.numpy(), (2, 2, 9, 9)).copy()
    np.save(files / "grid.npy", grid)
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "pnp.png"), "--psf-grid",
                 str(files / "grid.npy"), "--solver", "pnp", "--iters", "3", "--tile", "32", "--reference",
                 str(files / "sharp.png"), "--quiet"]) == 0
    report = json.loads((files / "pnp.report.json").read_text())
    assert report["restored"]["psnr"] > report["measurement"]["psnr"]
    assert report["settings"]["prior"] == "pixel_tiny" and report["settings"]["sigma_estimated"]


def test_a_registered_method_plugs_in_without_editing_the_command(files, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_METHODS", {})
    seen = {}

    def estimate(y, options):
        seen["shape"], seen["scale"] = tuple(y.shape), options.fake_scale
        return MethodResult(SpaceVaryingBlur(padding="reflect"), {"psf_grid": KERNEL[None, None, None, None].clone()})

    register_method(DeblurMethod("fake", "a stand-in blind method", estimate,
                                 lambda group: group.add_argument("--fake-scale", type=float, default=2.0)))
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "m.png"), "--method", "fake",
                 "--fake-scale", "3", "--quiet"]) == 0
    assert seen == {"shape": (1, 3, 48, 64), "scale": 3.0}
    assert json.loads((files / "m.report.json").read_text())["method"] == "fake"
    with pytest.raises(ValueError, match="already registered"):
        register_method(DeblurMethod("fake", "another", estimate))


def test_a_method_that_restores_itself_writes_its_photo_files_and_report(files, sharp, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_METHODS", {})
    runs = []

    def restore(y, options):
        runs.append(options.method)
        return MethodResult(restored=sharp, report={"note": "the truth"},
                            outputs={".kernel.npy": lambda f: np.save(f, np.eye(3, dtype=np.float32))})

    register_method(DeblurMethod("oracle", "returns the sharp photo", restore, restores=True))
    assert main(["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "o.png"), "--method", "oracle",
                 "--reference", str(files / "sharp.png"), "--quiet"]) == 0
    report = json.loads((files / "o.report.json").read_text())
    assert report["method_report"] == {"note": "the truth"} and report["solver"] is None
    assert report["restored"]["psnr"] > 90      # the truth, up to the 16-bit reference's quantisation
    np.testing.assert_array_equal(np.load(files / "o.kernel.npy"), np.eye(3, dtype=np.float32))
    for option, value in (("--solver", "cg"), ("--tile", "32")):
        err = command_error(capsys, ["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "p.png"),
                                  "--method", "oracle", option, value])
        assert f"--method oracle restores the photo itself: expected no {option}, got one" in err
    assert not (files / "p.png").exists() and runs == ["oracle"]     # refused before the method ran
    register_method(DeblurMethod("liar", "says it returns an operator", restore))
    err = command_error(capsys, ["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "p.png"),
                                 "--method", "liar"])
    assert "--method liar is registered with restores=False but returned a photo" in err


def test_a_method_result_holds_an_operator_or_a_photo():
    with pytest.raises(ValueError, match="either an operator"):
        MethodResult()
    with pytest.raises(ValueError, match="either an operator"):
        MethodResult(SpaceVaryingBlur(padding="reflect"), {"psf_grid": KERNEL}, restored=KERNEL)


def _bad_inputs(files):
    """(extra argv, expected message) for each bad input; each case writes its own files."""
    rgba = np.zeros((48, 64, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(files / "rgba.png")
    (files / "text.png").write_bytes(b"this is not an image")
    good = (files / "blurred.png").read_bytes()
    (files / "truncated.png").write_bytes(good[: len(good) // 2])
    np.save(files / "big.npy", np.ones((49, 49), np.float32) / 49**2)
    np.save(files / "negative.npy", -KERNEL.numpy())
    nan = KERNEL.numpy().copy()
    nan[4, 4] = np.nan
    np.save(files / "nan.npy", nan)
    np.save(files / "grid2.npy", np.ones((2, 2, 2, 9, 9), np.float32) / 81)
    inp, kernel = str(files / "blurred.png"), str(files / "kernel.npy")
    return [
        (["--input", inp, "--kernel", str(files / "big.npy")], "must fit in the image, got image 48x64"),
        (["--input", inp, "--psf-grid", str(files / "grid2.npy")], "must have 1 or 3 channels (the image's), got 2"),
        (["--input", inp, "--kernel", str(files / "negative.npy")], "must have a positive sum"),
        (["--input", inp, "--kernel", str(files / "nan.npy")], "kernel must be finite, got NaN"),
        (["--input", str(files / "text.png"), "--kernel", kernel], "not a PNG file"),
        (["--input", str(files / "truncated.png"), "--kernel", kernel], "cannot read image"),
        (["--input", str(files / "rgba.png"), "--kernel", kernel], "expected 1 (grey) or 3 (RGB) channels, got 4"),
        (["--input", str(files / "missing.png"), "--kernel", kernel], "no such image file"),
        (["--input", inp, "--kernel", kernel, "--sigma", "0"],
         "argument --sigma: must be a finite number > 0, got '0'"),
        (["--input", inp, "--kernel", kernel, "--sigma", "-0.1"],
         "argument --sigma: must be a finite number > 0, got '-0.1'"),
        (["--input", inp, "--kernel", kernel, "--tile", "5"], "--tile must be at least the kernel size 9, got 5"),
        (["--input", inp, "--psf-grid", kernel], "expected a float array of shape (Gy, Gx, kh, kw)"),
        (["--input", inp, "--kernel", kernel, "--psf-grid", kernel], "not allowed with argument"),
        (["--input", inp, "--method", "x"], "expected one of the registered blind methods"),
        (["--input", inp], "expected the blur: one of --kernel, --psf-grid or --method, got none of them"),
        (["--input", inp, "--kernel", kernel, "--method", "ddm"], "--method ddm reads --psf-grid, got --kernel"),
    ]


BAD_INPUT_CASES = 16


@pytest.mark.parametrize("case", range(BAD_INPUT_CASES))
def test_bad_input_exits_2_naming_expected_and_got_and_writes_nothing(files, capsys, case):
    cases = _bad_inputs(files)
    assert len(cases) == BAD_INPUT_CASES   # every case runs (the count was once left behind the list)
    argv, message = cases[case]
    before = sorted(p.name for p in files.iterdir())
    err = command_error(capsys, ["deblur", *argv, "--out", str(files / "out.png"), "--quiet"])
    assert message in err
    assert sorted(p.name for p in files.iterdir()) == before


def test_16bit_input_cannot_go_to_jpeg(files, capsys):
    err = command_error(capsys, ["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "out.jpg"),
                              "--kernel", str(files / "kernel.npy")])
    assert "the input has 16 bits per sample and JPEG holds 8" in err


def test_wiener_refuses_a_psf_grid(files, capsys):
    np.save(files / "grid.npy", np.ones((2, 2, 9, 9), np.float32) / 81)
    err = command_error(capsys, ["deblur", "--input", str(files / "blurred.png"), "--out", str(files / "o.png"),
                              "--psf-grid", str(files / "grid.npy"), "--solver", "wiener"])
    assert "--solver wiener needs a uniform kernel (--kernel), got a space-varying blur" in err
