"""KernelDenoiser: shapes for any odd window, dtypes, per-item levels, the identity at initialisation, bad inputs,
and the plug-in into hqs_kernel_update with the shipped weights."""

import copy

import pytest
import torch

from blindfast.methods.latent_dem import KernelDenoiser, load_kernel_denoiser
from blindfast.data import embedded_images
from blindfast.metrics import kernel_mse
from blindfast.ops import hqs_kernel_update
from blindfast.physics import motion_kernel


@pytest.mark.parametrize("window", [(1, 1), (3, 3), (13, 13), (33, 33), (5, 9)])
def test_shapes_for_odd_windows(window):
    net = load_kernel_denoiser()
    z = torch.rand(3, 1, *window)
    out = net(z, 1e-3)
    assert out.shape == (3, 1, *window) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_float64_in_float64_out_and_per_item_levels():
    """float64 kernels come back in float64, computed in float32: within float32 rounding (1e-5 of the largest tap)
    of the same network run in float64; a batch with one level per item gives each item its own level's result."""
    net = load_kernel_denoiser()
    reference = copy.deepcopy(net).double()
    z = motion_kernel(2, 33, 0.5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)["kernel"]
    levels = torch.tensor([1e-4, 1e-3])
    out = net(z, levels)
    assert out.dtype == torch.float64
    bound = 1e-5 * z.abs().max().item()
    for i in range(2):
        expected = reference(z[i:i + 1], levels[i].item())
        assert (out[i:i + 1] - expected).abs().max().item() < bound
        assert (net(z[i:i + 1], levels[i].item()) - expected).abs().max().item() < bound
    # the two levels give results that differ far beyond that bound: the level reaches each item
    assert (reference(z, 1e-4) - reference(z, 1e-3)).abs().max().item() > 100 * bound


def test_untrained_denoiser_is_the_identity():
    z = torch.rand(2, 1, 7, 7)
    assert torch.equal(KernelDenoiser()(z, 0.1), z)


@pytest.mark.parametrize("z, level, match", [
    (torch.rand(2, 7, 7), 0.1, r"shape \(B, 1, kh, kw\), got \(2, 7, 7\)"),
    (torch.rand(2, 3, 7, 7), 0.1, r"shape \(B, 1, kh, kw\), got \(2, 3, 7, 7\)"),
    (torch.rand(2, 1, 7, 7), 0.0, r"positive finite .* got \[0.0\]"),
    (torch.rand(2, 1, 7, 7), float("nan"), r"positive finite .* got \[nan\]"),
    (torch.rand(2, 1, 7, 7), torch.tensor([0.1, 0.1, 0.1]), r"hold 1 or B = 2 such values, got \[0.1"),
])
def test_bad_inputs(z, level, match):
    with pytest.raises(ValueError, match=match):
        KernelDenoiser()(z, level)


def test_plugs_into_hqs_kernel_update():
    """The shipped denoiser passed as ``denoiser=`` directly: the M-step runs and returns a non-negative kernel of
    sum 1 (the denoiser sees (1, 1, 33, 33) kernels at sqrt(lam / delta))."""
    generator = torch.Generator().manual_seed(3)
    kernel = motion_kernel(1, 33, 0.5, generator=generator)["kernel"][0, 0]
    x_hat = torch.rand(2, 3, 64, 64, generator=generator)
    y = torch.fft.irfft2(torch.fft.rfft2(x_hat[0]) * torch.fft.rfft2(torch.roll(
        torch.nn.functional.pad(kernel, (0, 31, 0, 31)), (-16, -16), (0, 1))), s=(64, 64))
    seen = []
    net = load_kernel_denoiser()

    def denoiser(z, level):
        seen.append((tuple(z.shape), level))
        return net(z, level)

    init = torch.zeros(33, 33)
    init[16, 16] = 1
    out = hqs_kernel_update(x_hat, y, init, sigma=0.01, delta=5e6, iters=5, denoiser=denoiser, lam=1.0)
    assert out.shape == (33, 33) and (out >= 0).all()
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert seen == [((1, 1, 33, 33), (1.0 / 5e6) ** 0.5)] * 5
    # the module itself is a valid denoiser argument
    direct = hqs_kernel_update(x_hat, y, init, sigma=0.01, delta=5e6, iters=5, denoiser=net, lam=1.0)
    assert torch.equal(direct, out)


def test_lowers_the_m_step_kernel_error_on_exact_images():
    """M-step (20 iterations, delta 5e6, lambda 1) from exact images of a 128 x 128 crop of "coffee", blurred
    circularly by two motion kernels with noise 0.01: the kernel MSE with the shipped denoiser is below that without
    (here 5.6e-7 against 3.8e-6 and 1.8e-7 against 9.2e-7; scripts/kernel_denoiser_mstep.py: 1.0e-7 against 5.3e-7
    over four kernels at 256 x 256)."""
    generator = torch.Generator().manual_seed(11)
    net = load_kernel_denoiser()
    x = embedded_images("test")[0][:, 100:228, 100:228].contiguous()
    start = torch.zeros(33, 33)
    start[16, 16] = 1
    for kernel in motion_kernel(2, 33, 0.5, generator=generator)["kernel"][:, 0]:
        padded = torch.roll(torch.nn.functional.pad(kernel, (0, 95, 0, 95)), (-16, -16), (0, 1))
        y = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(padded), s=(128, 128))
        y = y + 0.01 * torch.randn(y.shape, generator=generator)
        errors = [kernel_mse(hqs_kernel_update(x[None], y, start, sigma=0.01, delta=5e6, iters=20,
                                               denoiser=denoiser)[None, None], kernel[None, None]).item()
                  for denoiser in (None, net)]
        assert errors[1] < errors[0], errors
