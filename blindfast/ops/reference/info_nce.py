"""Pure-torch reference of info_nce: MoCo's usual code (He et al. 2020, Algorithm 1), exact in float64.

Tests and benchmarks import it; nothing else should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce_reference"]


def info_nce_reference(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the positive at index 0: ``cross_entropy(cat([q.k_pos, q @ queue^T], 1) / tau, 0)``.

    Args:
        q: (N, D) queries.
        k_pos: (N, D) positive keys.
        queue: (K, D) negative keys.
        temperature: tau > 0.
    Returns:
        0-dim tensor, the mean over the N rows.
    """
    l_pos = torch.einsum("nc,nc->n", q, k_pos)[:, None]  # (N, 1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (N, 1 + K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return F.cross_entropy(logits, labels)
