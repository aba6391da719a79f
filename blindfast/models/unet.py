r"""A compact U-Net velocity network :math:`v_\theta(x_t, t, c)` for flow matching, in the spirit of EDM2.

Layout after EDM2's U-Net (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models"):
an encoder of residual blocks per resolution level whose every output is a skip connection, a bottleneck, and a
decoder with one more block per level than the encoder, each consuming one skip by concatenation; box-filter
(2x2 average) downsampling and nearest upsampling; self-attention with 64 channels per head at the low resolutions.
Unlike EDM2 the layers are not magnitude-preserving: EDM2's forced weight normalisation rewrites the weights at every
training step, a coupling with the training loop this network avoids. Blocks use GroupNorm and the time-conditioned
scale/shift of ADM instead (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Sec. 3, AdaGN).

Every residual branch (the second conv of a block, the output projection of attention) and the output conv start at
zero, so each block starts as its skip path and a fresh network outputs exactly 0: training starts from a network
that is the identity on its residual stream (as ADM does; Goyal et al. 2017 do the same for ResNets) and from the
loss :math:`\mathbb E\|x_1 - x_0\|^2` of the zero velocity, not that plus the output noise of random weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from blindfast import _validate

__all__ = ["UNet", "PRESETS", "fourier_time_features"]

_TIME_SCALE = 1000.0  # t * 1000 spans DDPM's 1000 step indices (Ho et al. 2020), the range the frequencies below fit
_MAX_PERIOD = 10000.0  # the Transformer's positional-encoding base (Vaswani et al. 2017, Sec. 3.5)
_CHANNELS_PER_HEAD = 64  # EDM2's attention head width
_MAX_GROUPS = 32  # GroupNorm groups, as in DDPM/ADM
_MIN_GROUP_CHANNELS = 4

PRESETS: dict[str, dict] = {
    # ~0.27M parameters: CPU tests and demos.
    "tiny": {"base_channels": 16, "channel_mults": (1, 2, 2), "blocks_per_level": 1, "attention_levels": (2,),
             "time_embedding_dim": 64},
    # ~4.4M parameters: the size of DDM's FFHQ model.
    "small": {"base_channels": 56, "channel_mults": (1, 2, 2, 2), "blocks_per_level": 1, "attention_levels": (3,),
              "time_embedding_dim": 224},
    # ~48M parameters: a full-size prior.
    "base": {"base_channels": 96, "channel_mults": (1, 2, 3, 4), "blocks_per_level": 2, "attention_levels": (2, 3),
             "time_embedding_dim": 384},
}


def fourier_time_features(t: Tensor, count: int) -> Tensor:
    r"""Sinusoidal features of the flow time t,
    :math:`[\cos(\omega_k t), \sin(\omega_k t)]_{k < K}`, :math:`K = \text{count}/2`,
    :math:`\omega_k = 1000 \cdot 10000^{-k/K}`: geometric frequencies from 1000 rad per unit t (resolving steps of
    1e-3, DDPM's step size) down to :math:`0.1 \cdot 10000^{1/K}` rad (monotone over [0, 1]), the Transformer
    positional encoding of DDPM's step index 1000 t (Ho et al. 2020, App. B).

    Args:
        t: (B,) flow times in [0, 1].
        count: the number of features, even.

    Returns:
        (B, count), cosines first.

    Raises:
        ValueError: for a count that is not a positive even integer.
    """
    if not isinstance(count, int) or count < 2 or count % 2:
        raise ValueError(f"count must be a positive even integer, got {count!r}")
    half = count // 2
    frequencies = _TIME_SCALE * _MAX_PERIOD ** (-torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = t[:, None] * frequencies
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups of at least 4 channels (where the channel count allows): with one channel
    per group the statistics of a low-resolution level (2x2 or 1x1 for small latents) come from 4 or 1 values."""
    return nn.GroupNorm(math.gcd(_MAX_GROUPS, max(channels // _MIN_GROUP_CHANNELS, 1)), channels)


class _ResidualBlock(nn.Module):
    r""":math:`y = \text{skip}(x) + \text{conv}_2(\text{drop}(\text{SiLU}(\text{GN}(h)(1 + s) + b)))`,
    :math:`h = \text{conv}_1(\text{SiLU}(\text{GN}(x)))`, :math:`(s, b) = \text{Linear}(\text{SiLU}(e))`.

    Maps x: (B, C_in, H, W) and the time embedding e: (B, E) to (B, C_out, H, W); skip is a 1x1 conv when
    C_in != C_out, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.scale_shift = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.scale_shift(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class _SelfAttention(nn.Module):
    r""":math:`y = x + W_o\, \text{softmax}(q k^T / \sqrt{d})\, v`, :math:`(q, k, v) = W_{qkv} \text{GN}(x)` over the
    H·W positions, heads of 64 channels (fewer, wider heads when the channels do not split evenly).
    Maps (B, C, H, W) to (B, C, H, W).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.heads = next(h for h in range(max(channels // _CHANNELS_PER_HEAD, 1), 0, -1) if channels % h == 0)
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C/heads)
        return x + self.out(attended.transpose(-1, -2).reshape(B, C, H, W))


class _Stage(nn.Module):
    """A residual block, then self-attention if the level has it."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.block = _ResidualBlock(in_channels, out_channels, embedding_dim, dropout)
        self.attention = _SelfAttention(out_channels) if attention else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.attention(self.block(x, embedding))


class UNet(nn.Module):
    r"""The velocity :math:`v_\theta(x_t, t, c) \approx \mathbb E[x_1 - x_0 \mid x_t]` (see
    :mod:`blindfast.models.prior`) of a U-Net over :math:`L` = ``len(channel_mults)`` resolution levels; level l has
    ``base_channels * channel_mults[l]`` channels at :math:`1/2^l` of the input size.

    Args:
        image_channels: C of x_t and of the output.
        cond_channels: extra input channels concatenated to x_t (e.g. DDM's 2 location channels); 0 for none.
        cond_embedding: also feed the cond channels' spatial mean through an MLP added to the time embedding, so
            every block sees it (for constant maps such as DDM's patch location: given only as input channels, a
            small network learns to ignore them); needs ``cond_channels > 0``.
        base_channels: channels of level 0; even (it is also the number of time features).
        channel_mults: one positive multiplier per level.
        blocks_per_level: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: indices of the levels with self-attention after each block (the low resolutions).
        dropout: dropout probability inside the residual blocks, in [0, 1).
        time_embedding_dim: width of the time MLP and of the embedding every block is conditioned on.

    Raises:
        TypeError: for a channel count, block count or embedding width that is not an integer, ``channel_mults`` or
            ``attention_levels`` not a tuple of integers, or a dropout that is not a number.
        ValueError: for a channel count, block count or embedding width below 1 (a negative ``cond_channels``), an
            odd ``base_channels``, an empty or non-positive ``channel_mults``, a level index out of range, or a
            dropout outside [0, 1).
    """

    def __init__(self,
                 image_channels: int = 3,                  # channels of x_t and of the velocity
                 cond_channels: int = 0,                   # extra input channels (DDM's location map: 2)
                 *,
                 cond_embedding: bool = False,             # the cond channels' mean also joins the time embedding
                 base_channels: int,                       # channels of level 0, even
                 channel_mults: tuple[int, ...],           # channel multiplier of each resolution level
                 blocks_per_level: int,                    # encoder residual blocks per level
                 attention_levels: tuple[int, ...] = (),   # levels with self-attention
                 dropout: float = 0.0,                     # dropout probability in the residual blocks
                 time_embedding_dim: int):                 # width of the time embedding
        super().__init__()
        image_channels = _validate.positive_int("image_channels", image_channels)
        cond_channels = _validate.nonnegative_int("cond_channels", cond_channels)
        blocks_per_level = _validate.positive_int("blocks_per_level", blocks_per_level)
        time_embedding_dim = _validate.positive_int("time_embedding_dim", time_embedding_dim)
        if _validate.positive_int("base_channels", base_channels) % 2:
            raise ValueError(f"base_channels must be a positive even integer, got {base_channels!r}")
        channel_mults = _validate.int_sequence("channel_mults", channel_mults, 1)
        attention_levels = _validate.int_sequence("attention_levels", attention_levels, 0, empty=True)
        levels = len(channel_mults)
        if any(l >= levels for l in attention_levels):
            raise ValueError(f"attention_levels must be level indices in [0, {levels - 1}], got {attention_levels!r}")
        _validate.real("dropout", dropout, 0, 1, high_open=True)
        _validate.boolean("cond_embedding", cond_embedding)
        if cond_embedding and cond_channels == 0:
            raise ValueError("cond_embedding=True needs cond_channels > 0, got cond_channels = 0")
        self.image_channels, self.cond_channels, self.cond_embedding = image_channels, cond_channels, cond_embedding
        self.base_channels, self.channel_mults = base_channels, channel_mults
        self.blocks_per_level, self.attention_levels = blocks_per_level, attention_levels
        self.dropout, self.time_embedding_dim = dropout, time_embedding_dim

        self.time_mlp = nn.Sequential(nn.Linear(base_channels, time_embedding_dim), nn.SiLU(),
                                      nn.Linear(time_embedding_dim, time_embedding_dim))
        if cond_embedding:
            # last layer at zero: adding the embedding to a trained network leaves its output unchanged
            self.cond_mlp = nn.Sequential(nn.Linear(cond_channels, time_embedding_dim), nn.SiLU(),
                                          nn.Linear(time_embedding_dim, time_embedding_dim))
            nn.init.zeros_(self.cond_mlp[2].weight)
            nn.init.zeros_(self.cond_mlp[2].bias)
        self.input = nn.Conv2d(image_channels + cond_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]
        skips, channels = [base_channels], base_channels  # channels of every encoder output, in order
        self.encoder = nn.ModuleList()
        for level, width in enumerate(widths):
            stages = nn.ModuleList()
            for _ in range(blocks_per_level):
                stages.append(_Stage(channels, width, time_embedding_dim, dropout, level in attention_levels))
                channels = width
                skips.append(channels)
            self.encoder.append(stages)
            if level < levels - 1:
                skips.append(channels)  # the downsampled map is a skip too
        attention = levels - 1 in attention_levels
        self.bottleneck = nn.ModuleList([_Stage(channels, channels, time_embedding_dim, dropout, attention),
                                         _Stage(channels, channels, time_embedding_dim, dropout, False)])
        self.decoder = nn.ModuleList()
        for level in reversed(range(levels)):
            stages = nn.ModuleList()
            for _ in range(blocks_per_level + 1):
                stages.append(_Stage(channels + skips.pop(), widths[level], time_embedding_dim, dropout,
                                     level in attention_levels))
                channels = widths[level]
            self.decoder.append(stages)
        self.output_norm = _norm(channels)
        self.output = nn.Conv2d(channels, image_channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @classmethod
    def from_preset(cls, name: str, image_channels: int = 3, cond_channels: int = 0, dropout: float = 0.0,
                    cond_embedding: bool = False) -> UNet:
        """The architecture ``PRESETS[name]``: "tiny" (0.27M parameters, H and W multiples of 4), "small" (4.4M,
        multiples of 8), "base" (48M, multiples of 8).

        Raises:
            ValueError: for an unknown name.
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(image_channels, cond_channels, dropout=dropout, cond_embedding=cond_embedding, **PRESETS[name])

    def with_conditioning(self, cond_channels: int, cond_embedding: bool = True) -> UNet:
        """A copy of this network taking ``cond_channels`` more input channels, for fine-tuning a prior into a
        conditioned one (DDM's step 1): the new input weights and the cond embedding start at zero, so the copy's
        output is exactly this network's whatever the cond.

        Raises:
            ValueError: this network already takes cond channels, or ``cond_channels`` < 1.
        """
        if self.cond_channels:
            raise ValueError(f"this UNet already takes {self.cond_channels} cond channel(s)")
        cond_channels = _validate.positive_int("cond_channels", cond_channels)
        copy = UNet(**{**self.config(), "cond_channels": cond_channels, "cond_embedding": cond_embedding})
        copy = copy.to(device=self.input.weight.device, dtype=self.input.weight.dtype)
        state = self.state_dict()
        weight = state["input.weight"]
        state["input.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], cond_channels,
                                                                    *weight.shape[2:])], dim=1)
        missing, unexpected = copy.load_state_dict(state, strict=False)
        assert not unexpected and all(name.startswith("cond_mlp.") for name in missing), (missing, unexpected)
        return copy

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable: ``UNet(**net.config())`` rebuilds the architecture."""
        return {"image_channels": self.image_channels, "cond_channels": self.cond_channels,
                "cond_embedding": self.cond_embedding,
                "base_channels": self.base_channels, "channel_mults": list(self.channel_mults),
                "blocks_per_level": self.blocks_per_level, "attention_levels": list(self.attention_levels),
                "dropout": self.dropout, "time_embedding_dim": self.time_embedding_dim}

    @property
    def size_multiple(self) -> int:
        """What H and W must be multiples of: each level but the last halves the image (2^(levels - 1))."""
        return 2 ** (len(self.channel_mults) - 1)

    def _check(self, x_t: Tensor, t: Tensor, cond: Tensor | None) -> None:
        _validate.floating_tensor("x_t", x_t, f"(B, {self.image_channels}, H, W)")
        if x_t.dim() != 4 or x_t.shape[1] != self.image_channels:
            raise ValueError(f"x_t must have shape (B, {self.image_channels}, H, W), got {tuple(x_t.shape)}")
        B, _, H, W = x_t.shape
        multiple = self.size_multiple
        if H % multiple or W % multiple:
            raise ValueError(f"H and W must be multiples of {multiple} (2^(levels - 1)), got H = {H}, W = {W}")
        if not isinstance(t, Tensor):
            raise TypeError(f"t must be a ({B},) tensor, got {type(t).__name__}")
        if t.shape != (B,):
            raise ValueError(f"t must be a ({B},) tensor, got {tuple(t.shape)}")
        if cond is not None and not isinstance(cond, Tensor):
            raise TypeError(f"cond must be a ({B}, {self.cond_channels}, {H}, {W}) tensor or None, got "
                            f"{type(cond).__name__}")
        if self.cond_channels == 0 and cond is not None:
            raise ValueError(f"this UNet takes no cond (cond_channels = 0), got cond of shape {tuple(cond.shape)}")
        if self.cond_channels > 0:
            expected = (B, self.cond_channels, H, W)
            if cond is None or cond.shape != expected:
                raise ValueError(f"cond must have shape {expected}, got "
                                 f"{'None' if cond is None else tuple(cond.shape)}")

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The velocity at ``x_t``.

        Args:
            x_t: (B, C, H, W), H and W multiples of 2^(levels - 1).
            t: (B,) flow times in [0, 1] (range checked by :class:`blindfast.models.NetworkPrior`).
            cond: (B, C_cond, H, W), required exactly when ``cond_channels > 0``.

        Returns:
            (B, C, H, W) the velocity.

        Raises:
            TypeError: x_t not a floating-point tensor, t or cond not a tensor.
            ValueError: for a wrong x_t channel count or rank, H or W not a multiple of 2^(levels - 1), t not of
                shape (B,), or cond missing, unexpected or of the wrong shape.
        """
        self._check(x_t, t, cond)
        embedding = self.time_mlp(fourier_time_features(t.to(x_t.dtype), self.base_channels))
        if self.cond_embedding:
            embedding = embedding + self.cond_mlp(cond.to(x_t.dtype).mean(dim=(-2, -1)))
        h = self.input(x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1))
        skips = [h]
        for level, stages in enumerate(self.encoder):
            for stage in stages:
                h = stage(h, embedding)
                skips.append(h)
            if level < len(self.encoder) - 1:
                h = F.avg_pool2d(h, 2)
                skips.append(h)
        for stage in self.bottleneck:
            h = stage(h, embedding)
        for index, stages in enumerate(self.decoder):
            for stage in stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), embedding)
            if index < len(self.decoder) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.output(F.silu(self.output_norm(h)))
