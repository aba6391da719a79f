"""wiener: the exact minimiser of its quadratic problem (dense solve), the photo boundary, and its bad input."""

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.metrics import psnr
from blindfast.physics import Blur, SpaceVaryingBlur, motion_kernel
from blindfast.restore import wiener

from _dense import dense_matrix, forward_difference_matrix


@pytest.mark.parametrize("regulariser", ["identity", "gradient"])
@pytest.mark.parametrize("with_z", [False, True])
def test_wiener_equals_dense_minimiser_on_circular_blur(regulariser, with_z):
    g = torch.Generator().manual_seed(0)
    H, W = 12, 10
    kernel = torch.rand(1, 1, 5, 4, generator=g, dtype=torch.float64)   # asymmetric, even width
    y = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    z = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64) if with_z else None
    lam = 0.05
    op = Blur(padding="circular")
    A = dense_matrix(lambda v: op.A(v, kernel=kernel), (1, 1, H, W))
    R = torch.eye(H * W, dtype=torch.float64) if regulariser == "identity" else forward_difference_matrix(H, W, True)
    # argmin |A x - y|^2 + lam |R (x - z)|^2  <=>  (A^T A + lam R^T R) x = A^T y + lam R^T R z
    rhs = A.T @ y.reshape(-1) + (lam * R.T @ R @ z.reshape(-1) if with_z else 0)
    expected = torch.linalg.solve(A.T @ A + lam * R.T @ R, rhs).reshape(1, 1, H, W)
    got = wiener(y, op, {"kernel": kernel}, lam=lam, regulariser=regulariser, z=z)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_wiener_reflect_boundary_does_not_ring_on_a_photo():
    """On a reflect-padded blur of a photo (no wrap-around), the circular solution rings from the edges; the
    estimated margin removes it."""
    x = embedded_images("test")[0][None, :, :128, :128].double()
    g = torch.Generator().manual_seed(0)
    kernel = motion_kernel(1, size=31, generator=g)["kernel"].double()
    op = Blur(padding="reflect")
    y = op.A(x, kernel=kernel) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    params = {"kernel": kernel}
    circular = wiener(y, op, params, lam=0.01, regulariser="gradient", boundary="circular").clamp(0, 1)
    reflect = wiener(y, op, params, lam=0.01, regulariser="gradient").clamp(0, 1)
    assert psnr(reflect, x) > psnr(y, x) + 1
    assert psnr(reflect, x) > psnr(circular, x) + 5


def _case():
    y = torch.rand(1, 3, 16, 16)
    return y, {"kernel": torch.full((1, 1, 3, 3), 1 / 9)}


@pytest.mark.parametrize("kernel, message", [
    (torch.full((1, 1, 17, 3), 1.0), "must fit in the image, got image 16x16"),
    (-torch.ones(1, 1, 3, 3), "positive sum"),
    (torch.tensor([[[[float("nan"), 1.0], [1.0, 1.0]]]]), "must be finite"),
    (torch.ones(1, 2, 3, 3), "must have 1 or 3 channels (the image's), got 2"),
])
def test_wiener_rejects_bad_kernels(kernel, message):
    y, _ = _case()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        wiener(y, Blur("circular"), {"kernel": kernel}, lam=0.01)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_wiener_rejects_non_positive_lam(lam):
    y, params = _case()
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        wiener(y, Blur("circular"), params, lam=lam)


def test_wiener_needs_a_uniform_blur():
    y, _ = _case()
    with pytest.raises(TypeError, match="wiener needs a uniform blur.*got SpaceVaryingBlur"):
        wiener(y, SpaceVaryingBlur("zeros"), {"psf_grid": torch.ones(1, 1, 2, 2, 3, 3) / 9}, lam=0.01)
