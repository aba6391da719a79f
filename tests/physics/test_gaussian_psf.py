"""GaussianPSF / covariance_gaussian: against gaussian_kernel's (width, elongation, angle) form, the moments of the
sampled kernel, the gradient at the isotropic start, shapes and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from blindfast.physics import GaussianPSF, covariance_gaussian, gaussian_kernel

F64 = torch.float64


def _covariance_of(sigma: float, anisotropy: float, angle: float) -> torch.Tensor:
    """gaussian_kernel's covariance in (row, column) axes: its main axis at ``angle`` counter-clockwise from the
    column axis with rows pointing down, i.e. the direction (-sin, cos) in (row, column)."""
    along = torch.tensor([-math.sin(angle), math.cos(angle)], dtype=F64)
    across = torch.tensor([math.cos(angle), math.sin(angle)], dtype=F64)
    return sigma**2 * torch.outer(along, along) + (anisotropy * sigma) ** 2 * torch.outer(across, across)


@pytest.mark.parametrize("size, sigma, anisotropy, angle", [(13, 2.5, 0.3, 0.6), (9, 1.0, 1.0, 0.0),
                                                             (15, 3.0, 0.5, 2.0), (1, 1.0, 0.7, 1.0)])
def test_matches_gaussian_kernel(size, sigma, anisotropy, angle):
    cholesky = torch.linalg.cholesky(_covariance_of(sigma, anisotropy, angle))
    ours = covariance_gaussian(size, cholesky)
    reference = gaussian_kernel(size, sigma, anisotropy, angle, dtype=F64)
    assert ours.shape == (size, size) and ours.dtype == F64
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-15)


def test_normalised_with_the_covariance_as_its_second_moments():
    """On a window wide enough for the tails (7 standard deviations each side), the sampled kernel's moments are the
    continuous ones to rounding (pixel sampling of a Gaussian wider than a pixel aliases by ~exp(-2 pi^2 sigma^2))."""
    covariance = _covariance_of(2.0, 0.6, 0.4)
    kernel = covariance_gaussian(29, torch.linalg.cholesky(covariance))
    d = torch.arange(29, dtype=F64) - 14
    rows, cols = d[:, None].expand(29, 29), d[None, :].expand(29, 29)
    assert kernel.sum().item() == pytest.approx(1, abs=1e-14)
    assert (kernel * rows).sum().abs().item() < 1e-14 and (kernel * cols).sum().abs().item() < 1e-14
    moments = torch.stack([torch.stack([(kernel * a * b).sum() for b in (rows, cols)]) for a in (rows, cols)])
    torch.testing.assert_close(moments, covariance, rtol=1e-9, atol=1e-9)


def test_module_starts_isotropic_and_renders_a_shared_grid():
    psf = GaussianPSF((2, 3), 11, init_sigma=1.5)
    grid = psf()
    assert grid.shape == (1, 1, 2, 3, 11, 11)
    torch.testing.assert_close(grid[0, 0, 1, 2], gaussian_kernel(11, 1.5), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(psf.covariance(), 2.25 * torch.eye(2), rtol=1e-6, atol=1e-7)


def test_elongation_gets_a_gradient_at_the_isotropic_start():
    """Matching an elongated, tilted target from the isotropic start: the off-diagonal of L (which tilts the
    blob) gets a gradient, where an angle parameter would get none; 300 Adam steps reach the target."""
    target = gaussian_kernel(13, 2.5, 0.4, 0.7)
    psf = GaussianPSF((1, 1), 13, init_sigma=1.0)
    loss = lambda: (psf()[0, 0, 0, 0] - target).square().sum()  # noqa: E731
    loss().backward()
    assert psf.off_diagonal.grad.abs().item() > 1e-3 * psf.log_diagonal.grad.abs().max().item()
    optimizer = torch.optim.Adam(psf.parameters(), lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    torch.testing.assert_close(psf.covariance().double(), _covariance_of(2.5, 0.4, 0.7), rtol=0.02, atol=0.02)


def test_gradcheck():
    L = torch.tensor([[1.3, 0.0], [0.4, 0.8]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: covariance_gaussian(7, torch.tril(m)), (L,))


@pytest.mark.parametrize("call, error, message", [
    (lambda: covariance_gaussian(4, torch.eye(2)), ValueError, r"size must be odd .*got 4"),
    (lambda: covariance_gaussian(5, torch.eye(3)), ValueError, r"cholesky must have shape \(2, 2\), got \(3, 3\)"),
    (lambda: covariance_gaussian(5, -torch.eye(2)), ValueError, r"cholesky's diagonal must be > 0, got \[-1.0, -1.0\]"),
    (lambda: GaussianPSF((1, 1), 6), ValueError, r"size must be odd .*got 6"),
    (lambda: GaussianPSF((1, 1), 5, init_sigma=0.0), ValueError, r"init_sigma must be a finite number > 0, got 0.0"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
