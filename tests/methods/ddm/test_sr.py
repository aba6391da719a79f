"""DDM's super-resolution path: the high-resolution crop geometry against BlurDownsample on the whole image, the
linear-net stage's kernel and penalties against direct formulas, the BlurDownsample CG restore against a dense
normal-equations solve, and a small end-to-end fit with an exact prior (white-noise photos, as test_matching.py)."""

import numpy as np
import pytest
import torch

from test_matching import _exact_prior
from blindfast.methods.ddm.matching import MatchingConfig, Stage, match_operator
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet, SharpPatches
from blindfast.methods.ddm.presets import SR_FACTORS, preset
from blindfast.methods.ddm.sr_operator import (LinearNetPSF, blur_decimate_patches, linear_regulariser,
                                               positive_normalised, sr_crop_origin)
from blindfast.metrics import ncc
from blindfast.physics import BlurDownsample, gaussian_kernel
from blindfast.restore import cg_tikhonov


@pytest.mark.parametrize("factor, ksize", [(2, 5), (2, 4), (3, 7)])
def test_crops_blurred_and_decimated_are_windows_of_blur_downsample(factor, ksize):
    """A crop from f I - k // 2, blurred "valid" and decimated, is the window I .. I + P - 1 of BlurDownsample(f) on
    the whole image (away from the borders, so the padding does not matter)."""
    g = torch.Generator().manual_seed(0)
    P, H = 5, 48
    image = torch.rand(1, 3, H, H, generator=g, dtype=torch.float64)
    kernel = torch.rand(ksize, ksize, generator=g, dtype=torch.float64)
    whole = BlurDownsample(factor, "zeros").A(image, kernel=kernel)
    side = factor * P + ksize - 1
    for I, J in [(3, 4), (6, 2)]:
        top, left = sr_crop_origin(I, ksize, factor), sr_crop_origin(J, ksize, factor)
        crop = image[..., top:top + side, left:left + side]
        patch = blur_decimate_patches(crop, kernel.expand(1, 1, ksize, ksize), factor)
        assert patch.shape == (1, 3, P, P)
        torch.testing.assert_close(patch, whole[..., I:I + P, J:J + P], rtol=1e-12, atol=1e-12)


def test_sharp_patches_with_a_factor_are_high_resolution_and_refuse_small_photos():
    photos = PhotoSet([torch.rand(3, 40, 40)], "sharp")
    patches = SharpPatches(photos, 8, 5, (20, 20), factor=2)
    crops, centres = patches(4, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 2 * 8 + 5 - 1, 2 * 8 + 5 - 1)
    assert (centres >= 3.5).all() and (centres <= 20 - 4.5).all()     # low-resolution frame coordinates
    with pytest.raises(ValueError, match=r"sharp photo 0 is \(40, 40\) pixels, smaller than the 45 x 45 crop "
                                         r"\(patch 2 x 20 \+ kernel 6 - 1\)"):
        SharpPatches(photos, 20, 6, (20, 20), factor=2)


def test_the_corrupted_prior_sees_low_resolution_patches_of_the_operators_output_size():
    """Step 1's patches (of the low-resolution photos) and step 2's operator output have one shape, P x P."""
    g = torch.Generator().manual_seed(0)
    low = BlurryPatches(PhotoSet([torch.rand(3, 24, 24)], "blurry"), 8)
    sharp = SharpPatches(PhotoSet([torch.rand(3, 50, 50)], "sharp"), 8, 5, low.frame, factor=2)
    patches, cond = low(3, g)
    crops, _ = sharp(3, g)
    assert patches.shape == (3, 3, 8, 8) and cond.shape == (3, 2, 8, 8)
    assert blur_decimate_patches(crops, torch.ones(3, 1, 5, 5) / 25, 2).shape == patches.shape


def test_linear_net_psf_fits_its_start_and_its_penalties_match_the_formulas():
    target = gaussian_kernel(13, 1.8, 0.5, 0.6)
    operator = LinearNetPSF(13, init=target, generator=torch.Generator().manual_seed(0))
    grid = operator()
    assert grid.shape == (1, 1, 1, 1, 13, 13)
    assert ((grid[0, 0, 0, 0] - target).norm() / target.norm()).item() < 0.01
    # a delta-near start without init
    delta = torch.zeros(13, 13)
    delta[6, 6] = 1
    start = LinearNetPSF(13, generator=torch.Generator().manual_seed(0))()[0, 0, 0, 0]
    assert (start - delta).abs().max().item() < 0.05

    k = torch.rand(2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 0.2
    array = k.numpy()
    rows, cols = np.mgrid[0:7, 0:7]
    expected = []
    for kernel in array:
        mass = kernel.sum()
        centroid = np.array([(kernel * rows).sum(), (kernel * cols).sum()]) / mass
        expected.append(0.1 * np.abs(kernel).mean() + 0.2 * np.sum((centroid - 3) ** 2) / 9
                        + 0.3 * abs(mass - 1))
    # the mean |k| is over both kernels at once, the same as the mean of the per-kernel means
    assert linear_regulariser(k, 0.1, 0.2, 0.3).item() == pytest.approx(np.mean(expected), rel=1e-12)


def test_positive_normalised_clips_and_renormalises():
    k = torch.tensor([[[0.5, -0.1], [0.3, 0.4]]], dtype=torch.float64)
    torch.testing.assert_close(positive_normalised(k), torch.tensor([[[0.5, 0.0], [0.3, 0.4]]],
                                                                     dtype=torch.float64) / 1.2)


@pytest.mark.parametrize("side", [8, 16])
def test_blur_downsample_cg_matches_a_dense_normal_equations_solve(side):
    g = torch.Generator().manual_seed(side)
    op = BlurDownsample(2, "reflect")
    kernel = gaussian_kernel(5, 1.2, 0.6, 0.3, dtype=torch.float64).expand(1, 1, 5, 5)
    y = torch.rand(1, 1, side // 2, side // 2, generator=g, dtype=torch.float64)
    n = side * side
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, side, side)
    A = op.A(basis, kernel=kernel).reshape(n, -1).T                 # (m, n): column j is A e_j
    lam = 0.05
    dense = torch.linalg.solve(A.T @ A + lam * torch.eye(n, dtype=torch.float64), A.T @ y.reshape(-1))
    restored = cg_tikhonov(y, op, {"kernel": kernel}, lam=lam, regulariser="identity", iters=4 * n, rtol=1e-14)
    assert restored.shape == (1, 1, side, side)
    torch.testing.assert_close(restored.reshape(-1), dense, rtol=1e-8, atol=1e-8)


def test_sr_presets_refuse_unsupported_factors():
    assert SR_FACTORS == (2,)
    stages = [s.kind for s in preset("demo", sr=2).step2.stages]
    assert stages == ["gaussian", "linear"]
    with pytest.raises(ValueError, match=r"sr must be 1 or one of the supported factors \(2,\), got 3"):
        preset("demo", sr=3)


PATCH, KSIZE, FRAME = 16, 9, 64


def _sr_camera(kernel, seed=0):
    """White-noise high-resolution sharp frames and BlurDownsample(2) frames of other white noise, plus noise."""
    g = torch.Generator().manual_seed(seed)
    scenes = 0.5 + 0.15 * torch.randn(12, 3, FRAME, FRAME, generator=g)
    low = BlurDownsample(2, "circular").A(scenes[6:], kernel=kernel)
    low = low + 0.01 * torch.randn(low.shape, generator=g)
    return PhotoSet(list(scenes[:6]), "sharp"), PhotoSet(list(low), "blurry")


def test_sr_stages_learn_an_anisotropic_kernel(tmp_path):
    """A Gaussian stage then the linear net (the SR presets' stages) on white-noise photos decimated x2 after an
    elongated, tilted Gaussian: the kernel's NCC ends far above the delta's and the isotropic start's."""
    kernel = gaussian_kernel(KSIZE, 2.5, 0.4, 0.5)
    sharp, low_set = _sr_camera(kernel)
    blurry = BlurryPatches(low_set, PATCH)
    config = MatchingConfig(stages=(Stage("gaussian", 200, 0.02), Stage("linear", 40, 1e-4)), batch=32,
                            lr_aux=0.02, reference="frozen", snapshot_steps=50, init_sigma=1.0,
                            sparsity_weight=0.1, centre_weight=0.1, sum_to_one_weight=0.1)
    result = match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame, 2),
                            grid=(1, 1), kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path,
                            progress=False, factor=2)
    learned = positive_normalised(result.psf_grid[0, 0, 0, 0])
    delta = torch.zeros(KSIZE, KSIZE)
    delta[KSIZE // 2, KSIZE // 2] = 1
    baselines = [ncc(delta, kernel).item(), ncc(gaussian_kernel(KSIZE, 1.0), kernel).item()]
    assert max(baselines) < 0.82, baselines                        # 0.37 and 0.81 (the best isotropic: 0.85)
    assert ncc(learned, kernel).item() > 0.92                      # 0.96 when written


def test_a_linear_stage_needs_one_kernel_and_matching_crops(tmp_path):
    sharp, low_set = _sr_camera(gaussian_kernel(KSIZE, 1.5))
    blurry = BlurryPatches(low_set, PATCH)
    config = MatchingConfig(stages=(Stage("linear", 2, 1e-4),), batch=4)
    with pytest.raises(ValueError, match=r"expected grid \(1, 1\), got \(2, 2\)"):
        match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame, 2), grid=(2, 2),
                       kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path, progress=False, factor=2)
    with pytest.raises(ValueError, match=r"the sharp crops \(24\) must be factor 2 x the patch 16"):
        match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame), grid=(1, 1),
                       kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path, progress=False, factor=2)


def test_sr_camera_decimates_one_half_and_keeps_the_other_sharp():
    from blindfast.methods.ddm.sr_synthetic import sr_camera

    kernel = gaussian_kernel(7, 1.5, 0.5, 0.3)
    camera = sr_camera(kernel, 2, frame=128, stride=128, noise=0.0)
    assert camera.sharp.frame_size() == (128, 128) and camera.blurry.frame_size() == (64, 64)
    assert camera.test_sharp.shape == (2, 3, 128, 128) and camera.test_blurry.shape == (2, 3, 64, 64)
    # without noise, the test frames are exactly BlurDownsample(2, "reflect") of the sharp ones
    torch.testing.assert_close(camera.test_blurry, BlurDownsample(2, "reflect").A(camera.test_sharp, kernel=kernel))
    with pytest.raises(ValueError, match="frame must be divisible by the factor 2, got 129"):
        sr_camera(kernel, 2, frame=129)
