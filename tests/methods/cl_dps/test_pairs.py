"""CL-DPS's positive pairs: shapes and ranges, the same location in x_t and y (identity operators at t = 1 give equal
patches), the crop's boundary never read (zero and replicate padding agree), kernel blurs against scipy, and
bad settings."""

import numpy as np
import pytest
import scipy.signal
import torch

from blindfast.data import RandomPatches
from blindfast.methods.cl_dps.pairs import FAMILIES, PairConfig, blur_crops, draw_operators, draw_pairs

PHOTOS = [torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(0)),
          torch.rand(3, 140, 140, generator=torch.Generator().manual_seed(1))]


def test_shapes_ranges_and_families():
    config = PairConfig(patch=32, margin=24, time_range=(0.6, 0.9), noise_range=(0.01, 0.02))
    pairs = draw_pairs(PHOTOS, 12, config, torch.Generator().manual_seed(0))
    for patches in (pairs.clean, pairs.x_t, pairs.y):
        assert patches.shape == (12, 3, 32, 32) and patches.dtype == torch.float32
    assert pairs.clean.min() >= -1 and pairs.clean.max() <= 1
    assert bool(((pairs.t >= 0.6) & (pairs.t <= 0.9)).all())
    assert set(pairs.family.tolist()) <= set(range(len(FAMILIES)))
    same = draw_pairs(PHOTOS, 12, config, torch.Generator().manual_seed(0))
    assert pairs.y_negatives is None and pairs.x_negatives is None  # no hard negatives asked for
    assert all(torch.equal(a, b) for a, b in zip(pairs[:5], same[:5]))


def test_identity_operators_at_t_1_give_equal_patches():
    config = PairConfig(patch=32, margin=24, families=("rotation", "zoom"), time_range=(1.0, 1.0),
                        noise_range=(0.0, 0.0), angle_range=(0.0, 0.0), zoom_range=(1.0, 1.0))
    pairs = draw_pairs(PHOTOS, 8, config, torch.Generator().manual_seed(3))
    torch.testing.assert_close(pairs.x_t, pairs.clean, rtol=0, atol=1e-6)
    # the warps' sample points are computed in float32: pixel positions off by ~1e-6 of a pixel, times the photo's
    # random-noise slopes (up to 2 per pixel)
    torch.testing.assert_close(pairs.y, pairs.clean, rtol=0, atol=5e-5)


@pytest.mark.parametrize("family", ["rotation", "zoom"])
def test_warps_never_read_outside_the_crop(family):
    config = PairConfig()
    generator = torch.Generator().manual_seed(5)
    crops = torch.rand(6, 3, config.crop, config.crop, generator=generator) * 2 - 1
    params = draw_operators(family, 6, config, generator)
    zeros = blur_crops(family, crops, params, config.patch, padding="zeros")
    replicate = blur_crops(family, crops, params, config.patch, padding="replicate")
    torch.testing.assert_close(zeros, replicate, rtol=0, atol=0)
    assert (zeros - crops[..., 32:96, 32:96]).abs().mean() > 0.05  # and it blurs


@pytest.mark.parametrize("family", ["motion", "gaussian"])
def test_kernel_blurs_match_scipy_on_the_centre_patch(family):
    config = PairConfig(patch=16, margin=16)
    generator = torch.Generator().manual_seed(2)
    crops = torch.rand(3, 3, config.crop, config.crop, generator=generator, dtype=torch.float64)
    params = draw_operators(family, 3, config, generator)
    kernels = params["kernel"][:, 0]
    assert kernels.shape == (3, 31, 31)
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(3))
    y = blur_crops(family, crops, params, config.patch)
    for b in range(3):
        for c in range(3):
            # the patch's pixel (i, j) is the crop's (16 + i, 16 + j); "valid" convolution reads 15 pixels around
            inner = crops[b, c, 1:47, 1:47].numpy()
            expected = scipy.signal.convolve2d(inner, kernels[b].double().numpy(), mode="valid")
            np.testing.assert_allclose(y[b, c].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_delta_kernel_keeps_the_centre_patch():
    config = PairConfig(patch=16, margin=16)
    crops = torch.rand(2, 3, 48, 48)
    kernel = torch.zeros(2, 1, 31, 31)
    kernel[..., 15, 15] = 1
    torch.testing.assert_close(blur_crops("motion", crops, {"kernel": kernel}, 16), crops[..., 16:32, 16:32])


def test_bad_settings():
    with pytest.raises(ValueError, match="among rotation, zoom, motion, gaussian, got 'blur'"):
        PairConfig(families=("rotation", "blur"))
    with pytest.raises(ValueError, match="margin must hold half the largest kernel, 15 pixels, got 8"):
        PairConfig(margin=8)
    with pytest.raises(ValueError, match="margin 16 is too small for rotation blur .* at least 25"):
        PairConfig(margin=16, families=("rotation",))
    with pytest.raises(ValueError, match=r"time_range must lie within \[0, 1\]"):
        PairConfig(time_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="odd sides"):
        PairConfig(kernel_sizes=(12, 31))


def test_hard_negatives_are_the_same_content_under_other_operators():
    """Drawn after the pairs (which stay those of N = 0); noise-free at t = 0.5 so every term is checkable: the first
    y-side negative is the clean patch (the identity), the first x-side one the measurement's content at x_t's own t
    and eps, the others the same crop under the next operator draw of the generator."""
    config = PairConfig(patch=32, margin=24, families=("rotation", "gaussian"), time_range=(0.5, 0.5),
                        noise_range=(0.0, 0.0))
    pairs = draw_pairs(PHOTOS, 6, config, torch.Generator().manual_seed(4), hard_negatives=3)
    plain = draw_pairs(PHOTOS, 6, config, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(pairs[:5], plain[:5]))
    assert pairs.y_negatives.shape == pairs.x_negatives.shape == (6, 3, 3, 32, 32)
    torch.testing.assert_close(pairs.y_negatives[:, 0], pairs.clean, rtol=0, atol=0)
    # x_t = t x0 + (1 - t) eps, its negative t A(x0) + (1 - t) eps: they differ by t (A(x0) - x0), A(x0) = y here
    torch.testing.assert_close(pairs.x_negatives[:, 0] - pairs.x_t, 0.5 * (pairs.y - pairs.clean), rtol=0, atol=1e-6)
    # replay the generator: the crops, then the pairs' own draws, then one draw of 6 operators per extra negative
    generator = torch.Generator().manual_seed(4)
    draw_pairs(PHOTOS, 6, config, generator)
    crops = RandomPatches(PHOTOS, config.crop, 6, generator=torch.Generator().manual_seed(4)).sample().patches * 2 - 1
    for j in (1, 2):
        family = torch.randint(2, (6,), generator=generator)
        expected = torch.empty_like(pairs.clean)
        for index, name in enumerate(config.families):
            members = (family == index).nonzero().reshape(-1)
            if members.numel():
                expected[members] = blur_crops(name, crops[members], draw_operators(name, members.numel(), config,
                                                                                    generator), 32)
        torch.testing.assert_close(pairs.y_negatives[:, j], expected, rtol=0, atol=0)
        torch.testing.assert_close(pairs.x_negatives[:, j], 0.5 * expected + (pairs.x_t - 0.5 * pairs.clean),
                                   rtol=0, atol=1e-6)
        # another operator: never the measurement's own blur
        assert bool(((pairs.y_negatives[:, j] - pairs.y).abs().amax(dim=(1, 2, 3)) > 1e-3).all())
    with pytest.raises(ValueError, match="hard_negatives must be an integer >= 0, got -1"):
        draw_pairs(PHOTOS, 2, config, torch.Generator(), hard_negatives=-1)
