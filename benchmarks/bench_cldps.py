"""One CL-DPS guided step (the paper's limitation: back-propagating through the encoder every step), ours against the
naive step written like the official code, at 64 x 64 and 128 x 128 (64-px patches, stride 16: 1 and 25 patches).

naive: every step re-encodes y's patches (F_y detached), cuts the patches with F.unfold, runs all of them through the
encoder in one batch with the encoder's weights requiring grad (contiguous layout), and differentiates the mean
similarity through the whole graph at once. ours (:func:`blindfast.methods.cl_dps.cl_dps`'s guidance): y's features
cached, :func:`blindfast.ops.patchify`, batches of :data:`DEFAULT_BATCH` patches in channels-last layout, weights
frozen, each batch's patch gradient taken at once and the image gradient by patchify's adjoint. Both then chain the
gradient through the prior to x_t. extra_info holds the step's split, each part timed alone (medians of ROUNDS):
prior forward (with its graph), encoder forward + backward (to the image x1_hat), prior backward (to x_t), and the
peak memory of one more step above the level before it. ``low_pass``: the low-frequency term that
:func:`~blindfast.methods.cl_dps.cl_dps` adds to each step by default (its value and gradient at x1_hat alone), in
the same group, to read beside the step it is added to.

Run: python -m pytest benchmarks/bench_cldps.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import statistics
import time

import pytest
import torch
from conftest import ROUNDS, THREADS, peak_extra_bytes, time_rounds
from torch.nn import functional as F

from blindfast.methods.cl_dps import ContrastiveEncoder, LowPassResidual, PatchScore
from blindfast.methods.cl_dps.patch_score import DEFAULT_BATCH
from blindfast.models import load_shipped_prior

PATCH, STRIDE, T = 64, 16, 0.5


def naive_encoder_grad(encoder, y, x1_hat):
    """The official code's guidance (read, not copied): -mean_p <F(P y), F(P x1_hat)> with F_y recomputed."""
    def unfold(image):
        columns = F.unfold(image, PATCH, stride=STRIDE)                                # (1, C n n, L)
        return columns.transpose(1, 2).reshape(-1, image.shape[1], PATCH, PATCH)

    encoder.requires_grad_(True)
    y_features = encoder.features(unfold(y)).detach()
    score = -(encoder.features(unfold(x1_hat)) * y_features).sum(dim=1).mean()
    return score, torch.autograd.grad(score, x1_hat, retain_graph=True)[0]


def setup(size):
    torch.manual_seed(0)
    prior, encoder = load_shipped_prior("pixel_tiny"), ContrastiveEncoder().eval()
    y = torch.rand(1, 3, size, size) * 2 - 1
    x_t = torch.randn(1, 3, size, size)
    return prior, encoder, y, x_t


def guided_step(prior, x_t, encoder_grad):
    """The guidance of one step: prior forward with a graph, the encoder's gradient at x1_hat, the prior's
    backward to x_t. Returns the gradient and the three parts' seconds."""
    start = time.perf_counter()
    with torch.enable_grad():
        x_in = x_t.detach().requires_grad_(True)
        x1_hat = x_in + (1 - T) * prior.velocity(x_in, T)
        forward = time.perf_counter()
        _, grad = encoder_grad(x1_hat)
        encoded = time.perf_counter()
        (grad_x_t,) = torch.autograd.grad(x1_hat, x_in, grad_outputs=grad)
    done = time.perf_counter()
    return grad_x_t, (forward - start, encoded - forward, done - encoded)


@pytest.mark.parametrize("impl", ["naive", "ours"])
@pytest.mark.parametrize("size", [64, 128])
def test_cldps_step(benchmark, impl, size):
    prior, encoder, y, x_t = setup(size)
    if impl == "naive":
        encoder_grad = lambda x1_hat: naive_encoder_grad(encoder, y, x1_hat)   # noqa: E731
    else:
        encoder.requires_grad_(False)
        scorer = PatchScore(encoder, y, patch=PATCH, stride=STRIDE, batch=DEFAULT_BATCH)
        encoder_grad = scorer.value_and_grad
    benchmark.group = f"cldps-step-{size}x{size}"
    splits = []

    def step():
        grad, parts = guided_step(prior, x_t, encoder_grad)
        splits.append(parts)
        return grad

    grad = time_rounds(benchmark, step).result
    parts = [statistics.median(p[i] for p in splits[-ROUNDS:]) for i in range(3)]
    benchmark.extra_info.update({"prior_forward_s": round(parts[0], 4), "encoder_fwd_bwd_s": round(parts[1], 4),
                                 "prior_backward_s": round(parts[2], 4), "threads": THREADS,
                                 "patches": ((size - PATCH) // STRIDE + 1) ** 2,
                                 "peak_extra_mb": round(peak_extra_bytes(step, "cpu") / 2**20, 1)})
    # both compute the same gradient (the naive one in the contiguous layout)
    encoder.requires_grad_(False)
    reference, _ = guided_step(prior, x_t, lambda x1_hat: naive_encoder_grad(encoder, y, x1_hat))
    torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [64, 128])
def test_cldps_low_pass_term(benchmark, size):
    _, _, y, x1_hat = setup(size)
    term = LowPassResidual(y, patch=PATCH)
    benchmark.group = f"cldps-step-{size}x{size}"

    def value_and_grad(image, residual):
        with torch.enable_grad():
            image = image.detach().requires_grad_(True)
            return torch.autograd.grad(residual(image), image)[0]

    grad = time_rounds(benchmark, lambda: value_and_grad(x1_hat, term)).result
    benchmark.extra_info.update({"threads": THREADS})
    # the same gradient in float64
    reference = value_and_grad(x1_hat.double(), LowPassResidual(y.double(), patch=PATCH))
    torch.testing.assert_close(grad, reference.float(), atol=1e-5, rtol=1e-4)
