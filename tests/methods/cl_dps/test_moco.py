"""MoCo's pieces against references: the queue's FIFO order with wrap-around, the momentum update against He et al.
2020's Eq. 2, and the InfoNCE + colour loss's gradient against a float64 log-softmax reference."""

import pytest
import torch
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.moco import MoCo, colour_target, moco_loss

TINY = {"widths": (8, 16), "blocks": (1, 1), "projection_dim": 4}


def test_queue_is_a_fifo_ring_buffer():
    moco = MoCo(ContrastiveEncoder(**TINY), queue_size=5, generator=torch.Generator().manual_seed(0))
    initial = moco.queue.clone()
    first, second = torch.arange(12.0).reshape(3, 4), 100 + torch.arange(12.0).reshape(3, 4)
    moco.enqueue(first)
    assert int(moco.pointer) == 3
    torch.testing.assert_close(moco.queue, torch.cat([first, initial[3:]]), rtol=0, atol=0)
    moco.enqueue(second)  # rows 3, 4, then wraps to row 0: the oldest key (first[0]) goes first
    assert int(moco.pointer) == 1
    torch.testing.assert_close(moco.queue, torch.stack([second[2], first[1], first[2], second[0], second[1]]),
                               rtol=0, atol=0)
    moco.enqueue(torch.ones(5, 4))
    assert int(moco.pointer) == 1 and bool((moco.queue == 1).all())
    with pytest.raises(ValueError, match="at most 5 keys per enqueue .* got 6"):
        moco.enqueue(torch.ones(6, 4))


def test_momentum_update_follows_eq_2():
    torch.manual_seed(0)
    moco = MoCo(ContrastiveEncoder(**TINY), queue_size=8, momentum=0.9)
    with torch.no_grad():
        for p in moco.query.parameters():
            p.add_(torch.randn_like(p))
    before = [(k.double().clone(), q.double().clone()) for k, q in zip(moco.key.parameters(),
                                                                        moco.query.parameters())]
    moco.momentum_update()
    for key, (k, q) in zip(moco.key.parameters(), before):
        torch.testing.assert_close(key.double(), 0.9 * k + 0.1 * q, rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in moco.key.parameters())


def test_loss_gradient_matches_a_float64_log_softmax_reference():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(6, 16, generator=g), dim=1).requires_grad_()
    k = F.normalize(torch.randn(6, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    colour = torch.randn(6, 3, 2, 2, generator=g, requires_grad=True)
    target = torch.randn(6, 3, 2, 2, generator=g)
    total, contrastive, colour_mse = moco_loss(q, k, queue, colour, target, 0.07, 0.5)
    total.backward()

    q64 = q.detach().double().requires_grad_()
    c64 = colour.detach().double().requires_grad_()
    logits = torch.cat([(q64 * k.double()).sum(1, keepdim=True), q64 @ queue.double().T], 1) / 0.07
    reference_nce = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    reference_mse = (c64 - target.double()).square().mean()
    (reference_nce + 0.5 * reference_mse).backward()
    torch.testing.assert_close(contrastive.double(), reference_nce.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(colour_mse.double(), reference_mse.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(q.grad.double(), q64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(colour.grad.double(), c64.grad, rtol=1e-5, atol=1e-7)


def test_forward_trains_the_query_only_and_targets_the_pooled_clean_colour():
    torch.manual_seed(0)
    moco = MoCo(ContrastiveEncoder(**TINY), queue_size=8)
    patches = torch.rand(3, 3, 16, 16) * 2 - 1
    total, _, colour_mse, keys = moco(patches, patches, patches, 0.07, 1.0)
    total.backward()
    assert keys.shape == (3, 4) and not keys.requires_grad
    assert all(p.grad is None for p in moco.key.parameters())
    assert all(p.grad is not None for p in moco.query.trunk_blocks.parameters())
    target = patches.reshape(3, 3, 4, 4, 4, 4).mean(dim=(3, 5))  # 4 x 4 cell means
    torch.testing.assert_close(colour_target(patches, 4), target)
    _, colour = moco.query.heads(patches)
    torch.testing.assert_close(colour_mse, (colour - target).square().mean())
