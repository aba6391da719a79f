r"""CL-DPS's contrastive patch encoder (Ye & Ferrao, "CL-DPS: A Contrastive Learning Approach to Blind Inverse
Problem Solving via Diffusion Posterior Sampling").

A ResNet trunk (He et al. 2016, "Deep Residual Learning for Image Recognition": basic blocks of two 3x3 convolutions
with an identity or 1x1 shortcut) maps a patch in [-1, 1] to its last-stage map :math:`m \in \mathbb R^{c \times h
\times w}`. Training adds two heads on it (dropped at inference):

- the projection: global average pooling and a linear layer to ``projection_dim``, L2-normalised: MoCo's query / key
  (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"); with ``dense_dim`` D > 0
  instead a 1x1 convolution to D channels at every last-stage location, flattened and L2-normalised (no pooling),
  which is then also the inference feature (below);
- the colour head: two 1x1 convolutions regressing the patch's colour at each last-stage location (CL-DPS's
  colour-consistency term; without it the restored colours drift).

At inference the feature is the flattened last-stage map, L2-normalised, without pooling (the paper's ablation:
patch-wise inference without pooling restores best). GroupNorm, not BatchNorm: a feature never depends on the other
patches of its batch, so MoCo needs no shuffled BatchNorm and inference no running statistics.

With ``dense_dim`` D > 0 the inference feature is the MoCo embedding itself, the flattened D-channel map: what
training matched is what the sampler compares. :class:`EncoderPair` needs that: two encoders' last-stage maps live in
unrelated coordinates (nothing in training aligns F_x's channels with F_y's; measured: a pair trained on pooled
embeddings, 10 kimg, scored the sharp crop, y and A(y) alike, -0.26 to -0.29, by its flattened maps on the README's
train crops), so the pair compares its shared embedding space, location by location.

:class:`EncoderPair` is the two-encoder (asymmetric) option: a query encoder :math:`F_x` for the image side (x_t in
training, the denoised estimate in sampling) and a separate :math:`F_y` for the measurement side, both
:class:`ContrastiveEncoder` instances with dense embeddings. The sampler scores :math:`\langle F_y(P y), F_x(P x)
\rangle`; both classes expose ``features`` (the image side) and ``measurement_features`` (the measurement side; the
same encoder for :class:`ContrastiveEncoder`). Why two: with one encoder the score is lowest at any x whose features
equal y's, y itself included; with two, x = y scores :math:`\langle F_y(y), F_x(y) \rangle`, which training with
hard negatives (:mod:`~blindfast.methods.cl_dps.moco`) pushes down.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ContrastiveEncoder", "EncoderPair", "encoder_from_config", "SMALL", "WIDE", "DENSE_DIM"]

# the CPU default: 64x64 patches -> an 8x8x128 last-stage map, an 8192-d feature
SMALL = {"widths": (32, 64, 128), "blocks": (1, 1, 1)}
# for GPUs: wide-ResNet-50-like stage widths and depths (basic blocks, not bottlenecks)
WIDE = {"widths": (256, 512, 1024, 2048), "blocks": (3, 4, 6, 3)}
GROUPS = 8
# EncoderPair's dense embedding channels: 16 x 8 x 8 = 1,024 values per 64x64 patch (queues of 4,096 keys: 16 MB)
DENSE_DIM = 16


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, out_channels)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                       nn.GroupNorm(GROUPS, out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class ContrastiveEncoder(nn.Module):
    """Patch encoder: trunk, projection head and colour head (module docstring).

    Args:
        channels: image channels (3 for RGB).
        widths: channels of each stage; every stage halves the resolution (the stem keeps it).
        blocks: basic blocks per stage.
        projection_dim: MoCo's embedding dimension (pooled projection).
        dense_dim: D > 0: the dense projection to D channels per location instead (module docstring); 0: none.
    ``config`` holds these arguments (``dense_dim`` only when > 0), so ``ContrastiveEncoder(**encoder.config)``
    rebuilds the architecture.
    """

    def __init__(self, channels: int = 3, widths: tuple[int, ...] = SMALL["widths"],
                 blocks: tuple[int, ...] = SMALL["blocks"], projection_dim: int = 128, dense_dim: int = 0):
        super().__init__()
        if len(widths) != len(blocks) or not widths or min(blocks) < 1 or any(w % GROUPS for w in widths):
            raise ValueError(f"expected one block count >= 1 per stage and widths divisible by {GROUPS}, got widths "
                             f"{tuple(widths)}, blocks {tuple(blocks)}")
        if isinstance(dense_dim, bool) or not isinstance(dense_dim, int) or dense_dim < 0:
            raise ValueError(f"expected dense_dim an int >= 0, got {dense_dim!r}")
        self.config = {"channels": channels, "widths": tuple(widths), "blocks": tuple(blocks),
                       "projection_dim": projection_dim, **({"dense_dim": dense_dim} if dense_dim else {})}
        self.channels = channels
        self.downsampling = 2 ** len(widths)
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.GroupNorm(GROUPS, widths[0]),
                                  nn.ReLU())
        stages, previous = [], widths[0]
        for width, count in zip(widths, blocks):
            stages += [_BasicBlock(previous, width, 2)] + [_BasicBlock(width, width, 1) for _ in range(count - 1)]
            previous = width
        self.trunk_blocks = nn.Sequential(*stages)
        self.dense_dim = dense_dim
        self.projection = nn.Conv2d(previous, dense_dim, 1) if dense_dim else nn.Linear(previous, projection_dim)
        self.colour = nn.Sequential(nn.Conv2d(previous, previous, 1), nn.ReLU(), nn.Conv2d(previous, channels, 1))

    def _check(self, patches: Tensor) -> None:
        if patches.dim() != 4 or patches.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, n, n) patches for this {self.channels}-channel encoder, "
                             f"got {tuple(patches.shape)}")
        if patches.shape[-2] % self.downsampling or patches.shape[-1] % self.downsampling:
            raise ValueError(f"expected patch sides divisible by {self.downsampling} (the encoder's downsampling), "
                             f"got {tuple(patches.shape[-2:])}")

    def trunk(self, patches: Tensor) -> Tensor:
        """(N, C, n, n) patches in [-1, 1] -> (N, c, n / d, n / d) the last-stage map (d = ``downsampling``)."""
        self._check(patches)
        return self.trunk_blocks(self.stem(patches))

    def embedding_dim(self, patch: int) -> int:
        """The MoCo embedding's length for ``patch`` x ``patch`` patches."""
        return self.dense_dim * (patch // self.downsampling) ** 2 if self.dense_dim else self.config["projection_dim"]

    def _embedding(self, last: Tensor) -> Tensor:
        """(N, c, h, w) last-stage map -> (N, E) the L2-normalised MoCo embedding (module docstring)."""
        if self.dense_dim:
            return F.normalize(self.projection(last).flatten(1), dim=1)
        return F.normalize(self.projection(last.mean(dim=(-2, -1))), dim=1)

    def features(self, patches: Tensor) -> Tensor:
        """(N, C, n, n) patches in [-1, 1] -> (N, E) the inference feature: the flattened last-stage map (E = c h w),
        L2-normalised; with ``dense_dim`` the MoCo embedding (E = D h w)."""
        last = self.trunk(patches)
        return self._embedding(last) if self.dense_dim else F.normalize(last.flatten(1), dim=1)

    def measurement_features(self, patches: Tensor) -> Tensor:
        """(N, C, n, n) measurement patches -> (N, c h w): :meth:`features` (one encoder maps both sides)."""
        return self.features(patches)

    def heads(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, n, n) patches in [-1, 1] -> ((N, E) L2-normalised MoCo embedding (:meth:`embedding_dim`),
        (N, C, n / d, n / d) the colour head's prediction)."""
        last = self.trunk(patches)
        return self._embedding(last), self.colour(last)


class EncoderPair(nn.Module):
    """Two :class:`ContrastiveEncoder` instances of one architecture (module docstring): ``x_side`` (F_x) encodes
    the image being restored, ``y_side`` (F_y) the measurement.

    Args: as :class:`ContrastiveEncoder`'s, for each side; ``dense_dim`` must be > 0 (module docstring). ``config``
    holds them plus ``two_encoders: True``, so :func:`encoder_from_config` rebuilds the pair.
    """

    def __init__(self, channels: int = 3, widths: tuple[int, ...] = SMALL["widths"],
                 blocks: tuple[int, ...] = SMALL["blocks"], projection_dim: int = 128, dense_dim: int = DENSE_DIM):
        super().__init__()
        if isinstance(dense_dim, bool) or not isinstance(dense_dim, int) or dense_dim < 1:
            raise ValueError(f"two encoders compare dense embeddings: expected dense_dim an int >= 1, got "
                             f"{dense_dim!r}")
        self.x_side = ContrastiveEncoder(channels, widths, blocks, projection_dim, dense_dim)
        self.y_side = ContrastiveEncoder(channels, widths, blocks, projection_dim, dense_dim)
        self.config = {**self.x_side.config, "two_encoders": True}
        self.channels = channels
        self.downsampling = self.x_side.downsampling
        self.embedding_dim = self.x_side.embedding_dim

    def features(self, patches: Tensor) -> Tensor:
        """(N, C, n, n) image patches in [-1, 1] -> (N, c h w) F_x's inference feature."""
        return self.x_side.features(patches)

    def measurement_features(self, patches: Tensor) -> Tensor:
        """(N, C, n, n) measurement patches in [-1, 1] -> (N, c h w) F_y's inference feature."""
        return self.y_side.features(patches)


def encoder_from_config(config: dict) -> ContrastiveEncoder | EncoderPair:
    """The architecture of an encoder's ``config`` (an :class:`EncoderPair` when ``two_encoders`` is set), freshly
    initialised from torch's global generator."""
    arguments = {key: tuple(v) if isinstance(v, list) else v for key, v in config.items() if key != "two_encoders"}
    return (EncoderPair if config.get("two_encoders") else ContrastiveEncoder)(**arguments)
