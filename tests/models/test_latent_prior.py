"""LatentFlowPrior: encode/decode against the autoencoder with the scaling applied and undone, the velocity on
latents, the frozen autoencoder, construction from a preset and from a config, bad input."""

import json
import math
import re

import pytest
import torch

from blindfast.models.autoencoder import KLAutoencoder
from blindfast.models.latent_prior import LatentFlowPrior
from blindfast.models.prior import NetworkPrior
from blindfast.models.unet import UNet

F64 = torch.float64
EPS64 = torch.finfo(F64).eps


def _prior(scaling_factor=0.37, seed=0):
    """The tiny autoencoder and tiny U-Net in float64, the U-Net's zero-initialised output conv redrawn so the
    velocity is not identically 0."""
    torch.manual_seed(seed)
    prior = LatentFlowPrior.from_autoencoder(KLAutoencoder.from_preset("tiny")).double()
    with torch.no_grad():
        prior.autoencoder.scaling_factor.fill_(scaling_factor)
        prior.net.output.weight.normal_(0, 0.1)
    return prior


def _images(shape=(2, 3, 16, 24), seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1


def test_encode_is_the_scaled_autoencoder_mean():
    prior, x = _prior(), _images()
    latents = prior.encode(x)
    assert latents.shape == (2, 4, 4, 6)
    torch.testing.assert_close(latents, prior.autoencoder.encode(x) * 0.37, rtol=0, atol=0)


def test_decode_undoes_the_scaling():
    prior = _prior()
    z = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    images = prior.decode(z)
    assert images.shape == (2, 3, 16, 24)
    torch.testing.assert_close(images, prior.autoencoder.decode(z / 0.37), rtol=0, atol=0)


def test_round_trip_equals_the_autoencoders():
    """With a power-of-two factor, scaling and unscaling are exact, so the round trips agree bit for bit."""
    prior, x = _prior(scaling_factor=0.25), _images()
    torch.testing.assert_close(prior.decode(prior.encode(x)),
                               prior.autoencoder.decode(prior.autoencoder.encode(x)), rtol=0, atol=0)


def test_latent_round_trip_with_any_factor():
    """encode(x) / s recovers the autoencoder's mean within the two roundings of the multiply and the divide."""
    prior, x = _prior(scaling_factor=0.37), _images()
    mean = prior.autoencoder.encode(x)
    unscaled = prior.encode(x) / prior.autoencoder.scaling_factor
    assert ((unscaled - mean).abs() <= 2 * EPS64 * mean.abs()).all()


def test_attributes():
    prior = _prior()
    assert isinstance(prior, NetworkPrior)
    assert prior.latent_channels == 4 and prior.downsampling_factor == 4
    assert prior.net.image_channels == 4


def test_velocity_on_latents():
    prior = _prior()
    z_t = torch.randn(3, 4, 4, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    v = prior.velocity(z_t, t)
    assert v.shape == z_t.shape and v.abs().max() > 0
    torch.testing.assert_close(v, prior.net(z_t, t), rtol=0, atol=0)
    torch.testing.assert_close(prior.denoise(z_t, t), z_t + (1 - t).reshape(3, 1, 1, 1) * v, rtol=0, atol=0)


def test_autoencoder_is_frozen_but_latents_get_gradients():
    prior = _prior()
    assert not any(p.requires_grad for p in prior.autoencoder.parameters())
    assert all(p.requires_grad for p in prior.net.parameters())
    z = torch.randn(1, 4, 4, 4, dtype=F64, requires_grad=True)
    prior.decode(z).square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.autoencoder.parameters())


def test_from_autoencoder_uses_the_preset():
    ae = KLAutoencoder(latent_channels=3, base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1)
    prior = LatentFlowPrior.from_autoencoder(ae, "tiny")
    assert prior.autoencoder is ae
    assert prior.net.config() == UNet.from_preset("tiny", image_channels=3).config()


def test_config_round_trip():
    # 8 x 8 latents: the tiny U-Net's GroupNorm has one channel per group at its 1/4-size level, so it needs
    # latents of at least 8 x 8 (a 1 x 1 map there has nothing to normalise over)
    prior, x = _prior(), _images((1, 3, 32, 32))
    config = json.loads(json.dumps(prior.config()))
    rebuilt = LatentFlowPrior.from_config(config).double()
    assert rebuilt.config() == config
    rebuilt.load_state_dict(prior.state_dict())
    assert rebuilt.autoencoder.scaling_factor.item() == pytest.approx(0.37, rel=EPS64)
    torch.testing.assert_close(rebuilt.encode(x), prior.encode(x), rtol=0, atol=0)
    z_t, t = prior.encode(x), torch.tensor([0.3], dtype=F64)
    torch.testing.assert_close(rebuilt.velocity(z_t, t), prior.velocity(z_t, t), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("H, W", [(18, 16), (16, 14)])
def test_image_size_not_divisible_by_four(H, W):
    with pytest.raises(ValueError, match=re.escape(f"divisible by the downsampling factor 4, got H = {H}, W = {W}")):
        _prior().encode(_images((1, 3, H, W)))


def test_wrong_image_channels():
    with pytest.raises(ValueError, match=re.escape("x must have shape (B, 3, H, W), got (1, 4, 16, 16)")):
        _prior().encode(_images((1, 4, 16, 16)))


def test_wrong_latent_channels():
    with pytest.raises(ValueError, match=re.escape("z must have shape (B, 4, H, W), got (1, 3, 4, 4)")):
        _prior().decode(torch.zeros(1, 3, 4, 4, dtype=F64))


def test_velocity_on_images_instead_of_latents():
    with pytest.raises(ValueError, match=re.escape("x_t must have shape (B, 4, H, W) for this prior, got "
                                                   "(1, 3, 16, 16)")):
        _prior().velocity(_images((1, 3, 16, 16)), 0.5)


def test_net_channels_must_match_the_latents():
    with pytest.raises(ValueError, match=re.escape("must take the autoencoder's 4 latent channels (image_channels), "
                                                   "got 3")):
        LatentFlowPrior(KLAutoencoder.from_preset("tiny"), UNet.from_preset("tiny", image_channels=3))


def test_autoencoder_type():
    with pytest.raises(TypeError, match=re.escape("autoencoder must be a KLAutoencoder, got UNet")):
        LatentFlowPrior(UNet.from_preset("tiny", image_channels=4), UNet.from_preset("tiny", image_channels=4))


def test_unknown_unet_preset():
    with pytest.raises(ValueError, match=re.escape("preset must be one of ['base', 'small', 'tiny'], got 'huge'")):
        LatentFlowPrior.from_autoencoder(KLAutoencoder.from_preset("tiny"), "huge")


def test_scaling_factor_is_used_not_assumed():
    """Doubling s doubles the latents exactly (a power of two): encode reads the buffer at call time."""
    prior, x = _prior(scaling_factor=0.25), _images()
    before = prior.encode(x)
    prior.autoencoder.scaling_factor.fill_(0.5)
    torch.testing.assert_close(prior.encode(x), 2 * before, rtol=0, atol=0)
    assert math.isclose(prior.autoencoder.scaling_factor.item(), 0.5)
