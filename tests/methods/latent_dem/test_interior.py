"""LatentDEM's data term on the valid interior: the operator against Blur("valid") and its adjoint, the M-step's data
step against a float64 least-squares reference, kernel recovery from exact images under a blur that is not circular,
and em_deblur's boundary option end to end."""

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.methods.latent_dem import delta_kernel, em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.interior import InteriorBlur, interior_kernel_update, interior_mask
from blindfast.metrics import mnc
from blindfast.models import load_shipped_prior
from blindfast.ops import hqs_kernel_update
from blindfast.physics import Blur, motion_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _motion(size: int, seed: int) -> torch.Tensor:
    return motion_kernel(1, size, generator=torch.Generator().manual_seed(seed))["kernel"].reshape(size, size)


def _camera_blur(size: int, kernel: torch.Tensor, photo: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): a (1, 3, size, size) crop of a train photo and its blur as a camera makes it (the "valid" blur of the
    crop grown by the kernel, so the scene beyond the frame enters the border), no noise."""
    image = embedded_images("train")[photo].to(kernel.dtype)
    kh, kw = kernel.shape
    top, left = 180, 200
    before_h, before_w = (kh - 1) // 2, (kw - 1) // 2
    grown = image[None, :, top - before_h:top + size + kh - 1 - before_h,
                  left - before_w:left + size + kw - 1 - before_w].contiguous()
    return (grown[..., before_h:before_h + size, before_w:before_w + size],
            Blur(padding="valid").A(grown, kernel=kernel))


@pytest.mark.parametrize("kernel_size", [(5, 5), (4, 7)])
def test_interior_is_the_valid_blur(kernel_size):
    x = torch.randn(2, 3, 20, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = torch.rand(*kernel_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = InteriorBlur().A(x, kernel=kernel)
    kh, kw = kernel_size
    valid = Blur(padding="valid").A(x, kernel=kernel)
    rows = slice((kh - 1) // 2, (kh - 1) // 2 + valid.shape[-2])  # Blur's "same" padding: (k - 1) // 2 before
    cols = slice((kw - 1) // 2, (kw - 1) // 2 + valid.shape[-1])
    torch.testing.assert_close(out[..., rows, cols], valid)
    mask = interior_mask((20, 24), kernel_size, dtype=torch.float64)
    assert mask.sum().item() == valid.shape[-2] * valid.shape[-1] and mask[rows, cols].min().item() == 1.0
    assert out.abs().mul(1 - mask).max().item() == 0.0


def test_adjoint():
    gen = torch.Generator().manual_seed(3)
    x, v = (torch.randn(1, 3, 16, 18, dtype=torch.float64, generator=gen) for _ in range(2))
    kernel = torch.rand(5, 5, dtype=torch.float64, generator=gen)
    op = InteriorBlur()
    lhs = (op.A(x, kernel=kernel) * v).sum()
    rhs = (x * op.A_adjoint(v, kernel=kernel)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


def test_data_step_is_the_interior_least_squares():
    """One iteration, no denoiser: max(Z, 0) / sum with Z the float64 least-squares solution of [P; sqrt(alpha) I] z =
    [y interior; sqrt(alpha) phi], P built column by column from Blur("valid") of unit kernels."""
    kernel = _motion(7, 4).double()
    x, y = _camera_blur(24, kernel)
    y = y + 0.01 * torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x_full, y_full = x, y[0]
    phi = torch.rand(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    phi = phi / phi.sum()
    sigma, delta = 0.01, 5e5
    alpha = delta * sigma**2
    columns = [Blur(padding="valid").A(x_full, kernel=torch.eye(49, dtype=torch.float64)[j].reshape(7, 7)).reshape(-1)
               for j in range(49)]
    system = torch.cat([torch.stack(columns, 1), alpha**0.5 * torch.eye(49, dtype=torch.float64)])
    target = torch.cat([y_full[:, 3:-3, 3:-3].reshape(-1), alpha**0.5 * phi.reshape(-1)])
    reference = torch.linalg.lstsq(system, target[:, None]).solution[:, 0].reshape(7, 7).clamp_min(0)
    reference = reference / reference.sum()
    got = interior_kernel_update(x_full, y_full, phi, sigma=sigma, delta=delta, iters=1)
    torch.testing.assert_close(got, reference, rtol=1e-9, atol=1e-12)
    border_changed = y_full.clone()
    border_changed[:, :3] = 5.0  # the border is not used
    torch.testing.assert_close(interior_kernel_update(x_full, border_changed, phi, sigma=sigma, delta=delta, iters=1),
                               got)


def test_recovers_the_kernel_of_a_camera_blur():
    """Exact images, a 13 x 13 motion kernel, the scene beyond the frame in the border, noise 0.01: the interior
    update recovers the kernel (MNC > 0.95)."""
    kernel = _motion(13, 3)
    x, y = _camera_blur(64, kernel)
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    denoiser = load_kernel_denoiser()
    interior = interior_kernel_update(x, y[0], delta_kernel(13), sigma=0.01, delta=5e6, iters=20,
                                      denoiser=denoiser)
    assert interior.shape == (13, 13) and bool((interior >= 0).all())
    assert interior.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert mnc(interior, kernel).item() > 0.95


def test_em_deblur_valid_boundary_end_to_end():
    """A tiny run on a camera blur (9 x 9 kernel, 64 x 64 crop of rocket, 40 steps) with the interior data term
    raises the kernel's MNC well above the initial delta's (0.43; 0.60 measured)."""
    kernel = _motion(9, 0)
    x, y = _camera_blur(64, kernel, photo=3)
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    result = em_deblur(y, load_shipped_prior("pixel_tiny"), kernel_size=9, sigma=0.01, steps=40,
                       kernel_denoiser=load_kernel_denoiser(), boundary="valid",
                       generator=torch.Generator().manual_seed(2))
    assert result.image.shape == x.shape and bool(torch.isfinite(result.image).all())
    assert mnc(delta_kernel(9), kernel).item() < 0.45
    assert mnc(result.kernel, kernel).item() > 0.55
