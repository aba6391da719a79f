"""CL-DPS's sampler: y's features are encoded once, the guidance is DPS's normalised step on the patch score, the
whole-or-tiles policy of deblur, the end-to-end gain with the shipped encoder, and its errors."""

import pytest
import torch
from torch.nn import functional as F

from blindfast.data import embedded_images
from blindfast.methods.cl_dps import load_encoder
from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.patch_score import PatchScore
from blindfast.methods.cl_dps.sampler import cl_dps
from blindfast.methods.cl_dps.deblur_method import restore_photo
from blindfast.metrics import psnr
from blindfast.models import GaussianPrior, load_shipped_prior
from blindfast.physics import RotationBlur, rotation_params
from blindfast.sampling import sample


def tiny_encoder(channels=3):
    torch.manual_seed(0)
    return ContrastiveEncoder(channels=channels, widths=(8, 16), blocks=(1, 1)).eval()


class CountingEncoder(ContrastiveEncoder):
    """Counts the patches each features() call encodes."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(widths=(8, 16), blocks=(1, 1))
        self.calls = []

    def features(self, patches):
        self.calls.append(patches.shape[0])
        return super().features(patches)


def test_the_measurement_is_encoded_once_and_each_step_encodes_the_estimate_once():
    encoder = CountingEncoder()
    y = torch.rand(1, 3, 24, 28)
    steps, patches = 3, PatchScore(encoder, 2 * y - 1, patch=8, stride=4).patch_count   # (5 x 6 = 30 patches)
    encoder.calls.clear()
    cl_dps(y, GaussianPrior(), encoder, patch=8, stride=4, steps=steps, batch=7, low_pass_sigma=2.0,
           generator=torch.Generator().manual_seed(0))
    assert sum(encoder.calls) == patches * (1 + steps)
    assert max(encoder.calls) == 7                                   # batches of at most `batch` patches
    assert all(p.requires_grad for p in encoder.parameters())        # switched off for the run, then restored


def gaussian_low_pass_float64(image, sigma):
    """Reflect-padded separable Gaussian of half width (int(6 sigma) | 1) // 2, its taps written from the formula."""
    radius = (int(6 * sigma) | 1) // 2
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    channels = image.shape[1]
    rows = F.conv2d(padded, taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, taps.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


@pytest.mark.parametrize("low_pass", [0.0, 0.4])
def test_guidance_is_dps_normalised_step_on_the_patch_score_and_the_low_pass(low_pass):
    """cl_dps equals sample() with the hook written here in float64 from the formula:
    zeta (HW / n^2) grad score / rho + lambda grad ||G x - G y||^2 / (||G x - G y|| / sqrt(HW / n^2))."""
    encoder, prior = tiny_encoder().double(), GaussianPrior(std=0.5)
    y = torch.rand(1, 3, 16, 20, dtype=torch.float64)
    scorer = PatchScore(encoder, 2 * y - 1, patch=8, stride=4)
    areas = 16 * 20 / 64

    def guidance(x_t, x1_hat, t):
        score = scorer.score(x1_hat)
        rho = torch.sqrt(2 * (1 + score))
        loss = 0.7 * areas * score / rho.detach()
        if low_pass:
            residual = gaussian_low_pass_float64(x1_hat, 2.0) - gaussian_low_pass_float64(2 * y - 1, 2.0)
            loss = loss + low_pass * residual.square().sum() / (residual.norm().detach() / areas ** 0.5)
        return torch.autograd.grad(loss, x_t)[0]

    expected = sample(prior, (1, 3, 16, 20), method="euler", steps=4, guidance=guidance, guidance_needs_grad=True,
                      generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = cl_dps(y, prior, encoder, patch=8, stride=4, steps=4, zeta=0.7, low_pass=low_pass, low_pass_sigma=2.0,
                 generator=torch.Generator().manual_seed(5))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ((expected + 1) / 2).clamp(0, 1), atol=1e-10, rtol=1e-10)


def test_large_photos_are_restored_on_tiles_each_a_cl_dps_run_on_its_part():
    encoder, prior = tiny_encoder(), GaussianPrior()
    y = torch.rand(1, 3, 32, 56)
    restored, report = restore_photo(y, prior, encoder, patch=8, stride=4, steps=2, seed=3, whole_image_pixels=32 * 32,
                                     tile=32, overlap=8)
    # tiles at columns 0-31 and 24-55: outside the overlap each pixel is its own tile's CL-DPS sample
    first = cl_dps(y[..., :32], prior, encoder, patch=8, stride=4, steps=2, generator=torch.Generator().manual_seed(3))
    second = cl_dps(y[..., 24:], prior, encoder, patch=8, stride=4, steps=2,
                    generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(restored[..., :24], first[..., :24])
    torch.testing.assert_close(restored[..., 32:], second[..., 8:])
    assert report["tiles"] == 2 and report["tile"] == 32 and restored.shape == y.shape
    whole, whole_report = restore_photo(y, prior, encoder, patch=8, stride=4, steps=2, seed=3)
    torch.testing.assert_close(whole, cl_dps(y, prior, encoder, patch=8, stride=4, steps=2,
                                             generator=torch.Generator().manual_seed(3)))
    assert whole_report["tiles"] == 1 and whole_report["patches_per_step"] == 7 * 13


def test_bad_inputs_name_what_was_expected_and_got():
    encoder, y = tiny_encoder(), torch.rand(1, 3, 16, 16)
    cases = [
        (dict(y=torch.rand(1, 3, 6, 16), prior=GaussianPrior(), patch=8, stride=4), r"at least one patch"),
        (dict(y=y, prior=GaussianPrior(), patch=8, stride=0), "stride must be an int >= 1, got 0"),
        (dict(y=y, prior=GaussianPrior(), patch=8, stride=12), "at most the patch size 8"),
        (dict(y=y, prior=GaussianPrior(), patch=8, stride=4, zeta=0.0), "zeta must be > 0, got 0.0"),
        (dict(y=y, prior=GaussianPrior(), patch=8, stride=4, low_pass=-0.1), "low_pass must be >= 0, got -0.1"),
        (dict(y=y, prior=load_shipped_prior("pixel_tiny"), patch=8, stride=4, encoder=tiny_encoder(channels=1)),
         "takes 1-channel patches, got a 3-channel image"),
        (dict(y=torch.rand(1, 1, 16, 16), prior=load_shipped_prior("pixel_tiny"), patch=8, stride=4,
              encoder=tiny_encoder(channels=1)), "the prior samples 3-channel images, got a 1-channel measurement"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("encoder", encoder)
        with pytest.raises(ValueError, match=message):
            cl_dps(kwargs.pop("y"), kwargs.pop("prior"), kwargs.pop("encoder"), steps=1, **kwargs)


@pytest.fixture(scope="module")
def rotation_case():
    """A 64 x 64 crop of coffee (a test photo), rotation blur (seed 0), noise 0.01."""
    x = embedded_images("test")[0][None, :, 150:214, 200:264].contiguous()
    y = RotationBlur(padding="reflect").A(x, **rotation_params(1, generator=torch.Generator().manual_seed(0)))
    return x, (y + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def test_shipped_encoder_guides_the_prior_towards_the_photo(rotation_case):
    """With cl_tiny the guided sample is closer to the photo than the unguided sample from the same start."""
    x, y = rotation_case
    prior, encoder = load_shipped_prior("pixel_tiny"), load_encoder("cl_tiny")
    guided = cl_dps(y, prior, encoder, steps=20, generator=torch.Generator().manual_seed(2))
    unguided = (sample(prior, x.shape, method="euler", steps=20, generator=torch.Generator().manual_seed(2)) + 1) / 2
    assert psnr(guided, x).item() > psnr(unguided.clamp(0, 1), x).item() + 3
