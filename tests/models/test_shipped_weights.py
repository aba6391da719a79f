"""The priors shipped inside the package: one pixel and one latent prior, intact, within the size budget, and as good
as their manifests say, re-measured here on the held-out patches the manifests describe (the issue's quality bar: a
pixel prior denoises at least 1.5 dB better than the best Gaussian smoothing)."""

import hashlib
import math

import pytest
import torch

from blindfast.metrics import psnr
from blindfast.models import LatentFlowPrior
from blindfast.models.denoising_quality import denoise_gain_db
from blindfast.models.shipped import WEIGHTS_DIR, load_shipped_prior, shipped_priors
from blindfast.train.shipped import held_out_patches

QUALITY_BAR_DB = 1.5
# The figures are means over the held-out patches of float32 network outputs: another CPU's kernels (or thread
# count) round each output differently, by a few ulps, which moves a mean PSNR by far less than this.
REPRODUCED_DB = 0.01
# ... and the mean flow-matching loss by far less than this, relatively.
REPRODUCED_LOSS = 1e-4
SHIPPED = shipped_priors()


def fitted_gaussian_flow_loss(x1: torch.Tensor, seed: int) -> float:
    """The held-out flow loss of the exact prior of N(mu_c, s^2 I) fitted to ``x1`` (N, C, H, W) (per-channel means,
    one std about them), with flow_loss_of's draws, all in float64 from the closed form: for x_t = (1 - t) x0 + t x1,
    E[x1 | x_t] = mu + t s^2 (x_t - t mu) / D and E[x0 | x_t] = (1 - t)(x_t - t mu) / D, D = t^2 s^2 + (1 - t)^2."""
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(x1.shape, generator=generator).double()
    t = torch.rand(x1.shape[0], generator=generator).double()[:, None, None, None]
    x1 = x1.double()
    mu = x1.mean(dim=(0, 2, 3), keepdim=True)
    s2 = (x1 - mu).std() ** 2
    x_t = (1 - t) * x0 + t * x1
    centred, variance = x_t - t * mu, t**2 * s2 + (1 - t) ** 2
    velocity = (mu + t * s2 * centred / variance) - (1 - t) * centred / variance
    return (velocity - (x1 - x0)).square().mean().item()


def test_a_pixel_and_a_latent_prior_are_shipped():
    assert sorted(manifest["kind"] for manifest in SHIPPED.values()) == ["latent", "pixel"]


def test_shipped_weights_fit_the_budget():
    assert sum(f.stat().st_size for f in WEIGHTS_DIR.iterdir()) <= 20_000_000


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_prior_is_intact_and_as_good_as_its_manifest(name, flow_loss_of):
    manifest = SHIPPED[name]
    assert hashlib.sha256((WEIGHTS_DIR / manifest["weights"]).read_bytes()).hexdigest() == manifest["sha256"]
    prior = load_shipped_prior(name).eval()
    assert manifest["parameters"] == sum(p.numel() for p in prior.parameters())
    held_out = manifest["held_out"]
    clean = held_out_patches(held_out["patches"], held_out["size"], held_out["seed"])
    data = clean * 2 - 1
    with torch.no_grad():
        if isinstance(prior, LatentFlowPrior):
            assert manifest["kind"] == "latent"
            decoded = prior.autoencoder.decode(prior.autoencoder.encode(data))
            reconstruction_db = psnr(((decoded + 1) / 2).clamp(0, 1), clean).mean().item()
            assert abs(reconstruction_db - manifest["autoencoder_psnr"]) < REPRODUCED_DB
            data = prior.encode(data)
        else:
            assert manifest["kind"] == "pixel"
            result = denoise_gain_db(prior, clean, tuple(manifest["denoising"]["sigmas"]),
                                     generator=torch.Generator().manual_seed(held_out["seed"] + 1))
            for got, recorded in zip(result["prior_psnr"], manifest["denoising"]["prior_psnr"]):
                assert abs(got - recorded) < REPRODUCED_DB
            assert abs(result["denoise_gain_db"] - manifest["denoise_gain_db"]) < REPRODUCED_DB
            assert result["denoise_gain_db"] >= QUALITY_BAR_DB and manifest["meets_quality_bar"]
    loss = flow_loss_of(prior, data, held_out["seed"] + 2)  # the documented draws
    assert loss == pytest.approx(manifest["heldout_flow_loss"], rel=REPRODUCED_LOSS)
    gaussian_loss = fitted_gaussian_flow_loss(data, held_out["seed"] + 2)
    assert gaussian_loss == pytest.approx(manifest["gaussian_flow_loss"], rel=REPRODUCED_LOSS)
    # the network has learnt more than the moments: it beats the exact prior of the fitted Gaussian
    assert loss < gaussian_loss
    assert math.isfinite(manifest["final_loss"]) and manifest["images_seen"] > 0
