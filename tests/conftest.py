import os

import pytest
import torch

# Without a GPU, Triton kernels run on CPU tensors through the interpreter; it must be chosen before any test module
# imports triton (the kernels are bound to it when they are decorated).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def flow_loss_of():
    """``flow_loss_of(prior, x1, seed)``: the held-out flow-matching loss that the shipped priors' manifests record,
    re-measured independently: x_0 ~ N(0, I) (x1's shape), then t ~ U[0, 1) (one per item), both from a CPU
    generator seeded ``seed``; the prior's float32 velocities, the squared error and its mean in float64."""

    @torch.no_grad()
    def measure(prior, x1, seed):
        from blindfast.ops import flow_interpolate

        generator = torch.Generator().manual_seed(seed)
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(x1.shape[0], generator=generator)
        v = prior.velocity(flow_interpolate(x0, x1, t), t)
        return (v.double() - (x1.double() - x0.double())).square().mean().item()

    return measure


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny computations (``pytestmark = pytest.mark.usefixtures(...)``): there
    torch's thread pool only adds overhead, and its threads spin when the 2 cores are shared (a 64 x 64 EM run took
    125 s with 2 threads, 1.2 s with 1). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
