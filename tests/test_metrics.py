"""Metrics against scikit-image, direct formulas and brute-force oracles; kernel/PSF-grid shift and size rules."""

import math

import numpy as np
import pytest
import scipy.signal
import skimage.data
import skimage.filters
import skimage.metrics
import torch
import torch.nn.functional as F

from blindfast.metrics import (
    kernel_mse,
    mnc,
    ncc,
    psf_grid_correlation,
    psf_grid_metrics,
    psf_grid_relative_error,
    psnr,
    ssim,
    y_psnr,
)
from blindfast.physics import lens_psf_grid

F64 = torch.float64


def _random_pair(shape, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=F64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=F64)).clamp(0, 1)
    return x, y


def _real_pairs():
    """(clean, blurred + noisy) float64 (C, H, W) pairs from natural photographs, RGB and grey."""
    rng = np.random.default_rng(0)
    pairs = []
    for image, channel_axis in ((skimage.data.astronaut()[100:300, 150:400], -1), (skimage.data.camera(), None)):
        clean = image.astype(np.float64) / 255
        degraded = skimage.filters.gaussian(clean, sigma=1.2, channel_axis=channel_axis)
        degraded = np.clip(degraded + 0.02 * rng.standard_normal(clean.shape), 0, 1)
        if channel_axis is None:
            clean, degraded = clean[None], degraded[None]
        else:
            clean, degraded = np.moveaxis(clean, -1, 0), np.moveaxis(degraded, -1, 0)
        pairs.append((torch.from_numpy(clean.copy()), torch.from_numpy(degraded.copy())))
    return pairs


def _skimage_psnr(x, y, max_val, crop):
    h, w = x.shape[-2:]
    window = (..., slice(crop, h - crop), slice(crop, w - crop))
    return skimage.metrics.peak_signal_noise_ratio(x[window].numpy(), y[window].numpy(), data_range=max_val)


def _skimage_ssim(x, y, max_val, crop):
    h, w = x.shape[-2:]
    window = (..., slice(crop, h - crop), slice(crop, w - crop))
    return skimage.metrics.structural_similarity(x[window].numpy(), y[window].numpy(), gaussian_weights=True,
                                                 sigma=1.5, use_sample_covariance=False, data_range=max_val,
                                                 channel_axis=0)


# ---------------------------------------------------------------------------------------------------------------
# PSNR, Y-PSNR, SSIM


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("max_val", [1.0, 255.0])
def test_psnr_ssim_match_skimage_on_random_images(channels, crop, max_val):
    x, y = _random_pair((3, channels, 37, 45), seed=channels + crop)
    x, y = x * max_val, y * max_val
    expected_psnr = [_skimage_psnr(x[i], y[i], max_val, crop) for i in range(3)]
    expected_ssim = [_skimage_ssim(x[i], y[i], max_val, crop) for i in range(3)]
    torch.testing.assert_close(psnr(x, y, max_val=max_val, crop=crop), torch.tensor(expected_psnr, dtype=F64),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(ssim(x, y, max_val=max_val, crop=crop), torch.tensor(expected_ssim, dtype=F64),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("crop", [0, 6])
def test_psnr_ssim_match_skimage_on_real_images(crop):
    for clean, degraded in _real_pairs():
        assert abs(psnr(clean, degraded, crop=crop).item() - _skimage_psnr(clean, degraded, 1.0, crop)) < 1e-10
        assert abs(ssim(clean, degraded, crop=crop).item() - _skimage_ssim(clean, degraded, 1.0, crop)) < 1e-10


def test_float32_inputs_within_1e4_of_skimage_float64():
    for clean, degraded in _real_pairs():
        ours_psnr = psnr(clean.float()[None], degraded.float()[None])
        ours_ssim = ssim(clean.float()[None], degraded.float()[None])
        assert ours_psnr.dtype == ours_ssim.dtype == torch.float32 and ours_psnr.shape == (1,)
        # the float32 inputs are the float64 images rounded: compare with skimage on those same values
        c64, d64 = clean.float().double(), degraded.float().double()
        assert abs(ours_psnr.item() - _skimage_psnr(c64, d64, 1.0, 0)) < 1e-4
        assert abs(ours_ssim.item() - _skimage_ssim(c64, d64, 1.0, 0)) < 1e-4


def test_unbatched_input_gives_a_scalar_and_batched_one_value_per_image():
    x, y = _random_pair((2, 3, 20, 24))
    for metric in (psnr, ssim, y_psnr):
        batched = metric(x, y)
        assert batched.shape == (2,)
        unbatched = metric(x[1], y[1])
        assert unbatched.shape == ()
        torch.testing.assert_close(unbatched, batched[1], rtol=0, atol=1e-14)


def test_identical_images():
    x, _ = _random_pair((1, 3, 16, 16))
    assert psnr(x, x).item() == math.inf
    torch.testing.assert_close(ssim(x, x), torch.ones(1, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("crop", [0, 3])
def test_y_psnr_equals_the_bt601_formula(crop):
    x, y = _random_pair((2, 3, 30, 41), seed=5)
    expected = []
    for i in range(2):
        r, g, b = x[i].numpy()
        luma_x = (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255
        r, g, b = y[i].numpy()
        luma_y = (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255
        window = (slice(crop, 30 - crop), slice(crop, 41 - crop))
        mse = np.mean((luma_x[window] - luma_y[window]) ** 2)
        expected.append(10 * np.log10(1 / mse))
    torch.testing.assert_close(y_psnr(x, y, crop=crop), torch.tensor(expected, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(y_psnr(255 * x, 255 * y, max_val=255, crop=crop), y_psnr(x, y, crop=crop),
                               rtol=0, atol=1e-10)


def test_non_contiguous_images():
    x, y = _random_pair((2, 3, 24, 30))
    xt, yt = x.transpose(-1, -2).contiguous().transpose(-1, -2), y[..., :, :]
    assert not xt.is_contiguous()
    for metric in (psnr, ssim, y_psnr):
        torch.testing.assert_close(metric(xt, yt), metric(x, y), rtol=0, atol=1e-14)


def test_image_metrics_are_differentiable():
    """PSNR and SSIM serve as losses too: their autograd gradients match finite differences."""
    x, y = _random_pair((1, 2, 13, 14), seed=9)
    x.requires_grad_(True)
    # fast mode (random directions, a few evaluations): the full Jacobian took up to 23 s on the shared 2-core box
    for metric in (psnr, ssim):
        assert torch.autograd.gradcheck(lambda t: metric(t, y), (x,), fast_mode=True)
    rgb, rgb_ref = _random_pair((1, 3, 6, 7), seed=10)
    assert torch.autograd.gradcheck(lambda t: y_psnr(t, rgb_ref), (rgb.requires_grad_(True),), fast_mode=True)


# ---------------------------------------------------------------------------------------------------------------
# Kernel metrics


def _blob(size=21, seed=0, support=(7, 9)):
    """A random non-negative kernel on a zero border, mass off-centre in a (size, size) window."""
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(size, size, dtype=F64)
    top, left = (size - support[0]) // 2 - 1, (size - support[1]) // 2 + 1
    k[top:top + support[0], left:left + support[1]] = torch.rand(*support, generator=g, dtype=F64)
    return k / k.sum()


def _shift(k, dy, dx):
    """k moved by (dy, dx) pixels with zeros entering (no mass may leave the window)."""
    moved = torch.roll(k, (dy, dx), dims=(-2, -1))
    assert torch.isclose(moved.sum(), k.sum())
    assert torch.equal(torch.roll(moved, (-dy, -dx), dims=(-2, -1)), k)
    return moved


def test_mnc_of_a_kernel_with_itself_is_one():
    kernels = torch.stack([_blob(seed=s) for s in range(4)])
    torch.testing.assert_close(mnc(kernels, kernels), torch.ones(4, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ncc(kernels, kernels), torch.ones(4, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, -3), (-4, 1)])
def test_mnc_ncc_invariant_to_shift(dy, dx):
    k, other = _blob(seed=1), _blob(seed=2)
    moved = _shift(k, dy, dx)
    torch.testing.assert_close(mnc(moved, k), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ncc(moved, k), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(mnc(_shift(other, dy, dx), k), mnc(other, k), rtol=0, atol=1e-14)
    torch.testing.assert_close(ncc(_shift(other, dy, dx), k), ncc(other, k), rtol=0, atol=1e-14)


def test_mnc_ncc_invariant_to_size_padding():
    k, other = _blob(seed=3), _blob(seed=4, size=15, support=(5, 6))
    # mnc: any zero-padding of either kernel
    for pad_est, pad_true in (((1, 2, 0, 3), (0, 0, 0, 0)), ((0, 0, 0, 0), (4, 4, 2, 5)), ((3, 0, 0, 1), (2, 2, 2, 2))):
        torch.testing.assert_close(mnc(F.pad(other, pad_est), F.pad(k, pad_true)), mnc(other, k), rtol=0,
                                   atol=1e-14)
    # ncc: padding the smaller kernel up to (at most) the larger's size, centred or not
    for pad in ((3, 3, 3, 3), (0, 6, 1, 2), (2, 0, 0, 0)):
        torch.testing.assert_close(ncc(F.pad(other, pad), k), ncc(other, k), rtol=0, atol=1e-14)
    assert ncc(other, k) < 0.9      # different kernels: the invariances above are not vacuous


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm())


def test_mnc_ncc_against_brute_force():
    est, true = _blob(size=9, seed=5, support=(4, 5)), _blob(size=13, seed=6, support=(6, 4))
    full = scipy.signal.correlate2d(true.numpy(), est.numpy(), mode="full")
    assert abs(mnc(est, true).item() - full.max() / (est.norm() * true.norm()).item()) < 1e-14
    canvas = F.pad(est, (2, 2, 2, 2))       # 9 -> 13, centred
    brute = max(_pearson(torch.roll(canvas, (dy, dx), dims=(0, 1)), true).item()
                for dy in range(13) for dx in range(13))
    assert abs(ncc(est, true).item() - brute) < 1e-14
    assert brute < 0.95


@pytest.mark.parametrize("dy, dx", [(0, 0), (3, -2), (-5, 4)])
def test_kernel_mse_is_zero_for_a_shifted_copy(dy, dx):
    k = _blob(seed=7)
    assert kernel_mse(_shift(k, dy, dx), k).item() < 1e-18
    assert kernel_mse(F.pad(_shift(k, dy, dx), (3, 1, 2, 0)), k).item() < 1e-18


def test_kernel_mse_hand_made_pair():
    true = torch.zeros(3, 3, dtype=F64)
    true[1, 1] = 1.0
    est = torch.zeros(5, 5, dtype=F64)
    est[1, 3], est[1, 4] = 0.75, 0.25
    # centres of mass (1, 1) and (1, 3.25): est moves by round((0, -2.25)) = (0, -2), so est's 0.75 lands on
    # true's 1 and its 0.25 on a zero: (0.25^2 + 0.25^2) over the common 5 x 5 window
    assert abs(kernel_mse(est, true).item() - 0.125 / 25) < 1e-17
    # window centres aligned instead, nothing would overlap: (1 + 0.75^2 + 0.25^2) / 25
    assert abs(F.mse_loss(est, F.pad(true, (1, 1, 1, 1))).item() - 1.625 / 25) < 1e-17
    # an all-zero estimate has no centre of mass: the error is the truth's energy
    assert abs(kernel_mse(torch.zeros(4, 4, dtype=F64), true).item() - 1 / 16) < 1e-17


def _kernel_mse_brute_force(est, true):
    """(MSE, shift): kernel_mse's definition, pixel by pixel in numpy float64: the centres of mass of |k|, the
    rounded shift (half to even), both kernels on one large zero canvas, the squared differences over it."""
    def centre(k):
        mass = np.abs(k)
        if mass.sum() == 0:
            return np.array([k.shape[0] // 2, k.shape[1] // 2], dtype=float)
        rows, cols = np.indices(k.shape)
        return np.array([(mass * rows).sum(), (mass * cols).sum()]) / mass.sum()

    d = np.round(centre(true) - centre(est)).astype(int)
    margin = est.shape[0] + est.shape[1] + true.shape[0] + true.shape[1]
    plane = np.zeros((2 * margin, 2 * margin, 2))
    plane[margin:margin + true.shape[0], margin:margin + true.shape[1], 0] = true
    plane[margin + d[0]:margin + d[0] + est.shape[0], margin + d[1]:margin + d[1] + est.shape[1], 1] = est
    area = max(est.shape[0], true.shape[0]) * max(est.shape[1], true.shape[1])
    total = sum((plane[r, c, 1] - plane[r, c, 0]) ** 2 for r in range(2 * margin) for c in range(2 * margin))
    return total / area, tuple(d)


@pytest.mark.parametrize("seed", range(4))
def test_kernel_mse_equals_a_brute_force_reference(seed):
    g = torch.Generator().manual_seed(seed)
    est = torch.rand(7, 9, generator=g, dtype=F64) ** 4 - 0.05   # uneven mass, a few negative values
    true = torch.rand(11, 5, generator=g, dtype=F64) ** 4
    expected, shift = _kernel_mse_brute_force(est.numpy(), true.numpy())
    assert shift[0] > 0 and shift[1] < 0  # a real alignment: est moves down and left
    # both sum the same at most 118 (63 + 55) non-zero squared differences in float64: at most 118 eps apart,
    # relatively
    assert kernel_mse(est, true).item() == pytest.approx(expected, rel=118 * torch.finfo(F64).eps, abs=0)


def test_kernel_metrics_broadcast_leading_dimensions():
    est = torch.stack([torch.stack([_blob(size=9, seed=10 * i + j, support=(4, 4)) for j in range(2)])
                       for i in range(3)])                                       # (3, 2, 9, 9)
    true = torch.stack([_blob(size=11, seed=100 + j, support=(5, 3)) for j in range(2)])   # (2, 11, 11)
    for metric in (kernel_mse, mnc, ncc):
        value = metric(est, true)
        assert value.shape == (3, 2)
        for i in range(3):
            for j in range(2):
                torch.testing.assert_close(value[i, j], metric(est[i, j], true[j]), rtol=0, atol=1e-15)
    assert mnc(est.float(), true.float()).dtype == torch.float32
    transposed = est.transpose(-1, -2).contiguous().transpose(-1, -2)          # same values, strided
    assert not transposed.is_contiguous()
    for metric in (kernel_mse, mnc, ncc):
        torch.testing.assert_close(metric(transposed, true), metric(est, true), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# PSF-grid metrics


def _lens(seed=0, size=31):
    return lens_psf_grid((3, 4), size, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_psf_grid_global_shift_is_not_penalised():
    true = _lens()
    moved = torch.roll(true, (2, -1), dims=(-2, -1))
    metrics = psf_grid_metrics(moved, true)
    torch.testing.assert_close(metrics["correlation"], torch.ones(1, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(metrics["relative_error"], torch.zeros(1, dtype=F64), rtol=0, atol=1e-13)
    assert metrics["shift"].tolist() == [[-2, 1]]


def test_psf_grid_chromatic_shift_is_penalised():
    true = _lens()
    chromatic = true.clone()
    chromatic[:, 0] = torch.roll(true[:, 0], 2, dims=-1)          # R moved right, B left, G kept
    chromatic[:, 2] = torch.roll(true[:, 2], -2, dims=-1)
    metrics = psf_grid_metrics(chromatic, true)
    # each kernel on its own matches perfectly after its own shift; the common shift cannot undo all three
    torch.testing.assert_close(ncc(chromatic, true), torch.ones(true.shape[:4], dtype=F64), rtol=0, atol=1e-13)
    assert metrics["correlation"].item() < 0.8
    assert metrics["relative_error"].item() > 0.5
    assert metrics["shift"].tolist() == [[0, 0]]


def test_psf_grid_field_dependent_shift_is_penalised():
    true = _lens()
    field = true.clone()
    field[:, :, 0] = torch.roll(true[:, :, 0], 3, dims=-2)        # top row of nodes moved down
    metrics = psf_grid_metrics(field, true)
    assert metrics["correlation"].item() < 0.9
    assert metrics["relative_error"].item() > 0.3


def test_psf_grid_metrics_against_brute_force():
    g = torch.Generator().manual_seed(3)
    est = torch.rand(2, 2, 2, 3, 7, 7, generator=g, dtype=F64)
    true = torch.rand(1, 2, 2, 3, 9, 9, generator=g, dtype=F64)
    metrics = psf_grid_metrics(est, true)
    canvas = F.pad(est, (1, 1, 1, 1))
    for b in range(2):
        best = max(((sum(_pearson(torch.roll(canvas[b, c, i, j], (dy, dx), dims=(0, 1)), true[0, c, i, j])
                         for c in range(2) for i in range(2) for j in range(3)).item() / 12, dy, dx)
                    for dy in range(9) for dx in range(9)))
        correlation, dy, dx = best
        rolled = torch.roll(canvas[b], (dy, dx), dims=(-2, -1))
        error = ((rolled - true[0]).norm() / true[0].norm()).item()
        assert abs(metrics["correlation"][b].item() - correlation) < 1e-13
        assert abs(metrics["relative_error"][b].item() - error) < 1e-13
        assert metrics["shift"][b].tolist() == [dy - 9 * (dy > 4), dx - 9 * (dx > 4)]
    torch.testing.assert_close(psf_grid_correlation(est, true), metrics["correlation"], rtol=0, atol=0)
    torch.testing.assert_close(psf_grid_relative_error(est, true), metrics["relative_error"], rtol=0, atol=0)


def test_psf_grid_of_different_kernel_size():
    true = _lens(size=29)
    padded = F.pad(true, (2, 2, 2, 2))
    metrics = psf_grid_metrics(padded, true)
    torch.testing.assert_close(metrics["correlation"], torch.ones(1, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(metrics["relative_error"], torch.zeros(1, dtype=F64), rtol=0, atol=1e-13)
    assert metrics["shift"].tolist() == [[0, 0]]


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_image_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape, got x \(1, 3, 16, 16\) and y \(1, 3, 16, 17\)"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))


def test_image_wrong_dims():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(C, H, W\), got 2 dims: \(16, 16\)"):
        ssim(torch.rand(16, 16), torch.rand(16, 16))


@pytest.mark.parametrize("metric", [psnr, ssim, y_psnr])
def test_nan_image(metric):
    x = torch.rand(1, 3, 16, 16)
    y = x.clone()
    y[0, 1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="y must be finite, got 1 NaN or inf"):
        metric(x, y)


@pytest.mark.parametrize("max_val", [0, -1.0, math.nan, math.inf])
def test_non_positive_max_val(max_val):
    with pytest.raises(ValueError, match=f"max_val must be a finite number > 0, got {max_val!r}"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), max_val=max_val)


def test_integer_images():
    x = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    with pytest.raises(TypeError, match="x must have a floating dtype .* got torch.uint8"):
        psnr(x, x)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        psnr(np.zeros((3, 8, 8)), torch.zeros(3, 8, 8))


def test_crop_too_large_and_ssim_image_too_small():
    x = torch.rand(1, 1, 20, 30)
    with pytest.raises(ValueError, match=r"size \(20, 30\) with crop=10 leave less than the 1 x 1"):
        psnr(x, x, crop=10)
    with pytest.raises(ValueError, match=r"crop must be an integer >= 0, got -1"):
        psnr(x, x, crop=-1)
    with pytest.raises(ValueError, match=r"size \(20, 30\) with crop=5 leave less than the 11 x 11"):
        ssim(x, x, crop=5)


def test_y_psnr_needs_rgb():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="RGB with 3 channels at dim -3, got 1 channels"):
        y_psnr(x, x)


def test_kernel_leading_dimensions_do_not_broadcast():
    with pytest.raises(ValueError, match=r"k_est \(3, 5, 5\) and k_true \(2, 7, 7\) must broadcast"):
        mnc(torch.rand(3, 5, 5), torch.rand(2, 7, 7))


def test_kernel_too_few_dims():
    with pytest.raises(ValueError, match=r"k_true must have shape \(..., kh, kw\) with kh, kw >= 1, got \(5,\)"):
        kernel_mse(torch.rand(5, 5), torch.rand(5))


def test_nan_kernel():
    k = torch.rand(5, 5)
    k[1, 1] = math.nan
    with pytest.raises(ValueError, match="k_est must be finite"):
        ncc(k, torch.rand(5, 5))


def test_zero_kernel_has_no_mnc():
    kernels = torch.rand(3, 5, 5, dtype=F64)
    kernels[1] = 0
    with pytest.raises(ValueError, match=r"k_est must have a non-zero Frobenius norm .* got zero at index \(1,\)"):
        mnc(kernels, torch.rand(5, 5, dtype=F64))


def test_constant_kernel_has_no_ncc():
    with pytest.raises(ValueError, match=r"k_true must have a non-zero variance .* got zero at index \(\)"):
        ncc(torch.rand(5, 5, dtype=F64), torch.full((7, 7), 0.1, dtype=F64))


def test_psf_grid_bad_shapes():
    grid = torch.rand(1, 3, 2, 2, 5, 5)
    with pytest.raises(ValueError, match=r"est must have shape \(B\|1, C, Gy, Gx, kh, kw\) \(6 dims\), got 5 dims"):
        psf_grid_metrics(grid[0], grid)
    with pytest.raises(ValueError, match=r"same \(C, Gy, Gx\), got \(3, 2, 2\) and \(1, 2, 2\)"):
        psf_grid_metrics(grid, grid[:, :1])
    with pytest.raises(ValueError, match="batch dimensions must be equal or 1, got 2 and 3"):
        psf_grid_metrics(grid.expand(2, -1, -1, -1, -1, -1), grid.expand(3, -1, -1, -1, -1, -1))
