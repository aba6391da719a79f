"""LatentDEM's latent variant: the gluing gradient against a float64 autograd reference, the M-steps start at
t = 0.3 T, a tiny end-to-end run raises the kernel's MNC above the delta start, images the latent prior cannot take
are refused clearly."""

import copy
import math

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.methods.latent_dem import delta_kernel, em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.e_step import guidance_gradient
from blindfast.methods.latent_dem.em import latent_autoencoder
from blindfast.metrics import mnc
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, motion_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prior():
    return load_shipped_prior("latent_tiny")


def _reference_gradient(prior, z, alpha_bar, y, kernel, scale, gamma):
    r"""float64 grad_z (scale ||y - A D(z0)|| + gamma ||z0 - E(A^T y + (I - A^T A) D(z0))||), written out: z0 by
    Tweedie, D = (decode + 1) / 2, E = encode(2 x - 1), A^T as the vector-Jacobian product of A (not the operator's
    own adjoint)."""
    prior = copy.deepcopy(prior).double()
    blur = Blur(padding="circular")
    z = z.double().requires_grad_(True)
    y, kernel = y.double(), kernel.double()

    def adjoint(v):
        probe = torch.zeros_like(v, requires_grad=True)
        return torch.autograd.grad(blur.A(probe, kernel=kernel), probe, v, create_graph=True)[0]

    eps = prior.vp_epsilon(z, alpha_bar)
    z0 = (z - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    image = (prior.decode(z0) + 1) / 2
    glued = adjoint(y) + image - adjoint(blur.A(image, kernel=kernel))
    g = z0 - prior.encode(2 * glued - 1)
    objective = scale * (y - blur.A(image, kernel=kernel)).square().sum().sqrt() + gamma * g.square().sum().sqrt()
    (grad,) = torch.autograd.grad(objective, z)
    return grad


@pytest.mark.parametrize("scale, gamma", [(0.0, 0.7), (0.4, 0.0), (0.4, 0.7)])
def test_guidance_gradient_matches_float64_autograd(prior, scale, gamma):
    """A 16 x 16 image (4 x 4 latents), a 5 x 5 motion kernel: the latent E-step's guidance is scale grad ||r|| +
    gamma grad ||g|| (the gluing term alone, the data term alone, both)."""
    gen = torch.Generator().manual_seed(0)
    kernel = motion_kernel(1, 5, generator=gen)["kernel"].reshape(5, 5)
    y = torch.rand(1, 3, 16, 16, generator=gen)
    z = torch.randn(1, 4, 4, 4, generator=gen)
    alpha_bar = 0.6
    autoencoder, shape = latent_autoencoder(prior, y)
    assert shape == (1, 4, 4, 4)
    grad, *_ = guidance_gradient(prior, z, alpha_bar, y, Blur(padding="circular"), {"kernel": kernel}, scale,
                                 autoencoder=autoencoder, gluing=gamma)
    reference = _reference_gradient(prior, z, alpha_bar, y, kernel, scale, gamma)
    torch.testing.assert_close(grad.double(), reference, rtol=1e-3, atol=1e-4 * reference.abs().max().item())


def test_gluing_needs_a_latent_prior():
    pixel = load_shipped_prior("pixel_tiny")
    y = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="gluing needs a latent prior's autoencoder"):
        guidance_gradient(pixel, torch.randn(1, 3, 16, 16), 0.5, y, Blur(padding="circular"),
                          {"kernel": delta_kernel(3)}, 1.0, gluing=0.1)


def test_m_steps_start_at_three_tenths_of_t(prior):
    """The latent default (em.LATENT_M_STEP_START_FRACTION): of 10 steps, all full, only t <= 3 run the M-step."""
    y = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = em_deblur(y, prior, kernel_size=5, sigma=0.01, steps=10, skip_every=1,
                       generator=torch.Generator().manual_seed(1))
    assert [s.m_seconds > 0 for s in result.steps] == [t <= 3 for t in range(10, 0, -1)]


def test_end_to_end_raises_kernel_mnc(prior):
    """The centre 64 x 64 crop of chelsea (a test photo), a 9 x 9 motion kernel, noise 0.01, the default T = 100
    steps: MNC 0.43 for the delta start, 0.86 measured with the defaults (the gradient-domain M-step from t = 0.3 T;
    0.83 with M-steps at every full step). At T = 40, where only 12 M-steps run, 0.66 (0.81 with every full step;
    0.59 with the intensity M-step, 0.63 with that and gluing gamma = 0.1; the pixel variant's test reaches 0.94)."""
    image = embedded_images("test")[1]
    top, left = (image.shape[-2] - 64) // 2, (image.shape[-1] - 64) // 2
    x = image[None, :, top:top + 64, left:left + 64].contiguous()
    kernel = motion_kernel(1, 9, generator=torch.Generator().manual_seed(0))["kernel"].reshape(9, 9)
    y = Blur(padding="circular").A(x, kernel=kernel) + 0.01 * torch.randn(x.shape,
                                                                          generator=torch.Generator().manual_seed(1))
    result = em_deblur(y, prior, kernel_size=9, sigma=0.01, kernel_denoiser=load_kernel_denoiser(),
                       generator=torch.Generator().manual_seed(2))
    start = mnc(delta_kernel(9), kernel).item()
    assert start < 0.45 and mnc(result.kernel, kernel).item() > 0.75
    assert result.image.shape == x.shape and bool(torch.isfinite(result.image).all())
    assert result.kernel.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 3, 60, 64), (1, 3, 64, 56)])
def test_shape_mismatch_is_refused(prior, shape):
    """Grey images (the autoencoder takes 3 channels) and sides not multiples of 16 (downsampling 4 x the U-Net's 4)."""
    with pytest.raises(ValueError, match=r"the latent prior takes images \(1, 3, H, W\) with H and W multiples of 16"):
        em_deblur(torch.rand(shape), prior, kernel_size=5, sigma=0.01, steps=2)
