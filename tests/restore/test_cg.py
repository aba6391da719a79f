"""cg_tikhonov: converges to the dense normal-equations solution; its regularisers' adjoints; the demo uses it."""

import pytest
import torch

from blindfast.physics import Blur, SpaceVaryingBlur
from blindfast.restore import cg_tikhonov
from blindfast.restore.finite_differences import add_gradient_normal_, gradient, gradient_adjoint

from _dense import dense_matrix, forward_difference_matrix


@pytest.mark.parametrize("regulariser", ["identity", "gradient"])
@pytest.mark.parametrize("padding", ["reflect", "zeros", "valid"])
def test_cg_converges_to_dense_normal_equations_solution(regulariser, padding):
    g = torch.Generator().manual_seed(0)
    H = W = 16
    psf_grid = torch.rand(1, 1, 3, 3, 5, 5, generator=g, dtype=torch.float64)
    psf_grid /= psf_grid.sum(dim=(-2, -1), keepdim=True)
    op = SpaceVaryingBlur(padding=padding)
    params = {"psf_grid": psf_grid}
    x = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    y = op.A(x, **params) + 0.01 * torch.randn(op.A(x, **params).shape, generator=g, dtype=torch.float64)
    lam = 1e-2
    A = dense_matrix(lambda v: op.A(v, **params), (1, 1, H, W))
    R = torch.eye(H * W, dtype=torch.float64) if regulariser == "identity" else \
        forward_difference_matrix(H, W, circular=False)
    expected = torch.linalg.solve(A.T @ A + lam * R.T @ R, A.T @ y.reshape(-1)).reshape(1, 1, H, W)
    got = cg_tikhonov(y, op, params, lam=lam, regulariser=regulariser, iters=4 * H * W, rtol=1e-13)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_cg_pulls_towards_z_and_warm_start_changes_nothing_at_convergence():
    g = torch.Generator().manual_seed(2)
    H, W = 10, 12
    kernel = torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64)
    op = Blur(padding="replicate")
    y = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    z = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    A = dense_matrix(lambda v: op.A(v, kernel=kernel), (1, 1, H, W))
    expected = torch.linalg.solve(A.T @ A + 0.3 * torch.eye(H * W, dtype=torch.float64),
                                  A.T @ y.reshape(-1) + 0.3 * z.reshape(-1)).reshape(1, 1, H, W)
    for x0 in (None, torch.zeros_like(y)):
        got = cg_tikhonov(y, op, {"kernel": kernel}, lam=0.3, regulariser="identity", z=z, x0=x0, iters=500,
                          rtol=1e-14)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_cg_stops_on_relative_residual():
    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    kernel = torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64)
    loose = cg_tikhonov(y, Blur("circular"), {"kernel": kernel}, lam=0.1, iters=1000, rtol=1e-2)
    tight = cg_tikhonov(y, Blur("circular"), {"kernel": kernel}, lam=0.1, iters=1000, rtol=1e-12)
    assert 1e-8 < (loose - tight).abs().max() < 0.1


def test_gradient_adjoint_and_normal_match_their_definition():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64)
    gy, gx = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64), torch.rand(2, 3, 7, 9, generator=g,
                                                                                   dtype=torch.float64)
    dx_y, dx_x = gradient(x)
    lhs = (dx_y * gy).sum() + (dx_x * gx).sum()
    assert abs(lhs - (x * gradient_adjoint(gy, gx)).sum()) < 1e-12 * lhs.abs()
    out = torch.rand_like(x)
    expected = out + 0.7 * gradient_adjoint(*gradient(x))
    torch.testing.assert_close(add_gradient_normal_(out, x, 0.7), expected, rtol=0, atol=1e-12)


def test_cg_rejects_a_psf_grid_whose_channels_do_not_match():
    y = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="psf_grid must have 1 or 3 channels \\(the image's\\), got 2"):
        cg_tikhonov(y, SpaceVaryingBlur("zeros"), {"psf_grid": torch.ones(1, 2, 2, 2, 3, 3) / 9}, lam=0.01)


@pytest.mark.parametrize("lam", [0.0, -0.1])
def test_cg_rejects_non_positive_lam(lam):
    with pytest.raises(ValueError, match="lam must be a finite number > 0, got"):
        cg_tikhonov(torch.rand(1, 1, 8, 8), Blur("circular"), {"kernel": torch.ones(1, 1, 3, 3) / 9}, lam=lam)
