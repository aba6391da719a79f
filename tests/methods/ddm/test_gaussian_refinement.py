"""The refining stages of a uniform blur (methods.ddm.gaussian_refinement): the moments and the 3-sigma support
against loops written out in float64, the two parameterisations against their formulas, their gradients by
gradcheck, and the taps off the support held at zero through optimisation."""

import itertools

import pytest
import torch

from blindfast.methods.ddm.gaussian_refinement import (ModulatedKernel, SupportKernel, ellipse_support,
                                                       kernel_moments)
from blindfast.physics import gaussian_kernel


def _tiny_kernel(seed=0, size=7):
    """(1, 1, 1, size, size) float64: an elongated, tilted Gaussian times random factors in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    base = gaussian_kernel(size, 1.6, 0.4, 0.7, dtype=torch.float64)
    kernel = base * (0.5 + torch.rand(size, size, generator=g, dtype=torch.float64))
    return (kernel / kernel.sum()).reshape(1, 1, 1, size, size)


def _loop_moments(kernel):
    """Centroid and covariance of a (k, k) kernel by explicit sums over its taps (python floats)."""
    size = kernel.shape[-1]
    taps = [(i, j, float(kernel[i, j])) for i, j in itertools.product(range(size), range(size))]
    total = sum(w for _, _, w in taps)
    mi = sum(w * i for i, _, w in taps) / total
    mj = sum(w * j for _, j, w in taps) / total
    cii = sum(w * (i - mi) ** 2 for i, _, w in taps) / total
    cjj = sum(w * (j - mj) ** 2 for _, j, w in taps) / total
    cij = sum(w * (i - mi) * (j - mj) for i, j, w in taps) / total
    return (mi, mj), ((cii, cij), (cij, cjj))


def _loop_support(kernel, sigmas, dilation):
    """The dilated sigmas-sigma ellipse of a (k, k) kernel, tap by tap (2x2 inverse written out)."""
    size = kernel.shape[-1]
    (mi, mj), ((a, b), (_, c)) = _loop_moments(kernel)
    det = a * c - b * b
    inside = [[((c * (i - mi) ** 2 - 2 * b * (i - mi) * (j - mj) + a * (j - mj) ** 2) / det) <= sigmas**2
               for j in range(size)] for i in range(size)]
    return torch.tensor([[float(any(inside[p][q] for p in range(max(i - dilation, 0), min(i + dilation + 1, size))
                                    for q in range(max(j - dilation, 0), min(j + dilation + 1, size))))
                          for j in range(size)] for i in range(size)], dtype=torch.float64)


def test_kernel_moments_match_the_loops():
    kernel = _tiny_kernel()[0, 0, 0]
    centroid, covariance = kernel_moments(kernel)
    loop_centroid, loop_covariance = _loop_moments(kernel)
    torch.testing.assert_close(centroid, torch.tensor(loop_centroid, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(covariance, torch.tensor(loop_covariance, dtype=torch.float64), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("sigmas, dilation", [(3.0, 1), (2.0, 1), (1.5, 0), (2.5, 2)])
def test_ellipse_support_matches_the_loops(sigmas, dilation):
    kernel = _tiny_kernel(seed=1, size=9)
    support = ellipse_support(kernel, sigmas, dilation)
    expected = _loop_support(kernel[0, 0, 0], sigmas, dilation)
    assert support.shape == kernel.shape and support.dtype == kernel.dtype
    assert torch.equal(support[0, 0, 0], expected)
    assert 0 < expected.sum() < 81                                  # neither empty nor the whole window


def test_support_kernel_starts_at_the_masked_init_and_keeps_its_taps_off_the_support_at_zero():
    init = _tiny_kernel(seed=2, size=9)
    module = SupportKernel(init, sigmas=1.5, dilation=0)
    support = ellipse_support(init, 1.5, 0)
    expected = init * support / (init * support).sum()
    torch.testing.assert_close(module(), expected.unsqueeze(0), rtol=1e-12, atol=1e-15)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    target = torch.rand(9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(20):                                             # a loss that wants mass everywhere
        optimizer.zero_grad()
        (-(module() * target).sum()).backward()
        optimizer.step()
    kernel = module()
    assert torch.equal(kernel[..., support == 0], torch.zeros_like(kernel[..., support == 0]))
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert not torch.allclose(kernel, expected.unsqueeze(0))        # it did move, on the support


def test_support_kernel_gradcheck():
    module = SupportKernel(_tiny_kernel(seed=3), sigmas=2.0)
    with torch.no_grad():
        module.raw.add_(0.01 * torch.rand(module.raw.shape, generator=torch.Generator().manual_seed(1),
                                          dtype=torch.float64))
    weights = torch.rand(7, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    raw = module.raw.detach().clone().requires_grad_(True)

    def loss(r):
        return (torch.func.functional_call(module, {"raw": r}, ()) * weights).sum()

    assert torch.autograd.gradcheck(loss, (raw,))


def test_modulated_kernel_is_the_base_times_the_exponential_factor():
    base = _tiny_kernel(seed=4)
    module = ModulatedKernel(base * 3.0)                            # any positive scale: the base is normalised
    torch.testing.assert_close(module(), base.unsqueeze(0), rtol=1e-12, atol=1e-15)
    factor = torch.randn(base.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        module.log_factor.copy_(factor)
    by_hand = base * factor.exp()
    torch.testing.assert_close(module(), (by_hand / by_hand.sum()).unsqueeze(0), rtol=1e-12, atol=1e-15)


def test_modulated_kernel_gradcheck_and_empty_taps_get_no_gradient():
    base = _tiny_kernel(seed=6)
    base[..., 0, :] = 0                                             # a row the Gaussian left empty
    module = ModulatedKernel(base)
    weights = torch.rand(7, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    factor = 0.3 * torch.randn(base.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def loss(c):
        return (torch.func.functional_call(module, {"log_factor": c}, ()) * weights).sum()

    assert torch.autograd.gradcheck(loss, (factor.clone().requires_grad_(True),))
    c = factor.clone().requires_grad_(True)
    loss(c).backward()
    assert torch.equal(c.grad[..., 0, :], torch.zeros_like(c.grad[..., 0, :]))
    assert (c.grad[..., 1:, :].abs() > 0).any()
