"""DDM step 2 on a problem with exact priors: Gaussian "photos" (white noise), whose blurred distribution is a
Gaussian with a known spectrum, so the step-1 prior can be the exact velocity and the learning signal is clean.

The velocity of zero-mean Gaussian data with covariance Sigma, on the flow x_t = (1 - t) x_0 + t x_1, is
v = (t Sigma - (1 - t)) (t^2 Sigma + (1 - t)^2)^{-1} x_t (E[x_1 | x_t] - E[x_0 | x_t]); with a stationary (circulant)
Sigma it is a filter diagonal in the 2-D Fourier basis. The auxiliary model is the same filter with learnable
variances, trained by flow matching like any network.
"""

import pytest
import torch
from torch import nn

from blindfast.methods.ddm.matching import MatchingConfig, Stage, match_operator
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet, SharpPatches
from blindfast.metrics import ncc
from blindfast.ops import sv_conv
from blindfast.physics import gaussian_kernel

PATCH, KSIZE, FRAME = 16, 9, 64
TRUE_WIDTH = 1.8


class FourierGaussianVelocity(nn.Module):
    """v(x_t, t) of zero-mean Gaussian patches with per-frequency variances exp(log_variance): (C, P, P // 2 + 1)."""

    def __init__(self, log_variance: torch.Tensor):
        super().__init__()
        self.log_variance = nn.Parameter(log_variance.clone())

    def forward(self, x_t, t, cond=None):
        variance = self.log_variance.exp()
        t = t[:, None, None, None]
        gain = (t * variance - (1 - t)) / (t**2 * variance + (1 - t) ** 2)
        spectrum = torch.fft.rfft2(x_t, norm="ortho") * gain
        return torch.fft.irfft2(spectrum, s=x_t.shape[-2:], norm="ortho")


def _camera(seed=0, kernel=None):
    """White-noise sharp and blurry frames (uint8 photos, mean 0.5, std 0.15) and the true kernel (default: an
    isotropic Gaussian of width TRUE_WIDTH)."""
    g = torch.Generator().manual_seed(seed)
    scenes = 0.5 + 0.15 * torch.randn(12, 3, FRAME, FRAME, generator=g)
    kernel = gaussian_kernel(KSIZE, TRUE_WIDTH) if kernel is None else kernel
    grid = kernel.expand(1, 3, 1, 1, KSIZE, KSIZE).contiguous()
    blurry = sv_conv(scenes[6:], grid, padding="circular") + 0.01 * torch.randn(6, 3, FRAME, FRAME, generator=g)
    return PhotoSet(list(scenes[:6]), "sharp"), PhotoSet(list(blurry), "blurry"), kernel


def _exact_prior(blurry: BlurryPatches) -> FourierGaussianVelocity:
    """The blurry patches' spectrum, measured (mean periodogram of 4096 patches in [-1, 1], mean removed)."""
    patches, _ = blurry(4096, torch.Generator().manual_seed(123))
    patches = patches - patches.mean()
    power = torch.fft.rfft2(patches.double(), norm="ortho").abs().square().mean(0)
    return FourierGaussianVelocity(power.log().float()).eval().requires_grad_(False)


def _fit(tmp_path, reference, steps=400, **kwargs):
    sharp, blurry_set, kernel = _camera()
    blurry = BlurryPatches(blurry_set, PATCH)
    prior = _exact_prior(blurry)
    config = MatchingConfig(stages=(Stage("lens", steps, 0.02),), batch=32, lr_aux=0.02, reference=reference,
                            snapshot_steps=kwargs.pop("snapshot_steps", 50), init_sigma=1.0)
    result = match_operator(prior, blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame), grid=(1, 1),
                            kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path, progress=False, **kwargs)
    return result, kernel


@pytest.mark.parametrize("reference", ["frozen", "twin"])
def test_matching_learns_the_blur_width(tmp_path, reference):
    result, kernel = _fit(tmp_path, reference)
    learned = result.psf_grid[0, :, 0, 0]                         # (3, k, k)
    initial = gaussian_kernel(KSIZE, 1.0)
    error = lambda k: ((k - kernel).norm() / kernel.norm()).item()  # noqa: E731
    errors = [error(k) for k in learned]
    # the initial width-1 Gaussian is 0.47 off (relative L2); every channel's estimate must be far closer
    assert error(initial) > 0.4
    assert max(errors) < 0.12, errors
    assert min(ncc(learned[:, None], kernel.expand(3, 1, KSIZE, KSIZE)).flatten().tolist()) > 0.99


def test_matching_resumes_exactly_after_an_interrupt(tmp_path):
    full, _ = _fit(tmp_path / "full", "twin", steps=12, snapshot_steps=5)

    def interrupt_at_7(step, grid):
        if step == 7:
            raise KeyboardInterrupt
        return {}

    stopped, _ = _fit(tmp_path / "cut", "twin", steps=12, snapshot_steps=1, callback=interrupt_at_7)
    assert stopped.interrupted and stopped.steps == 7
    sharp, blurry_set, _ = _camera()
    blurry = BlurryPatches(blurry_set, PATCH)
    config = MatchingConfig(stages=(Stage("lens", 12, 0.02),), batch=32, lr_aux=0.02, reference="twin",
                            snapshot_steps=1, init_sigma=1.0)
    resumed = match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame),
                             grid=(1, 1), kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path / "cut",
                             resume=True, progress=False)
    assert resumed.steps == 12 and not resumed.interrupted
    assert torch.equal(resumed.psf_grid, full.psf_grid)


def test_uniform_stages_learn_an_elongated_blur(tmp_path):
    """The uniform path (presets' ``uniform=True``): an anisotropic Gaussian stage, then a free kernel shared by the
    channels with the root sparsity, on white-noise photos blurred by an elongated, tilted Gaussian (its power
    spectrum, all the distributions show, determines it: it is symmetric). The kernel's NCC to the truth must end
    far above the delta's and the isotropic start's, and the channels share one kernel."""
    kernel = gaussian_kernel(KSIZE, 2.5, 0.2, 0.5)
    sharp, blurry_set, _ = _camera(kernel=kernel)
    blurry = BlurryPatches(blurry_set, PATCH)
    config = MatchingConfig(stages=(Stage("gaussian", 200, 0.02), Stage("kernel", 60, 2e-3)), batch=32,
                            lr_aux=0.02, reference="frozen", gaussian_weight=0.0, sparsity_fraction=0.1,
                            snapshot_steps=50, init_sigma=1.0)
    result = match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame),
                            grid=(1, 1), kernel_size=KSIZE, sigma=0.01, config=config, out_dir=tmp_path,
                            progress=False)
    learned = result.psf_grid[0, :, 0, 0]                         # (3, k, k)
    assert result.psf_grid.shape == (1, 3, 1, 1, KSIZE, KSIZE)
    assert torch.equal(learned[0], learned[1]) and torch.equal(learned[0], learned[2])
    delta = torch.zeros(KSIZE, KSIZE)
    delta[KSIZE // 2, KSIZE // 2] = 1
    baselines = [ncc(delta, kernel).item(), ncc(gaussian_kernel(KSIZE, 1.0), kernel).item()]
    assert max(baselines) < 0.7, baselines                         # 0.51 and 0.69
    assert ncc(learned[0], kernel).item() > 0.9                    # 0.976 when written


def test_uniform_stages_resume_exactly_across_the_stage_change(tmp_path):
    """Interrupted in the kernel stage (which starts from the Gaussian stage's average), resumed: the same kernel
    as an uninterrupted run."""
    sharp, blurry_set, _ = _camera()
    blurry = BlurryPatches(blurry_set, PATCH)
    config = MatchingConfig(stages=(Stage("gaussian", 6, 0.02), Stage("kernel", 6, 2e-3)), batch=32, lr_aux=0.02,
                            reference="twin", gaussian_weight=0.0, sparsity_fraction=0.1, snapshot_steps=1)

    def fit(out_dir, resume=False, callback=None):
        return match_operator(_exact_prior(blurry), blurry, SharpPatches(sharp, PATCH, KSIZE, blurry.frame),
                              grid=(1, 1), kernel_size=KSIZE, sigma=0.01, config=config, out_dir=out_dir,
                              resume=resume, progress=False, callback=callback)

    def interrupt_at_9(step, grid):
        if step == 9:
            raise KeyboardInterrupt
        return {}

    full = fit(tmp_path / "full")
    stopped = fit(tmp_path / "cut", callback=interrupt_at_9)
    assert stopped.interrupted and stopped.steps == 9
    resumed = fit(tmp_path / "cut", resume=True)
    assert resumed.steps == 12 and not resumed.interrupted
    assert torch.equal(resumed.psf_grid, full.psf_grid)
