import pytest
import scipy.ndimage
import torch

from blindfast.metrics import psnr
from blindfast.models.denoising_quality import (BLUR_SIGMAS, best_gaussian_smoothing, gaussian_smoothing,
                                                denoise_gain_db, denoise_with_prior)
from blindfast.models.prior import GaussianPrior

F64 = torch.float64


def test_denoise_with_prior_is_the_wiener_estimate_for_gaussian_data():
    """Data x' ~ N(mu, s^2) in [-1, 1] units, observed as y = (x' + 1) / 2 + sigma n: E[x' | y] is the Wiener
    estimate mu + s^2 / (s^2 + 4 sigma^2) (2y - 1 - mu)."""
    mu, s, sigma = 0.2, 0.4, 0.15
    g = torch.Generator().manual_seed(0)
    x = mu + s * torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    y = (x + 1) / 2 + sigma * torch.randn(x.shape, generator=g, dtype=F64)
    wiener = mu + s**2 / (s**2 + 4 * sigma**2) * (2 * y - 1 - mu)
    torch.testing.assert_close(denoise_with_prior(GaussianPrior(mu, s), y, sigma), (wiener + 1) / 2,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [0.5, 1.0, 2.0])
def test_gaussian_smoothing_equals_scipy(width):
    # scipy's "mirror" is torch's "reflect"; both truncate at the same radius for these widths.
    x = torch.rand(1, 2, 20, 23, generator=torch.Generator().manual_seed(1), dtype=F64)
    expected = torch.stack([torch.from_numpy(scipy.ndimage.gaussian_filter(c.numpy(), width, mode="mirror",
                                                                            truncate=4.0)) for c in x[0]])[None]
    torch.testing.assert_close(gaussian_smoothing(x, width), expected, rtol=1e-12, atol=1e-12)


def test_best_gaussian_smoothing_is_the_argmax_over_widths():
    g = torch.Generator().manual_seed(2)
    clean = gaussian_smoothing(torch.rand(2, 3, 32, 32, generator=g, dtype=F64), 2.0)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=F64)
    db, width = best_gaussian_smoothing(noisy, clean)
    scores = [psnr(gaussian_smoothing(noisy, w).clamp(0, 1), clean).mean().item() for w in BLUR_SIGMAS]
    assert db == max(scores) and width == BLUR_SIGMAS[scores.index(max(scores))]
    assert db > psnr(noisy, clean).mean().item()


def test_denoise_gain_reports_each_level_and_the_smallest_gain():
    g = torch.Generator().manual_seed(3)
    clean = ((0.2 + 0.4 * torch.randn(4, 3, 32, 32, generator=g, dtype=F64)) + 1) / 2
    result = denoise_gain_db(GaussianPrior(0.2, 0.4), clean, (0.1, 0.2), generator=torch.Generator().manual_seed(4))
    gains = [p - q for p, q in zip(result["prior_psnr"], result["gaussian_psnr"])]
    assert result["gain_db"] == gains and result["denoise_gain_db"] == min(gains)
    # White Gaussian data has no spatial correlation: smoothing cannot beat the per-pixel Wiener estimate.
    assert min(gains) > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"noisy must be a floating-point \(B, C, H, W\) tensor, got \(3, 8, 8\)"):
        denoise_with_prior(GaussianPrior(), torch.zeros(3, 8, 8), 0.1)
    with pytest.raises(ValueError, match="sigma must be > 0, got 0"):
        denoise_with_prior(GaussianPrior(), torch.zeros(1, 3, 8, 8), 0)
