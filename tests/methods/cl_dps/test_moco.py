"""MoCo's pieces against references: the queue's FIFO order with wrap-around, the momentum update against He et al.
2020's Eq. 2, and the InfoNCE + colour loss's gradient against a float64 log-softmax reference."""

import pytest
import torch
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair
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


def test_two_encoder_loss_matches_a_float64_formula_with_hard_negatives():
    """forward_pair: even rows x_t queries F_x(x_t) against F_y-bar(y), the y-side queue and the x rows' y-side hard
    negatives; odd rows y queries F_y(y) against F_x-bar(x_t), the x-side queue and the y rows' x-side hard
    negatives; the loss and the trained encoders' gradients against the InfoNCE written out in float64."""
    torch.manual_seed(3)
    moco = MoCo(EncoderPair(**TINY), queue_size=10, momentum=0.9, generator=torch.Generator().manual_seed(0),
                patch=16).double()
    assert moco.queue.shape == moco.x_queue.shape == (10, 16 * 4 * 4)   # DENSE_DIM channels at 4 x 4 locations
    with torch.no_grad():   # keys differ from queries, as after training steps
        for p in moco.key.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(5)
    x_t, y, clean = (torch.rand(5, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(3))
    x_neg, y_neg = (torch.rand(5, 2, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(2))
    total, contrastive, colour_mse, y_keys, x_keys = moco.forward_pair(x_t, y, clean, x_neg, y_neg, 0.1, 0.5)
    total.backward()
    grads = [p.grad.clone() for p in moco.query.parameters()]
    moco.zero_grad()

    def embed(encoder, patches):   # the dense embedding: a 1x1 convolution at every location, flattened
        last = encoder.trunk(patches)
        dense = torch.einsum("dc,nchw->ndhw", encoder.projection.weight[:, :, 0, 0], last)
        dense = dense + encoder.projection.bias[:, None, None]
        return F.normalize(dense.flatten(1), dim=1), encoder.colour(last)

    rows = []
    q_x, c_x = embed(moco.query.x_side, x_t[0::2])
    q_y, c_y = embed(moco.query.y_side, y[1::2])
    with torch.no_grad():
        k_y, k_x = embed(moco.key.y_side, y[0::2])[0], embed(moco.key.x_side, x_t[1::2])[0]
        hard_y = embed(moco.key.y_side, y_neg[0::2].reshape(-1, 3, 16, 16))[0]   # 3 x rows x 2 negatives
        hard_x = embed(moco.key.x_side, x_neg[1::2].reshape(-1, 3, 16, 16))[0]
    for q, k, negatives in ((q_x, k_y, torch.cat([moco.queue, hard_y])),
                            (q_y, k_x, torch.cat([moco.x_queue, hard_x]))):
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], 1) / 0.1
        rows.append(-torch.log_softmax(logits, dim=1)[:, 0])
    reference_nce = torch.cat(rows).mean()   # the mean over all 5 queries
    reference_mse = (torch.cat([c_x, c_y]) - F.avg_pool2d(torch.cat([clean[0::2], clean[1::2]]), 4)).square().mean()
    (reference_nce + 0.5 * reference_mse).backward()
    torch.testing.assert_close(contrastive, reference_nce.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(colour_mse, reference_mse.detach(), rtol=1e-10, atol=1e-12)
    for grad, p in zip(grads, moco.query.parameters()):
        torch.testing.assert_close(grad, p.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(y_keys, k_y, rtol=1e-12, atol=1e-15)   # a convolution against its einsum
    torch.testing.assert_close(x_keys, k_x, rtol=1e-12, atol=1e-15)
    assert all(p.grad is None for p in moco.key.parameters())
    # each side's keys go to its own queue
    moco.enqueue(y_keys)
    moco.enqueue(x_keys, x_side=True)
    assert int(moco.pointer) == 3 and int(moco.x_pointer) == 2
    torch.testing.assert_close(moco.queue[:3], y_keys)
    torch.testing.assert_close(moco.x_queue[:2], x_keys)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        moco.forward_pair(x_t[:1], y[:1], clean[:1], None, None, 0.1, 0.5)
    with pytest.raises(ValueError, match="build MoCo on an EncoderPair"):
        MoCo(ContrastiveEncoder(**TINY), queue_size=4, patch=16).forward_pair(x_t, y, clean, None, None, 0.1, 0.5)


def test_two_encoder_momentum_update_moves_each_key_side_towards_its_own_encoder():
    torch.manual_seed(0)
    moco = MoCo(EncoderPair(**TINY), queue_size=8, momentum=0.9, patch=16)
    before = {name: p.detach().clone() for name, p in moco.key.named_parameters()}
    with torch.no_grad():
        for p in moco.query.parameters():
            p.add_(torch.randn_like(p))
    queries = dict(moco.query.named_parameters())
    moco.momentum_update()
    assert any(name.startswith("y_side.") for name in before) and any(name.startswith("x_side.") for name in before)
    for name, key in moco.key.named_parameters():
        torch.testing.assert_close(key, 0.9 * before[name] + 0.1 * queries[name].detach(), rtol=1e-6, atol=1e-7)
