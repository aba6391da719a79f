"""KLAutoencoder: the KL term against the Gaussian KL written out here and against torch.distributions, the
reparameterised draw and its statistics, the loss against its definition, shapes, determinism, a short training run
on embedded photographs, the scaling factor, presets, config round trip, bad input."""

import json
import math
import re

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from blindfast.data import RandomPatches, embedded_images
from blindfast.models.autoencoder import AUTOENCODER_PRESETS, LOGVAR_RANGE, KLAutoencoder

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
EPS32 = torch.finfo(torch.float32).eps
# A small network for the tests that run it many times: the code paths of the tiny preset at a quarter of its cost.
SMALL = dict(base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1)


def _autoencoder(dtype=F64, seed=0, **overrides):
    torch.manual_seed(seed)
    return KLAutoencoder(**{**SMALL, **overrides}).to(dtype)


def _images(shape=(2, 3, 8, 12), dtype=F64, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def _moments(shape=(3, 4, 5, 6), dtype=F64, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), 2 * torch.randn(shape, generator=g, dtype=dtype)


def _gaussian_kl_reference(mean, logvar):
    """KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2) / 2 - 1/2 per element, from the standard deviation s,
    in float64, summed per batch item."""
    mean, std = mean.double(), (logvar.double() / 2).exp()
    return (-std.log() + (std**2 + mean**2) / 2 - 0.5).flatten(1).sum(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# The KL term


def test_kl_matches_gaussian_formula_float64():
    mean, logvar = _moments()
    kl = KLAutoencoder.kl(mean, logvar)
    reference = _gaussian_kl_reference(mean, logvar)
    assert kl.shape == (3,) and kl.dtype == F64
    # 120 terms of a few roundings each, summed: at most ~(120 + 10) eps of the sum of the terms' magnitudes
    terms = 0.5 * (mean.square() + logvar.exp() + 1 + logvar.abs()).flatten(1).sum(dim=1)
    assert ((kl - reference).abs() <= 130 * EPS64 * terms).all()


def test_kl_matches_torch_distributions():
    mean, logvar = _moments()
    oracle = kl_divergence(Normal(mean, (logvar / 2).exp()), Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    terms = 0.5 * (mean.square() + logvar.exp() + 1 + logvar.abs()).flatten(1).sum(dim=1)
    assert ((KLAutoencoder.kl(mean, logvar) - oracle.flatten(1).sum(dim=1)).abs() <= 130 * EPS64 * terms).all()


def test_kl_float32_within_float32_rounding():
    mean, logvar = _moments(dtype=torch.float32)
    kl = KLAutoencoder.kl(mean, logvar)
    assert kl.dtype == torch.float32
    terms = 0.5 * (mean.double().square() + logvar.double().exp() + 1 + logvar.double().abs()).flatten(1).sum(dim=1)
    assert ((kl.double() - _gaussian_kl_reference(mean, logvar)).abs() <= 130 * EPS32 * terms).all()


def test_kl_is_zero_at_the_standard_normal_and_positive_elsewhere():
    zeros = torch.zeros(2, 4, 3, 3, dtype=F64)
    torch.testing.assert_close(KLAutoencoder.kl(zeros, zeros), torch.zeros(2, dtype=F64), rtol=0, atol=0)
    assert (KLAutoencoder.kl(*_moments()) > 0).all()


def test_kl_bad_shapes():
    with pytest.raises(ValueError, match=re.escape("same shape (B, ...), got (2, 4, 3, 3) and (2, 4, 3, 2)")):
        KLAutoencoder.kl(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 2))


# ---------------------------------------------------------------------------------------------------------------
# Posterior, sampling, shapes


def _set_logvar_bias(ae, value):
    """Every posterior log-variance shifted to about ``value``: the last encoder conv's logvar half gets zero weights
    and bias ``value``."""
    out = ae.encoder[-1]
    with torch.no_grad():
        out.weight[ae.latent_channels:] = 0
        out.bias[ae.latent_channels:] = value
    return ae


def test_sample_is_mean_plus_std_times_the_seeded_noise():
    ae, x = _set_logvar_bias(_autoencoder(), -3.0), _images()
    mean, logvar = ae.moments(x)
    z = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(z, mean + math.exp(-1.5) * noise, rtol=0, atol=4 * EPS64 * z.abs().max().item())


def test_sample_statistics():
    """4000 draws for one image: per latent element, the sample mean is within 5 standard errors sigma / sqrt(N) of
    mu and the sample variance within 5 sqrt(2 / N) (its relative standard error for Gaussian draws) of sigma^2; 16
    elements make a 5-sigma excursion a 1e-5 event, and the seed is fixed."""
    ae = _set_logvar_bias(_autoencoder(), -3.0)
    N = 4000
    x = _images((1, 3, 8, 8)).expand(N, -1, -1, -1)
    mean, logvar = ae.moments(x[:1])
    z = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
    std = (logvar / 2).exp()[0]
    assert ((z.mean(dim=0) - mean[0]).abs() <= 5 * std / math.sqrt(N)).all()
    assert ((z.var(dim=0) / std.square() - 1).abs() <= 5 * math.sqrt(2 / N)).all()


def test_logvar_is_clamped():
    ae, x = _autoencoder(), _images()
    assert (_set_logvar_bias(ae, 100.0).moments(x)[1] == LOGVAR_RANGE[1]).all()
    assert (_set_logvar_bias(ae, -100.0).moments(x)[1] == LOGVAR_RANGE[0]).all()


@pytest.mark.parametrize("B, H, W", [(1, 4, 4), (2, 8, 12), (3, 20, 16)])
def test_shapes(B, H, W):
    ae, x = _autoencoder(), _images((B, 3, H, W))
    mean, logvar = ae.moments(x)
    assert mean.shape == logvar.shape == (B, 4, H // 4, W // 4)
    assert ae.encode(x).shape == ae.encode(x, sample=True).shape == (B, 4, H // 4, W // 4)
    reconstructed = ae.decode(ae.encode(x))
    assert reconstructed.shape == (B, 3, H, W) and reconstructed.dtype == F64


@pytest.mark.parametrize("channel_mults, factor", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_downsampling_factor_follows_levels(channel_mults, factor):
    ae = _autoencoder(channel_mults=channel_mults, latent_channels=3, image_channels=1)
    assert ae.downsampling_factor == factor
    x = _images((2, 1, 16, 8))
    assert ae.encode(x).shape == (2, 3, 16 // factor, 8 // factor)
    assert ae.decode(ae.encode(x)).shape == x.shape


def test_encode_mean_is_deterministic_and_samples_follow_the_seed():
    ae, x = _autoencoder(), _images()
    torch.testing.assert_close(ae.encode(x), ae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(ae.encode(x), ae.moments(x)[0], rtol=0, atol=0)

    def draw(seed):
        return ae.encode(x, sample=True, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(draw(3), draw(3), rtol=0, atol=0)
    assert not torch.equal(draw(3), draw(4))


def test_batch_items_are_encoded_independently():
    ae, x = _autoencoder(), _images((3, 3, 8, 8))
    whole = ae.encode(x)
    for b in range(3):
        torch.testing.assert_close(ae.encode(x[b:b + 1]), whole[b:b + 1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Loss and training


def test_loss_is_its_definition():
    ae, x = _autoencoder(kl_weight=0.25), _images()
    losses = ae.loss(x, torch.Generator().manual_seed(9))
    z = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(9))
    reconstruction = sum((ae.decode(z)[b] - x[b]).abs().sum() for b in range(2)) / 2
    kl = KLAutoencoder.kl(*ae.moments(x)).mean()
    # sums of 2 x 288 O(1) terms: their float64 rounding is below 1e-12 of the total
    torch.testing.assert_close(losses["reconstruction"], reconstruction, rtol=1e-12, atol=0)
    torch.testing.assert_close(losses["kl"], kl, rtol=1e-12, atol=0)
    torch.testing.assert_close(losses["total"], reconstruction + 0.25 * kl, rtol=1e-12, atol=0)
    assert all(v.shape == () for v in losses.values())


def test_loss_gradient_reaches_every_parameter():
    ae = _autoencoder()
    ae.loss(_images(), torch.Generator().manual_seed(0))["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())


def test_training_on_embedded_patches_lowers_the_reconstruction_error():
    """200 Adam steps on 8 fixed 32 x 32 patches of the embedded photographs. The mean-latent L1 error must end
    below half that of the best constant image (per-channel medians, which ignores the input): only a latent that
    carries the image gets there. Measured: 1.5 times that baseline at the start, 0.21 times it at the end."""
    patches = RandomPatches(embedded_images("train"), 32, 8, generator=torch.Generator().manual_seed(0))
    x = patches.sample().patches * 2 - 1
    ae = _autoencoder(dtype=torch.float32)
    optimizer = torch.optim.Adam(ae.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)

    def error():
        with torch.no_grad():
            return (ae.decode(ae.encode(x)) - x).abs().mean().item()
    first = error()
    for _ in range(200):
        optimizer.zero_grad()
        ae.loss(x, generator)["total"].backward()
        optimizer.step()
    last = error()
    medians = x.transpose(0, 1).flatten(1).median(dim=1).values.reshape(1, 3, 1, 1)
    constant = (x - medians).abs().mean().item()
    assert last < 0.5 * constant and last < 0.5 * first, (first, last, constant)


# ---------------------------------------------------------------------------------------------------------------
# Scaling factor


def test_fit_scaling_factor_gives_unit_latent_std():
    ae, x = _autoencoder(dtype=torch.float32), _images((12, 3, 16, 16), dtype=torch.float32)
    means = ae.encode(x).double()
    factor = ae.fit_scaling_factor(x)
    # the same float64 reduction over the same latents
    assert factor == pytest.approx(1 / means.std().item(), rel=4 * EPS64)
    # the float32 buffer holds it rounded: half an ulp
    assert ae.scaling_factor.dtype == torch.float32 and ae.scaling_factor.item() == pytest.approx(factor, rel=EPS32)
    assert (means * ae.scaling_factor.double()).std().item() == pytest.approx(1, rel=EPS32)


def test_fit_scaling_factor_chunking_does_not_matter():
    ae, x = _autoencoder(), _images((7, 3, 8, 8))
    whole = ae.fit_scaling_factor(x)
    assert ae.fit_scaling_factor(x, batch_size=2) == pytest.approx(whole, rel=1e-12)


def test_scaling_factor_is_in_the_state_dict():
    ae, x = _autoencoder(), _images((4, 3, 8, 8))
    ae.fit_scaling_factor(x)
    rebuilt = KLAutoencoder(**ae.config()).double()
    assert rebuilt.scaling_factor.item() == 1.0
    rebuilt.load_state_dict(ae.state_dict())
    assert rebuilt.scaling_factor.item() == ae.scaling_factor.item() != 1.0


def test_fit_scaling_factor_constant_latents():
    ae = _autoencoder()
    with torch.no_grad():
        ae.encoder[-1].weight.zero_()
        ae.encoder[-1].bias.zero_()
    with pytest.raises(ValueError, match=re.escape("finite, positive standard deviation, got 0.0 over 32 element")):
        ae.fit_scaling_factor(_images((2, 3, 8, 8)))


def test_fit_scaling_factor_bad_batch_size():
    with pytest.raises(ValueError, match=re.escape("batch_size must be an integer >= 1, got 0")):
        _autoencoder().fit_scaling_factor(_images(), batch_size=0)


# ---------------------------------------------------------------------------------------------------------------
# Presets and config


def test_tiny_preset():
    ae = KLAutoencoder.from_preset("tiny")
    assert AUTOENCODER_PRESETS["tiny"] == {"image_channels": 3, "latent_channels": 4, "base_channels": 16,
                                           "channel_mults": (1, 2, 2), "blocks_per_level": 1, "kl_weight": 1e-6}
    assert ae.downsampling_factor == 4 and ae.latent_channels == 4
    count = sum(p.numel() for p in ae.parameters())
    assert 0.2e6 < count < 0.3e6


def test_unknown_preset():
    with pytest.raises(ValueError, match=re.escape("preset must be one of ['tiny'], got 'huge'")):
        KLAutoencoder.from_preset("huge")


@pytest.mark.parametrize("make", [lambda: KLAutoencoder.from_preset("tiny"), lambda: KLAutoencoder(
    image_channels=1, latent_channels=3, base_channels=4, channel_mults=(1, 3), blocks_per_level=2, kl_weight=0.5)])
def test_config_round_trip(make):
    ae = make()
    config = json.loads(json.dumps(ae.config()))
    rebuilt = KLAutoencoder(**config)
    assert rebuilt.config() == config
    rebuilt.load_state_dict(ae.state_dict())
    x = _images((1, ae.image_channels, 8, 8), dtype=torch.float32)
    torch.testing.assert_close(rebuilt.encode(x), ae.encode(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("H, W", [(6, 8), (8, 10), (5, 7)])
def test_size_not_divisible(H, W):
    with pytest.raises(ValueError, match=re.escape(f"divisible by the downsampling factor 4, got H = {H}, W = {W}")):
        _autoencoder().encode(_images((1, 3, H, W)))


def test_wrong_image_channels():
    with pytest.raises(ValueError, match=re.escape("x must have shape (B, 3, H, W), got (1, 1, 8, 8)")):
        _autoencoder().encode(_images((1, 1, 8, 8)))


def test_wrong_image_rank():
    with pytest.raises(ValueError, match=re.escape("x must have shape (B, 3, H, W), got (3, 8, 8)")):
        _autoencoder().encode(_images((3, 8, 8)))


def test_integer_images():
    with pytest.raises(TypeError, match=re.escape("x must have a floating-point dtype, got torch.int64")):
        _autoencoder().encode(torch.zeros(1, 3, 8, 8, dtype=torch.long))


def test_wrong_latent_channels():
    with pytest.raises(ValueError, match=re.escape("z must have shape (B, 4, H, W), got (1, 3, 2, 2)")):
        _autoencoder().decode(torch.zeros(1, 3, 2, 2, dtype=F64))


def test_loss_size_not_divisible():
    with pytest.raises(ValueError, match=re.escape("got H = 8, W = 6")):
        _autoencoder().loss(_images((1, 3, 8, 6)))


@pytest.mark.parametrize("override, message", [
    ({"image_channels": 0}, "image_channels must be an integer >= 1, got 0"),
    ({"latent_channels": -1}, "latent_channels must be an integer >= 1, got -1"),
    ({"base_channels": -8}, "base_channels must be an integer >= 1, got -8"),
    ({"blocks_per_level": 0}, "blocks_per_level must be an integer >= 1, got 0"),
    ({"channel_mults": ()}, "channel_mults must be a non-empty tuple of integers >= 1, got ()"),
    ({"channel_mults": (1, 0)}, "channel_mults must be a non-empty tuple of integers >= 1, got (1, 0)"),
    ({"kl_weight": -1e-6}, "kl_weight must be a finite number >= 0, got -1e-06"),
    ({"kl_weight": math.inf}, "kl_weight must be a finite number >= 0, got inf"),
])
def test_bad_constructor_argument(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        KLAutoencoder(**{**SMALL, **override})
