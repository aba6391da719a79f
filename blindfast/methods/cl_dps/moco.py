r"""MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning", Alg. 1) around
CL-DPS's :class:`~blindfast.methods.cl_dps.encoder.ContrastiveEncoder`, with CL-DPS's colour-consistency term.

- the query encoder :math:`f_q` is trained; the key encoder :math:`f_k` is its momentum copy, updated after each
  optimiser step as :math:`\theta_k \leftarrow m \theta_k + (1 - m) \theta_q` (He et al. 2020, Eq. 2), never by
  gradients;
- a queue of K past keys (a ring buffer: the newest batch's keys overwrite the oldest, from ``pointer`` on, wrapping
  around) serves as the negatives; under torchrun the keys of every rank are gathered first (MoCo's
  ``concat_all_gather``), so every rank holds the same queue;
- the loss, per batch (:func:`moco_loss`):

  .. math:: \mathcal L = \text{InfoNCE}(q, k, \text{queue}, \tau) + \lambda\,
            \tfrac{1}{N C h w}\lVert \hat c(x_q) - \text{avgpool}_d(x_0) \rVert^2

  with the InfoNCE of He et al. 2020, Eq. 1 (:func:`blindfast.ops.info_nce`) and the colour head's prediction
  :math:`\hat c` against the clean patch's colour at each last-stage location, its average over each d x d cell
  (d = the encoder's downsampling). Default :math:`\lambda = 1`: measured on 128 train pairs, the colour MSE
  ([-1, 1] pixels) is 0.52 for an untrained head and 0.015 after cl_tiny's run, the InfoNCE about log(1 + K) = 8.3
  at chance and 4.6 after it; so the colour term is learnt early and then shapes the trunk without drowning the
  contrastive one. CL-DPS only asks that colour be kept (without it the restored colours drift).
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.ops import info_nce

__all__ = ["MoCo", "moco_loss", "colour_target", "concat_all_gather"]


def colour_target(clean: Tensor, downsampling: int) -> Tensor:
    """(N, C, n, n) clean patches -> (N, C, n / d, n / d) their mean colour over each d x d cell."""
    return F.avg_pool2d(clean, downsampling)


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, colour: Tensor, target: Tensor, temperature: float,
              colour_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """The loss of the module docstring.

    Args:
        q: (N, D) L2-normalised queries.
        k: (N, D) L2-normalised positive keys (no gradient needed).
        queue: (K, D) negatives, a constant.
        colour: (N, C, h, w) the colour head's prediction on the queries' patches.
        target: (N, C, h, w) :func:`colour_target` of the clean patches.
        temperature: tau.
        colour_weight: lambda.
    Returns:
        (total, InfoNCE, colour MSE), 0-dim tensors.
    """
    contrastive = info_nce(q, k.detach(), queue.detach(), temperature)
    colour_mse = F.mse_loss(colour, target)
    return contrastive + colour_weight * colour_mse, contrastive, colour_mse


def concat_all_gather(keys: Tensor) -> Tensor:
    """(N, D) keys of this rank -> (W N, D) the keys of all W ranks in rank order (this rank's alone outside a
    process group). No gradient flows through it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class MoCo(nn.Module):
    """Query encoder, momentum key encoder and the queue (module docstring).

    Args:
        encoder: the query encoder (trained); the key encoder starts as its copy.
        queue_size: K, the number of negatives.
        momentum: m in [0, 1].
        generator: draws the initial queue (random unit vectors, as MoCo's).
    Buffers (saved in ``state_dict``): ``queue`` (K, D) and ``pointer`` (), the next row to overwrite.
    """

    def __init__(self, encoder: ContrastiveEncoder, queue_size: int = 4096, momentum: float = 0.999, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.query = encoder
        self.key = copy.deepcopy(encoder).requires_grad_(False)
        self.momentum = momentum
        dim = encoder.config["projection_dim"]
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (He et al. 2020, Eq. 2), in place."""
        for key, query in zip(self.key.parameters(), self.query.parameters()):
            key.mul_(self.momentum).add_(query.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Writes (N, D) keys, N <= K, over the oldest ones from ``pointer`` on (wrapping around) and advances it."""
        size = self.queue.shape[0]
        if keys.shape[0] > size:
            raise ValueError(f"expected at most {size} keys per enqueue (the queue size), got {keys.shape[0]}")
        rows = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.pointer.fill_((int(self.pointer) + keys.shape[0]) % size)

    def forward(self, query_patches: Tensor, key_patches: Tensor, clean: Tensor, temperature: float,
                colour_weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One batch: queries through f_q, keys through f_k (no gradient), the loss.

        Args:
            query_patches, key_patches: (N, C, n, n) the two sides of N positive pairs.
            clean: (N, C, n, n) the clean patches (the colour target).
            temperature, colour_weight: tau and lambda.
        Returns:
            (total loss, InfoNCE, colour MSE, (N, D) keys to enqueue).
        """
        q, colour = self.query.heads(query_patches)
        with torch.no_grad():
            k, _ = self.key.heads(key_patches)
        target = colour_target(clean, self.query.downsampling)
        total, contrastive, colour_mse = moco_loss(q, k, self.queue, colour, target, temperature, colour_weight)
        return total, contrastive, colour_mse, k
