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

Two encoders (an :class:`~blindfast.methods.cl_dps.encoder.EncoderPair` as the encoder; ours, not the paper's):
F_x for the image side (x_t) and F_y for the measurement side, both trained, each with its own momentum copy
(:math:`\bar F_x`, :math:`\bar F_y`: ``key.x_side``, ``key.y_side``) and its own queue of past keys (``queue``:
measurement-side keys, the negatives of x_t queries; ``x_queue``: image-side keys, the negatives of y queries).
Even rows of a batch are x_t queries :math:`F_x(x_t)` with the positive key :math:`\bar F_y(y)`; odd rows are y
queries :math:`F_y(y)` with :math:`\bar F_x(x_t)` (both encoders get gradients every step; the rows are i.i.d.
pairs, so the split is a fair coin that keeps both halves the same size on every rank). The negatives of each half
are its queue plus the momentum keys of the batch's hard negatives (:func:`~blindfast.methods.cl_dps.pairs.
draw_pairs`): for an x_t query of content :math:`x_0` blurred by :math:`\psi`, :math:`\bar F_y(x_0 + n)` and
:math:`\bar F_y(A_{\psi'}(x_0) + n)`; for a y query, :math:`\bar F_x` of :math:`t A_\psi(x_0) + (1 - t)
\varepsilon` and of :math:`t A_{\psi'}(x_0) + (1 - t)\varepsilon` (every query of a half sees the whole half's
hard negatives: its own are the hard ones, the others' are more negatives of other content). So F_y must encode
which blur was applied, and F_x(blurred image) must not match F_y(its measurement).

Why that moves the sampler's optimum off y: the score :math:`-\langle F_y(P y), F_x(P x) \rangle` at x = y is
:math:`-\langle F_y(y), F_x(y) \rangle`, F_x's feature of a blurred image against F_y's of that same image as a
measurement. Taken as content, y's own measurement would be :math:`A_\psi(y)`, blurred twice; y itself is that
content under the identity, a hard negative of the y-side, and y as an x-side image is the x_negatives' first
entry of y's pair. Training pushes exactly these similarities below the positive's, so x = y no longer reaches the
best score, while the sharp x_0 (its positive) is trained to. With one encoder no negative can do that:
:math:`\langle F(y), F(y) \rangle = 1` is the largest similarity there is. Measured (README, "Two encoders and
hard negatives"): after 10 kimg the pair still scored y above the sharp crop and restored worse than one encoder.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair
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
        encoder: the query encoder (trained); the key encoder starts as its copy. An :class:`EncoderPair`: the two
            encoders of the module docstring (train with :meth:`forward_pair`).
        queue_size: K, the number of negatives (per queue).
        momentum: m in [0, 1].
        generator: draws the initial queue (random unit vectors, as MoCo's), then ``x_queue``.
        patch: the training patch side (the length of a dense embedding depends on it).
    Buffers (saved in ``state_dict``): ``queue`` (K, D) and ``pointer`` (), the next row to overwrite; with an
    :class:`EncoderPair` also ``x_queue`` (K, D) and ``x_pointer`` ().
    """

    def __init__(self, encoder: ContrastiveEncoder | EncoderPair, queue_size: int = 4096, momentum: float = 0.999,
                 *, generator: torch.Generator | None = None, patch: int = 64):
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.query = encoder
        self.key = copy.deepcopy(encoder).requires_grad_(False)
        self.momentum = momentum
        dim = encoder.embedding_dim(patch)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.two_encoders = isinstance(encoder, EncoderPair)
        if self.two_encoders:
            self.register_buffer("x_queue", F.normalize(torch.randn(queue_size, dim, generator=generator), dim=1))
            self.register_buffer("x_pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (He et al. 2020, Eq. 2), in place."""
        for key, query in zip(self.key.parameters(), self.query.parameters()):
            key.mul_(self.momentum).add_(query.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, *, x_side: bool = False) -> None:
        """Writes (N, D) keys, N <= K, over the oldest ones from ``pointer`` on (wrapping around) and advances it;
        ``x_side``: into ``x_queue`` (from ``x_pointer``) instead."""
        queue, pointer = (self.x_queue, self.x_pointer) if x_side else (self.queue, self.pointer)
        size = queue.shape[0]
        if keys.shape[0] > size:
            raise ValueError(f"expected at most {size} keys per enqueue (the queue size), got {keys.shape[0]}")
        rows = (pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        queue[rows] = keys.to(queue.dtype)
        pointer.fill_((int(pointer) + keys.shape[0]) % size)

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

    def forward_pair(self, x_t: Tensor, y: Tensor, clean: Tensor, x_negatives: Tensor | None,
                     y_negatives: Tensor | None, temperature: float,
                     colour_weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One batch of the two-encoder training (module docstring): even rows x_t queries, odd rows y queries.

        Args:
            x_t, y, clean: (N, C, n, n) N >= 2 pairs (:class:`~blindfast.methods.cl_dps.pairs.Pairs`).
            x_negatives, y_negatives: (N, H, C, n, n) their hard negatives, or None (none).
            temperature, colour_weight: tau and lambda.
        Returns:
            (total loss, InfoNCE (mean over the N queries), colour MSE, (N / 2, D) measurement-side keys to enqueue
            into ``queue``, (N // 2, D) image-side keys for ``x_queue``).
        """
        if not self.two_encoders:
            raise ValueError("forward_pair trains two encoders: build MoCo on an EncoderPair, got a "
                             "ContrastiveEncoder")
        if x_t.shape[0] < 2:
            raise ValueError(f"expected at least 2 pairs (an x_t query and a y query), got {x_t.shape[0]}")
        x_rows, y_rows = slice(0, None, 2), slice(1, None, 2)
        q_x, colour_x = self.query.x_side.heads(x_t[x_rows])
        q_y, colour_y = self.query.y_side.heads(y[y_rows])
        with torch.no_grad():
            k_y, _ = self.key.y_side.heads(y[x_rows])
            k_x, _ = self.key.x_side.heads(x_t[y_rows])
            negatives_y, negatives_x = self.queue, self.x_queue
            if y_negatives is not None:
                # gathered over the ranks, so every query sees the whole global batch's, as in one process
                hard_y = concat_all_gather(self.key.y_side.heads(y_negatives[x_rows].flatten(0, 1))[0])
                hard_x = concat_all_gather(self.key.x_side.heads(x_negatives[y_rows].flatten(0, 1))[0])
                negatives_y, negatives_x = torch.cat([negatives_y, hard_y]), torch.cat([negatives_x, hard_x])
        target = colour_target(clean, self.query.downsampling)
        total_x, nce_x, mse_x = moco_loss(q_x, k_y, negatives_y, colour_x, target[x_rows], temperature, colour_weight)
        total_y, nce_y, mse_y = moco_loss(q_y, k_x, negatives_x, colour_y, target[y_rows], temperature, colour_weight)
        share_x = q_x.shape[0] / x_t.shape[0]   # the means over the halves, weighted to the mean over all rows
        mean = lambda a, b: share_x * a + (1 - share_x) * b  # noqa: E731
        return mean(total_x, total_y), mean(nce_x, nce_y), mean(mse_x, mse_y), k_y, k_x
