"""UNet: time features against their closed form, its blocks against float64 references written out here, shapes,
the zero-init property, dependence on t and cond, gradients, presets, config round trip, bad input."""

import json
import math
import re

import pytest
import torch

from blindfast.models.unet import PRESETS, UNet, fourier_time_features

F64 = torch.float64
# Two evaluations of the same float64 network that differ only in summation order (batched vs. per-item kernels) stay
# within ~depth x sqrt(fan-in) x eps = 50 x 25 x 2.2e-16 ~ 3e-13 of the output scale.
F64_REORDER = 1e-12


def _randomise(net, seed=0):
    """Every parameter redrawn: weights N(0, 1/fan_in) (activations stay O(1)), 1-D parameters N(0, 0.25), so no
    branch is zero any more."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return net


def _inputs(B=3, C=3, H=16, W=20, cond_channels=0, dtype=F64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    t = torch.rand(B, generator=g, dtype=dtype)
    cond = torch.randn(B, cond_channels, H, W, generator=g, dtype=dtype) if cond_channels else None
    return x, t, cond


def _small_custom(**overrides):
    """Two blocks per level and attention at full resolution: the paths the tiny preset does not take."""
    config = dict(base_channels=8, channel_mults=(1, 2), blocks_per_level=2, attention_levels=(0, 1),
                  time_embedding_dim=16)
    return UNet(**{**config, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# time features and blocks against references


def test_fourier_time_features_closed_form():
    t = torch.tensor([0.0, 0.125, 0.5, 0.9, 1.0], dtype=F64)
    features = fourier_time_features(t, 8)
    assert features.shape == (5, 8) and features.dtype == F64
    for b, time in enumerate(t.tolist()):
        for k in range(4):
            angle = time * 1000.0 * 10000.0 ** (-k / 4)
            # each side forms the angle (<= 1000) in ~2 roundings: <= 2 ulp(1000) = 2.3e-13 apart from exact
            assert abs(features[b, k].item() - math.cos(angle)) <= 5e-13
            assert abs(features[b, 4 + k].item() - math.sin(angle)) <= 5e-13


@pytest.mark.parametrize("count", [7, 0])
def test_fourier_time_features_bad_count(count):
    with pytest.raises(ValueError, match=rf"count must be a positive even integer, got {count}"):
        fourier_time_features(torch.zeros(2), count)


def _group_norm(x, groups, weight, bias, eps=1e-5):
    B, C, H, W = x.shape
    grouped = x.reshape(B, groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    variance = ((grouped - mean) ** 2).mean(-1, keepdim=True)
    normed = ((grouped - mean) / torch.sqrt(variance + eps)).reshape(B, C, H, W)
    return normed * weight[:, None, None] + bias[:, None, None]


def _silu(x):
    return x / (1 + torch.exp(-x))


def _conv(x, conv):
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.padding)


def test_residual_block_matches_reference():
    net = _randomise(_small_custom().double())
    block = net.encoder[1][0].block  # 8 -> 16 channels: has the 1x1 skip conv
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 6, 10, generator=g, dtype=F64)
    embedding = torch.randn(2, 16, generator=g, dtype=F64)

    h = _conv(_silu(_group_norm(x, block.norm1.num_groups, block.norm1.weight, block.norm1.bias)), block.conv1)
    scale_shift = _silu(embedding) @ block.scale_shift.weight.T + block.scale_shift.bias
    scale, shift = scale_shift[:, :16, None, None], scale_shift[:, 16:, None, None]
    h = _group_norm(h, block.norm2.num_groups, block.norm2.weight, block.norm2.bias) * (1 + scale) + shift
    expected = _conv(x, block.skip) + _conv(_silu(h), block.conv2)

    got = block(x, embedding)
    torch.testing.assert_close(got, expected, rtol=0, atol=F64_REORDER * expected.abs().max().item())


@pytest.mark.parametrize("channels, heads", [(16, 1), (128, 2), (96, 1), (192, 3)])
def test_self_attention_matches_reference(channels, heads):
    from blindfast.models.unet import _SelfAttention

    attention = _randomise(_SelfAttention(channels).double())
    assert attention.heads == heads
    x = torch.randn(2, channels, 3, 5, generator=torch.Generator().manual_seed(4), dtype=F64)
    qkv = _conv(_group_norm(x, attention.norm.num_groups, attention.norm.weight, attention.norm.bias), attention.qkv)
    q, k, v = qkv.reshape(2, 3 * channels, 15).split(channels, dim=1)
    d = channels // heads
    attended = torch.empty(2, channels, 15, dtype=F64)
    for b in range(2):
        for head in range(heads):
            rows = slice(head * d, (head + 1) * d)
            logits = q[b, rows].T @ k[b, rows] / math.sqrt(d)  # (queries, keys)
            attended[b, rows] = v[b, rows] @ torch.softmax(logits, dim=1).T
    expected = x + _conv(attended.reshape(2, channels, 3, 5), attention.out)
    torch.testing.assert_close(attention(x), expected, rtol=0, atol=F64_REORDER * expected.abs().max().item())


def test_batch_items_are_independent():
    net = _randomise(UNet.from_preset("tiny", cond_channels=2).double())
    x, t, cond = _inputs(cond_channels=2)
    batched = net(x, t, cond)
    one_by_one = torch.cat([net(x[b:b + 1], t[b:b + 1], cond[b:b + 1]) for b in range(3)])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=F64_REORDER * batched.abs().max().item())


# ---------------------------------------------------------------------------------------------------------------
# shapes, zero init, dependence on the inputs, gradients


@pytest.mark.parametrize("B, H, W", [(1, 16, 16), (3, 12, 20), (3, 28, 4)])
@pytest.mark.parametrize("cond_channels", [0, 2])
def test_output_shape_and_dtype(B, H, W, cond_channels):
    net = _randomise(UNet.from_preset("tiny", cond_channels=cond_channels))
    x, t, cond = _inputs(B, 3, H, W, cond_channels, dtype=torch.float32)
    y = net(x, t, cond)
    assert y.shape == (B, 3, H, W) and y.dtype == torch.float32 and bool(torch.isfinite(y).all())


def test_custom_architecture_shape():
    net = _randomise(_small_custom(image_channels=1, cond_channels=1))
    x, t, cond = _inputs(2, 1, 6, 10, 1, dtype=torch.float32)
    assert net(x, t, cond).shape == (2, 1, 6, 10)


@pytest.mark.parametrize("make", [lambda: UNet.from_preset("tiny", cond_channels=2),
                                  lambda: _small_custom(cond_channels=2)], ids=["tiny", "custom"])
def test_fresh_network_outputs_exactly_zero(make):
    net = make()
    x, t, cond = _inputs(cond_channels=2, dtype=torch.float32, H=16, W=20)
    assert torch.equal(net(x, t, cond), torch.zeros_like(x))


def test_fresh_residual_branches_are_zero():
    net = UNet.from_preset("tiny")
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    block = net.encoder[0][0].block
    assert torch.equal(block(x, torch.randn(2, 64)), x)  # no skip conv at equal channels: the identity
    attention = net.encoder[2][0].attention
    y = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(attention(y), y)


def test_cond_is_used():
    net = _randomise(UNet.from_preset("tiny", cond_channels=2).double())
    x, t, cond = _inputs(cond_channels=2)
    other = cond.clone()
    other[:, 1] += 0.5
    difference = (net(x, t, cond) - net(x, t, other)).abs().amax(dim=(1, 2, 3))
    # a real change, far above the 1e-13 of float64 reordering
    assert bool((difference > 1e-6).all()), difference


def test_time_is_used():
    net = _randomise(UNet.from_preset("tiny").double())
    x, t, _ = _inputs()
    y = net(x, torch.full((3,), 0.2, dtype=F64))
    z = net(x, torch.full((3,), 0.7, dtype=F64))
    assert bool(((y - z).abs().amax(dim=(1, 2, 3)) > 1e-6).all())
    # equal inputs and times give equal outputs: the time enters per item
    same = net(x[[0, 0]], torch.tensor([0.3, 0.3], dtype=F64))
    assert torch.equal(same[0], same[1])


def test_gradients_reach_every_parameter():
    net = _randomise(UNet.from_preset("tiny", cond_channels=2).double())
    x, t, cond = _inputs(cond_channels=2)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    (net(x, t, cond) * weights).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().max() > 0, name


def test_float64_agrees_with_float32():
    net64 = _randomise(UNet.from_preset("tiny", cond_channels=2).double())
    net32 = UNet.from_preset("tiny", cond_channels=2)
    net32.load_state_dict(net64.state_dict())  # float32-rounded copies of the same weights
    x, t, cond = _inputs(cond_channels=2)
    y64 = net64(x, t, cond)
    y64.sum().backward()
    assert y64.dtype == F64 and all(p.grad.dtype == F64 for p in net64.parameters())
    y32 = net32(x.float(), t.float(), cond.float())
    # ~40 layers in sequence, each adding a few float32 ulps (eps = 1.2e-7) relative to the output scale
    assert (y32.double() - y64).abs().max() <= 1e-5 * y64.abs().max()


def test_dropout_only_in_training():
    net = _randomise(UNet.from_preset("tiny", dropout=0.5).double())
    x, t, _ = _inputs()
    torch.manual_seed(0)
    assert not torch.equal(net(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


# ---------------------------------------------------------------------------------------------------------------
# presets and config


@pytest.mark.parametrize("name, target", [("tiny", 0.3e6), ("small", 4e6), ("base", 50e6)])
def test_preset_parameter_counts(name, target):
    count = sum(p.numel() for p in UNet.from_preset(name).parameters())
    assert 0.75 * target <= count <= 1.25 * target, count


def test_presets_are_the_documented_configs():
    for name, config in PRESETS.items():
        net = UNet.from_preset(name, image_channels=1, cond_channels=2, dropout=0.1)
        assert net.config() == {"image_channels": 1, "cond_channels": 2, "dropout": 0.1, "cond_embedding": False,
                                **{key: list(v) if isinstance(v, tuple) else v for key, v in config.items()}}


@pytest.mark.parametrize("make", [lambda: UNet.from_preset("tiny", image_channels=1, cond_channels=2, dropout=0.1),
                                  lambda: _small_custom(cond_channels=1)], ids=["tiny", "custom"])
def test_config_round_trip(make):
    net = _randomise(make())
    config = json.loads(json.dumps(net.config()))
    rebuilt = UNet(**config)
    assert rebuilt.config() == net.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    rebuilt.load_state_dict(net.state_dict())
    net.eval()
    rebuilt.eval()
    x, t, cond = _inputs(2, net.image_channels, 8, 12, net.cond_channels, dtype=torch.float32)
    assert torch.equal(rebuilt(x, t, cond), net(x, t, cond))


def test_with_conditioning_starts_as_the_network_whatever_the_cond():
    net = _randomise(UNet.from_preset("tiny").double())
    conditioned = net.with_conditioning(2)
    assert conditioned.config() == {**net.config(), "cond_channels": 2, "cond_embedding": True}
    x, t, cond = _inputs(cond_channels=2)
    reference = net(x, t)
    assert torch.equal(conditioned(x, t, cond), reference)
    assert torch.equal(conditioned(x, t, 5 * cond), reference)
    with pytest.raises(ValueError, match="already takes 2 cond channel"):
        conditioned.with_conditioning(2)


def test_cond_embedding_carries_the_cond_mean_to_every_block():
    # with the cond's input weights at zero, only the embedding path can carry the cond: it must, once trained
    net = _randomise(UNet.from_preset("tiny", cond_channels=2, cond_embedding=True).double())
    with torch.no_grad():
        net.input.weight[:, 3:] = 0
    x, t, cond = _inputs(cond_channels=2)
    shifted = cond + torch.tensor([0.3, -0.2], dtype=F64)[None, :, None, None]
    assert bool(((net(x, t, cond) - net(x, t, shifted)).abs().amax(dim=(1, 2, 3)) > 1e-6).all())
    # the embedding sees the spatial mean only: a zero-mean change of the cond changes nothing
    wiggle = torch.randn(cond.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    wiggle -= wiggle.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(net(x, t, cond + wiggle), net(x, t, cond), rtol=0, atol=F64_REORDER)
    with pytest.raises(ValueError, match="cond_embedding=True needs cond_channels > 0"):
        UNet.from_preset("tiny", cond_embedding=True)


def test_network_attributes():
    net = UNet.from_preset("tiny", image_channels=1, cond_channels=2)
    assert net.image_channels == 1 and net.cond_channels == 2


# ---------------------------------------------------------------------------------------------------------------
# bad input


def _call(x_shape=(2, 3, 16, 16), t_shape=(2,), cond_shape=None, cond_channels=0):
    net = UNet.from_preset("tiny", cond_channels=cond_channels)
    cond = torch.zeros(cond_shape) if cond_shape is not None else None
    return net(torch.zeros(x_shape), torch.zeros(t_shape), cond)


def test_wrong_image_channels():
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, H, W\), got \(2, 4, 16, 16\)"):
        _call(x_shape=(2, 4, 16, 16))


def test_wrong_x_rank():
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, H, W\), got \(3, 16, 16\)"):
        _call(x_shape=(3, 16, 16))


@pytest.mark.parametrize("H, W", [(18, 16), (16, 10)])
def test_size_not_a_multiple(H, W):
    with pytest.raises(ValueError, match=rf"multiples of 4 \(2\^\(levels - 1\)\), got H = {H}, W = {W}"):
        _call(x_shape=(2, 3, H, W))


def test_size_multiple_follows_levels():
    with pytest.raises(ValueError, match=r"multiples of 8 .* got H = 12, W = 16"):
        UNet.from_preset("small")(torch.zeros(1, 3, 12, 16), torch.zeros(1))


@pytest.mark.parametrize("t_shape", [(), (3,), (2, 1)])
def test_wrong_t_shape(t_shape):
    with pytest.raises(ValueError, match=re.escape(f"t must be a (2,) tensor, got {t_shape}")):
        _call(t_shape=t_shape)


def test_t_not_a_tensor():
    with pytest.raises(TypeError, match=r"t must be a \(2,\) tensor, got float"):
        UNet.from_preset("tiny")(torch.zeros(2, 3, 8, 8), 0.5)


def test_missing_cond():
    with pytest.raises(ValueError, match=r"cond must have shape \(2, 2, 16, 16\), got None"):
        _call(cond_channels=2)


def test_unexpected_cond():
    with pytest.raises(ValueError, match=r"takes no cond \(cond_channels = 0\), got cond of shape \(2, 2, 16, 16\)"):
        _call(cond_shape=(2, 2, 16, 16))


@pytest.mark.parametrize("cond_shape", [(2, 1, 16, 16), (2, 2, 16, 8), (1, 2, 16, 16)])
def test_wrong_cond_shape(cond_shape):
    with pytest.raises(ValueError, match=re.escape(f"cond must have shape (2, 2, 16, 16), got {cond_shape}")):
        _call(cond_shape=cond_shape, cond_channels=2)


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"preset must be one of \['base', 'small', 'tiny'\], got 'huge'"):
        UNet.from_preset("huge")


@pytest.mark.parametrize("override, message", [
    ({"image_channels": 0}, r"image_channels must be an integer >= 1, got 0"),
    ({"cond_channels": -1}, r"cond_channels must be an integer >= 0, got -1"),
    ({"blocks_per_level": 0}, r"blocks_per_level must be an integer >= 1, got 0"),
    ({"time_embedding_dim": 0}, r"time_embedding_dim must be an integer >= 1, got 0"),
    ({"base_channels": 7}, r"base_channels must be a positive even integer, got 7"),
    ({"channel_mults": ()}, r"channel_mults must be a non-empty tuple of integers >= 1, got \(\)"),
    ({"channel_mults": (1, 0)}, r"channel_mults must be a non-empty tuple of integers >= 1, got \(1, 0\)"),
    ({"attention_levels": (2,)}, r"attention_levels must be level indices in \[0, 1\], got \(2,\)"),
    ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\), got 1.0"),
], ids=["image_channels", "cond_channels", "blocks_per_level", "time_embedding_dim", "base_channels", "no_mults",
        "zero_mult", "attention_level", "dropout"])
def test_bad_constructor_argument(override, message):
    with pytest.raises(ValueError, match=message):
        _small_custom(**override)


def test_the_size_multiples_of_the_shipped_priors():
    """What their images' sides must be multiples of: 2^(levels - 1) for the pixel U-Net, times the autoencoder's f
    for the latent prior; a prior without a network takes any size."""
    from blindfast.models import GaussianPrior, load_shipped_prior

    pixel, latent = load_shipped_prior("pixel_tiny"), load_shipped_prior("latent_tiny")
    assert pixel.net.size_multiple == 2 ** (len(pixel.net.channel_mults) - 1) == pixel.image_multiple == 4
    assert latent.image_multiple == latent.downsampling_factor * latent.net.size_multiple == 16
    assert GaussianPrior().image_multiple == 1
