"""Run-to-run determinism of the CPU ops: with a fixed thread count, repeated calls give bit-identical results.

Every op runs REPEATS times with 2 threads on inputs past its one-thread threshold and cut into several work units
(so the threads really split the work), forward and backward, and each run must equal the first exactly
(torch.equal). Results may differ between thread counts; that is not tested here.
"""

from __future__ import annotations

import pytest
import torch

from blindfast.ops import (
    ddim_step,
    euler_step,
    flow_interpolate,
    flow_matching_loss,
    hqs_kernel_update,
    info_nce,
    overlap_add,
    patchify,
    power_ema_update,
    sv_conv,
)
from blindfast.ops import _backend

REPEATS = 6
THREADS = 2
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    # torch and the extension share one OpenMP runtime: the kernels must see the same thread count.
    assert _backend.cpu().build_info()["omp_max_threads"] == THREADS
    yield
    torch.set_num_threads(before)


def assert_repeatable(run) -> None:
    """``run()`` returns a tuple of tensors; REPEATS calls must give the same bits."""
    first = run()
    for repeat in range(1, REPEATS):
        again = run()
        for index, (a, b) in enumerate(zip(first, again)):
            assert torch.equal(a, b), (f"output {index} of run {repeat} differs from run 0 in "
                                       f"{(a != b).sum().item()} of {a.numel()} elements")


def _randn(*shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# sv_conv: 2 x 3 planes of 80 x 72 (3 bands of 32 rows each, 18 work units; 1.7e6 multiply-adds for 7 x 7 kernels,
# past the 2^18 one-thread threshold). Broadcast grids sum the gradient of all 6 planes into one grid.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["zeros", "circular", "valid"])
@pytest.mark.parametrize("psf_batch", [(1, 1), (2, 3)], ids=["broadcast", "per-plane"])
def test_sv_conv(dtype, padding, psf_batch):
    x0 = _randn(2, 3, 80, 72, dtype=dtype, seed=0)
    psf0 = _randn(*psf_batch, 3, 4, 7, 7, dtype=dtype, seed=1).abs()
    psf0 = psf0 / psf0.sum(dim=(-2, -1), keepdim=True)
    weights = _randn(*sv_conv(x0, psf0, padding=padding).shape, dtype=dtype, seed=2)

    def run():
        x, psf = x0.clone().requires_grad_(), psf0.clone().requires_grad_()
        y = sv_conv(x, psf, padding=padding)
        grad_x, grad_psf = torch.autograd.grad(y, (x, psf), weights)
        return y.detach(), grad_x, grad_psf, sv_conv(weights, psf0, padding=padding, adjoint=True)

    assert_repeatable(run)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_elements", [1 << 21, 1 << 15], ids=["one-chunk", "several-chunks"])
def test_info_nce(dtype, chunk_elements):
    # 300 rows x 512 negatives: 1.5e5 logits per chunk of rows, past the 2^14 one-thread threshold.
    q0 = torch.nn.functional.normalize(_randn(300, 32, dtype=dtype, seed=0), dim=1)
    k0 = torch.nn.functional.normalize(_randn(300, 32, dtype=dtype, seed=1), dim=1)
    queue = torch.nn.functional.normalize(_randn(512, 32, dtype=dtype, seed=2), dim=1)

    def run():
        q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
        loss = info_nce(q, k, queue, 0.07, chunk_elements=chunk_elements)
        return (loss.detach(), *torch.autograd.grad(loss, (q, k)))

    assert_repeatable(run)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hqs_kernel_update(dtype):
    # 64 x 33 frequencies: 9 chunks of the spectral combine; a 15 x 15 kernel for 25 iterations, (15^2)^2 * 25 =
    # 1.3e6 multiply-adds, past the step's 2^20 threshold, in 4 blocks of rows.
    x_hat = _randn(2, 3, 64, 64, dtype=dtype, seed=0)
    y = _randn(3, 64, 64, dtype=dtype, seed=1)
    kernel = torch.full((15, 15), 1 / 225, dtype=dtype)

    assert_repeatable(lambda: (hqs_kernel_update(x_hat, y, kernel, sigma=0.05, delta=1.0, iters=25),))


@pytest.mark.parametrize("dtype", DTYPES)
def test_patchify_overlap_add(dtype):
    # 2 x 3 planes of 64 x 64, 16 x 16 patches every 8 pixels: 49 patches of 768 values per image.
    x0 = _randn(2, 3, 64, 64, dtype=dtype, seed=0)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    patch_weights = _randn(*patchify(x0, 16, 8).shape, dtype=dtype, seed=1)
    image_weights = _randn(*x0.shape, dtype=dtype, seed=2)

    def run():
        x, patches = x0.clone().requires_grad_(), patch_weights.clone().requires_grad_()
        out = patchify(x, 16, 8, mean=mean, std=std)
        (grad_x,) = torch.autograd.grad(out, x, patch_weights)
        image = overlap_add(patches, (64, 64), 8, std=std)
        (grad_patches,) = torch.autograd.grad(image, patches, image_weights)
        return out.detach(), grad_x, image.detach(), grad_patches

    assert_repeatable(run)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flow_ops(dtype):
    # Rows of 3 x 96 x 96 = 27648 values: two blocks of 2^14 per row, 4 rows.
    shape = (4, 3, 96, 96)
    x0_, x1_, v_ = (_randn(*shape, dtype=dtype, seed=s) for s in range(3))
    t0 = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    weight = torch.rand(4, generator=torch.Generator().manual_seed(4), dtype=dtype)
    grad_out = _randn(*shape, dtype=dtype, seed=5)

    def run():
        x0, x1, v, t = (a.clone().requires_grad_() for a in (x0_, x1_, v_, t0))
        xt = flow_interpolate(x0, x1, t)
        interpolate_grads = torch.autograd.grad(xt, (x0, x1, t), grad_out)
        loss = flow_matching_loss(v, x0, x1, weight)
        loss_grads = torch.autograd.grad(loss, (v, x0, x1))
        return xt.detach(), *interpolate_grads, loss.detach(), *loss_grads

    assert_repeatable(run)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sampler_steps(dtype):
    x, v, guidance, eps = (_randn(2, 3, 96, 96, dtype=dtype, seed=s) for s in range(4))
    noise = _randn(2, 3, 96, 96, dtype=dtype, seed=4)

    assert_repeatable(lambda: (euler_step(x, v, 0.05, guidance=guidance, guidance_scale=0.3),
                               ddim_step(x, eps, 0.5, 0.6, eta=0.5, noise=noise, clip_x0=(-1.0, 1.0))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_ema_update(dtype):
    weights = [_randn(*shape, dtype=dtype, seed=s) for s, shape in enumerate([(256, 300), (64, 3, 3, 3), (7,)])]
    ema0 = [_randn(*w.shape, dtype=dtype, seed=10 + s) for s, w in enumerate(weights)]

    def run():
        ema = [e.clone() for e in ema0]
        power_ema_update(ema, weights, 0.999)
        return tuple(ema)

    assert_repeatable(run)
