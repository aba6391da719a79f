"""blindfast deblur --method latentdem: the kernel file, its picture and the report beside the output, the central
crop of larger photos, grey photos, the solver (the noise std it is told, whichever solver), and bad inputs (exit 2
under the command's usage, nothing written).
Tiny runs (4 DDIM steps, small kernels): these check the plumbing; the quality is measured by the scripts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import signal

from blindfast.__main__ import main
from blindfast.data import embedded_images, read_image
from blindfast.metrics import kernel_mse, mnc
from blindfast.methods.latent_dem.deblur_method import (DEFAULT_KERNEL_SIZE, central_crop_box, prune_kernel,
                                                         solver_sigma)
from blindfast.physics import Blur, motion_kernel
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight

K = 7
TRUE_KERNEL = motion_kernel(1, K, generator=torch.Generator().manual_seed(0))["kernel"].reshape(K, K)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photo(path, height, width, grey=False):
    """A blurred crop of the test photo coffee written as an 8-bit PNG; returns the path as str."""
    sharp = embedded_images("test")[0][None, :, 100:100 + height, 150:150 + width].contiguous()
    y = Blur(padding="reflect").A(sharp, kernel=TRUE_KERNEL[None, None])
    y = (y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    pixels = (y[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).convert("L" if grey else "RGB").save(path)
    return str(path)


@pytest.fixture()
def true_kernel_file(tmp_path):
    np.save(tmp_path / "k.npy", TRUE_KERNEL.numpy())
    return str(tmp_path / "k.npy")


def _run_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: blindfast deblur" in err
    return err


def test_pixel_writes_the_kernel_its_picture_and_the_report(tmp_path, true_kernel_file, capsys):
    photo = _photo(tmp_path / "in.png", 48, 40)
    assert main(["deblur", "--method", "latentdem", "--pixel", "--input", photo, "--out", str(tmp_path / "out.png"),
                 "--kernel-size", str(K), "--true-kernel", true_kernel_file, "--steps", "4", "--quiet"]) == 0
    kernel = np.load(tmp_path / "out.kernel.npy")
    assert kernel.dtype == np.float32 and kernel.shape == (K, K) and (kernel >= 0).all()
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    picture = Image.open(tmp_path / "out.kernel.png")
    assert picture.size == (8 * K, 8 * K) and np.asarray(picture).max() == 255
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["solver"] == "cg" and report["method"] == "latentdem"   # the command's default solver
    method = report["method_report"]
    assert method["variant"] == "pixel"
    assert method["crop"] == {"top": 0, "left": 0, "height": 48, "width": 40}
    assert method["steps"] == 4 and method["kernel_size"] == K and method["times"]["em_s"] > 0
    found = torch.from_numpy(kernel)
    assert method["kernel_mnc"] == pytest.approx(mnc(found, TRUE_KERNEL).item(), rel=1e-6)
    assert method["kernel_mse"] == pytest.approx(kernel_mse(found, TRUE_KERNEL).item(), rel=1e-5)
    restored = read_image(tmp_path / "out.png")
    assert restored.shape == (3, 48, 40)
    assert "out.kernel.png" in capsys.readouterr().out


def test_a_larger_photo_runs_em_on_its_central_crop_and_is_restored_whole(tmp_path):
    photo = _photo(tmp_path / "in.png", 100, 80)
    assert main(["deblur", "--method", "latentdem", "--input", photo, "--out", str(tmp_path / "out.png"),
                 "--kernel-size", "5", "--steps", "4", "--solver", "pnp", "--quiet"]) == 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["method_report"]["crop"] == {"top": 18, "left": 8, "height": 64, "width": 64}
    assert report["solver"] == "pnp" and "kernel_mnc" not in report["method_report"]
    assert read_image(tmp_path / "out.png").shape == (3, 100, 80)


def test_the_solver_is_told_the_noise_std_of_the_em_fit_residual(tmp_path):
    photo = _photo(tmp_path / "in.png", 48, 40)
    reports = {}
    for name, extra in (("cg", []), ("pnp", ["--solver", "pnp"]), ("sigma", ["--sigma", "0.5"])):
        out = tmp_path / f"out_{name}.png"
        assert main(["deblur", "--method", "latentdem", "--input", photo, "--out", str(out), "--kernel-size", str(K),
                     "--steps", "4", "--quiet", *extra]) == 0
        reports[name] = json.loads(out.with_name(out.stem + ".report.json").read_text())
    cg, pnp = reports["cg"], reports["pnp"]
    assert cg["solver"] == "cg" and pnp["solver"] == "pnp"
    noise = max(estimate_noise_std(read_image(photo)[None]), 1e-4)
    for report in (cg, pnp):
        method = report["method_report"]
        assert method["sigma"] == pytest.approx(noise, rel=1e-6)
        # the same EM (seed 0) either way: the solver is told max(sigma, the EM fit's residual RMS)
        assert report["settings"]["sigma"] == method["solver_sigma"] == cg["method_report"]["solver_sigma"]
        assert report["settings"]["sigma_from_method"] and not report["settings"]["sigma_estimated"]
    assert cg["method_report"]["solver_sigma"] > noise        # the 4-step EM's fit is not exact
    # a --sigma above the residual's RMS is what the solver is told (the EM ran with it too)
    assert reports["sigma"]["method_report"]["sigma"] == reports["sigma"]["settings"]["sigma"] == 0.5
    assert cg["settings"]["lam"] == pytest.approx(tikhonov_weight(cg["method_report"]["solver_sigma"]), rel=1e-12)


def test_solver_sigma_is_the_rms_of_the_em_fit_residual_over_the_valid_interior():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 20, 24, generator=generator, dtype=torch.float64)
    crop = torch.rand(1, 3, 20, 24, generator=generator, dtype=torch.float64)
    kernel = torch.rand(5, 5, generator=generator, dtype=torch.float64)
    kernel /= kernel.sum()
    reblurred = np.stack([signal.convolve2d(image[0, c].numpy(), kernel.numpy(), mode="valid") for c in range(3)])
    expected = np.sqrt(np.mean((crop[0, :, 2:-2, 2:-2].numpy() - reblurred) ** 2))
    assert solver_sigma(crop, image, kernel, 0.0) == pytest.approx(expected, rel=1e-12)
    assert solver_sigma(crop, image, kernel, 2 * expected) == 2 * expected       # never below the noise std
    exact = crop.clone()
    exact[..., 2:-2, 2:-2] = torch.from_numpy(reblurred)[None]
    assert solver_sigma(exact, image, kernel, 0.01) == 0.01       # an exact fit: the noise std itself


def test_a_grey_photo_and_the_default_kernel_size(tmp_path):
    photo = _photo(tmp_path / "in.png", 32, 36, grey=True)
    assert main(["deblur", "--method", "latentdem", "--input", photo, "--out", str(tmp_path / "out.png"),
                 "--steps", "4", "--quiet"]) == 0
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "L" and out.size == (36, 32)
    assert np.load(tmp_path / "out.kernel.npy").shape == (DEFAULT_KERNEL_SIZE, DEFAULT_KERNEL_SIZE) == (17, 17)


def test_the_default_runs_the_latent_variant_on_a_crop_of_multiples_of_16(tmp_path, true_kernel_file):
    photo = _photo(tmp_path / "in.png", 48, 40, grey=True)
    assert main(["deblur", "--method", "latentdem", "--input", photo, "--out", str(tmp_path / "out.png"),
                 "--kernel-size", str(K), "--true-kernel", true_kernel_file, "--steps", "4", "--quiet"]) == 0
    method = json.loads((tmp_path / "out.report.json").read_text())["method_report"]
    assert method["variant"] == "latent" and method["crop"] == {"top": 0, "left": 4, "height": 48, "width": 32}
    assert method["steps"] == 4 and 0 <= method["kernel_mnc"] <= 1
    assert np.load(tmp_path / "out.kernel.npy").shape == (K, K)
    assert Image.open(tmp_path / "out.png").size == (40, 48)


@pytest.mark.parametrize("height, width, multiple, box", [(64, 64, 4, (0, 0, 64, 64)), (30, 200, 4, (1, 68, 28, 64)),
                                                          (7, 9, 4, (1, 0, 4, 8)), (48, 40, 16, (0, 4, 48, 32)),
                                                          (100, 30, 16, (18, 7, 64, 16))])
def test_central_crop_box(height, width, multiple, box):
    assert central_crop_box(height, width, multiple) == box


def test_prune_kernel_drops_taps_below_the_fraction_of_the_peak():
    kernel = torch.tensor([[0.0, 0.05, 0.1], [0.19, 0.5, 0.21], [0.2, 0.0, 0.01]], dtype=torch.float64)
    expected = np.array([[0, 0, 0], [0, 0.5, 0.21], [0.2, 0, 0]])    # 0.4 * peak 0.5 = 0.2: 0.2 itself is kept
    expected /= expected.sum()
    np.testing.assert_allclose(prune_kernel(kernel, 0.4).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(prune_kernel(kernel, 0.0).numpy(), kernel.numpy() / kernel.sum().item(), rtol=1e-12)


def _bad_inputs(tmp_path):
    np.save(tmp_path / "k9.npy", np.ones((9, 9), np.float32) / 81)
    np.save(tmp_path / "k3d.npy", np.ones((1, 7, 7), np.float32) / 49)
    np.save(tmp_path / "kint.npy", np.ones((7, 7), np.int64))
    return [
        (["--kernel-size", "41"], "--kernel-size must be at most the side of the photo's central crop, 32 (photo "
                                  "48x40, crop 48x32), got 41"),
        (["--kernel-size", "41", "--pixel"], "--kernel-size must be at most the side of the photo's central crop, 40 "
                                             "(photo 48x40, crop 48x40), got 41"),
        (["--kernel-size", "8"], "argument --kernel-size: must be an odd integer >= 1 (the kernel has a centre "
                                 "pixel), got '8'"),
        (["--kernel-size", "7", "--true-kernel", str(tmp_path / "k9.npy")],
         "expected a 2-d float array of shape (7, 7) (--kernel-size), got float32 (9, 9)"),
        (["--kernel-size", "7", "--true-kernel", str(tmp_path / "k3d.npy")],
         "expected a 2-d float array of shape (7, 7) (--kernel-size), got float32 (1, 7, 7)"),
        (["--kernel-size", "7", "--true-kernel", str(tmp_path / "kint.npy")],
         "expected a 2-d float array of shape (7, 7) (--kernel-size), got int64 (7, 7)"),
        (["--kernel-size", "7", "--true-kernel", str(tmp_path / "missing.npy")], "missing.npy: no such file"),
        (["--kernel-size", "7", "--pixel", "--prior", "latent_tiny"],
         "--pixel runs its pixel EM with --prior: expected --prior naming a pixel prior such as pixel_tiny, got the "
         "latent prior 'latent_tiny'"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_exits_2_naming_expected_and_got_and_writes_nothing(tmp_path, capsys, case):
    photo = _photo(tmp_path / "in.png", 48, 40)
    argv, message = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    err = _run_error(capsys, ["deblur", "--method", "latentdem", "--input", photo, "--out", str(tmp_path / "o.png"),
                              "--steps", "2", "--quiet", *argv])
    assert message in " ".join(err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
