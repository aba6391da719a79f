"""Trainable parameterisations: valid kernels after any parameter change, gradients, KernelGAN's linear net against
an independent float64 composition and scipy, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal
from torch.func import functional_call

from blindfast.ops import sv_conv
from blindfast.physics.blur import Blur
from blindfast.physics.lens import lens_psf_grid
from blindfast.physics.parameterisations import (DirectKernel, LinearConvNetKernel, NoiseStd, PSFGrid,
                                                 linear_net_kernel_sizes, normalise_kernels)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _delta(shape, dtype=torch.float32):
    kernel = torch.zeros(shape, dtype=dtype)
    kernel[..., shape[-2] // 2, shape[-1] // 2] = 1
    return kernel


def _sum_tolerance(kh, kw, dtype):
    """A sum of kh * kw rounded quotients, each within eps relative: |sum - 1| <= kh * kw * eps."""
    return kh * kw * torch.finfo(dtype).eps


# ---------------------------------------------------------------------------------------------------------------
# DirectKernel


@pytest.mark.parametrize("size, channels, hw", [(5, 1, (5, 5)), ((4, 7), 3, (4, 7)), (1, 2, (1, 1))])
def test_direct_kernel_delta_init_shape_and_value(size, channels, hw):
    kernel = DirectKernel(size, channels)()
    assert kernel.shape == (1, channels, *hw) and kernel.dtype == torch.float32
    torch.testing.assert_close(kernel, _delta((1, channels, *hw)), rtol=0, atol=0)


def test_direct_kernel_gaussian_init_matches_numpy():
    sigma = 1.3
    kernel = DirectKernel((7, 6), 2, init="gaussian", init_sigma=sigma)().double()
    rows, cols = np.meshgrid(np.arange(7) - 3, np.arange(6) - 3, indexing="ij")   # centred on (kh // 2, kw // 2)
    expected = np.exp(-(rows ** 2 + cols ** 2) / (2 * sigma ** 2))
    expected = torch.from_numpy(expected / expected.sum()).expand(1, 2, 7, 6)
    torch.testing.assert_close(kernel, expected, rtol=0, atol=2 * torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("init_shape", [(2, 5, 4), (1, 2, 5, 4), (5, 4)])
def test_direct_kernel_tensor_init_is_a_fixed_point(init_shape):
    init = torch.rand(init_shape, generator=_gen(0), dtype=F64) + 0.1
    kernel = DirectKernel((5, 4), 2, init=init)()
    assert kernel.dtype == F64
    expected = (init / init.sum(dim=(-2, -1), keepdim=True)).expand(1, 2, 5, 4)
    torch.testing.assert_close(kernel, expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_direct_kernel_valid_after_random_perturbation(dtype):
    module = DirectKernel((6, 5), 3, init="gaussian").to(dtype)
    with torch.no_grad():
        module.raw.add_(torch.randn(module.raw.shape, generator=_gen(1), dtype=dtype))   # many weights < 0
    assert (module.raw < 0).any()
    kernel = module()
    assert (kernel >= 0).all()
    torch.testing.assert_close(kernel.sum(dim=(-2, -1)), torch.ones(1, 3, dtype=dtype), rtol=0,
                               atol=_sum_tolerance(6, 5, dtype))
    torch.testing.assert_close(kernel[0], module.raw.abs() / module.raw.abs().sum(dim=(-2, -1), keepdim=True))


def test_direct_kernel_gradcheck():
    module = DirectKernel((3, 4), 2).double()
    # weights away from 0, where |w| is not differentiable
    sign = torch.where(torch.rand(2, 3, 4, generator=_gen(2)) < 0.5, -1.0, 1.0).double()
    raw = (sign * (0.2 + torch.rand(2, 3, 4, generator=_gen(3), dtype=F64))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: functional_call(module, {"raw": w}, ()), (raw,))


def test_delta_init_receives_gradients_off_centre():
    """torch.abs and relu have derivative 0 at 0: a delta init would then never widen. Ours has +1 there."""
    module = DirectKernel(5, 1)
    x = torch.rand(1, 1, 16, 16, generator=_gen(4))
    target = Blur("circular").A(x, kernel=torch.full((5, 5), 1 / 25))
    (Blur("circular").A(x, kernel=module()) - target).square().sum().backward()
    off_centre = torch.ones(5, 5, dtype=torch.bool)
    off_centre[2, 2] = False
    assert (module.raw.grad[0][off_centre] != 0).all()


def test_direct_kernel_drives_blur():
    module = DirectKernel(5, 3)
    x = torch.rand(2, 3, 12, 13, generator=_gen(5))
    torch.testing.assert_close(Blur("circular").A(x, kernel=module()), x, rtol=0, atol=1e-6)
    Blur("zeros").A(x, kernel=module()).sum().backward()
    assert module.raw.grad.shape == (3, 5, 5) and module.raw.grad.abs().sum() > 0


def test_all_zero_weights_give_zeros_not_nan():
    raw = torch.zeros(2, 3, 3)
    raw[1, 0, 0] = 2.0
    expected = torch.zeros(2, 3, 3)
    expected[1, 0, 0] = 1.0
    torch.testing.assert_close(normalise_kernels(raw), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# PSFGrid


@pytest.mark.parametrize("per_channel, channels, out_channels", [(True, 3, 3), (False, 3, 1), (True, 1, 1)])
def test_psf_grid_shape_and_delta(per_channel, channels, out_channels):
    grid = PSFGrid((2, 3), (5, 4), channels, per_channel=per_channel)()
    assert grid.shape == (1, out_channels, 2, 3, 5, 4)
    torch.testing.assert_close(grid, _delta((1, out_channels, 2, 3, 5, 4)), rtol=0, atol=0)


def test_psf_grid_delta_is_identity_for_sv_conv():
    x = torch.rand(1, 3, 11, 12, generator=_gen(6))
    torch.testing.assert_close(sv_conv(x, PSFGrid((3, 3), 5)(), padding="zeros"), x, rtol=0, atol=1e-6)


def test_psf_grid_init_from_lens():
    lens = lens_psf_grid(grid=(3, 4), size=27, generator=_gen(7), dtype=F64)
    module = PSFGrid((3, 4), 27, 3, init=lens)
    # lens_psf_grid already sums to 1; renormalising moves each tap by a few ulps at most
    torch.testing.assert_close(module(), lens, rtol=4 * torch.finfo(F64).eps, atol=0)


def test_psf_grid_shared_init_broadcasts():
    node = torch.rand(5, 5, generator=_gen(8)) + 0.1
    grid = PSFGrid((2, 2), 5, 3, init=node)()
    torch.testing.assert_close(grid, (node / node.sum()).expand(1, 3, 2, 2, 5, 5))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_psf_grid_valid_after_random_perturbation(dtype):
    module = PSFGrid((2, 3), (5, 6), 3, init="gaussian", init_sigma=0.7).to(dtype)
    with torch.no_grad():
        module.raw.add_(torch.randn(module.raw.shape, generator=_gen(9), dtype=dtype))
    grid = module()
    assert (grid >= 0).all()
    torch.testing.assert_close(grid.sum(dim=(-2, -1)), torch.ones(1, 3, 2, 3, dtype=dtype), rtol=0,
                               atol=_sum_tolerance(5, 6, dtype))


def test_psf_grid_gradcheck_through_sv_conv():
    module = PSFGrid((2, 2), 3, 2).double()
    raw = (0.2 + torch.rand(2, 2, 2, 3, 3, generator=_gen(10), dtype=F64)).requires_grad_(True)
    x = torch.rand(1, 2, 6, 7, generator=_gen(11), dtype=F64)
    assert torch.autograd.gradcheck(lambda w: sv_conv(x, functional_call(module, {"raw": w}, ()),
                                                      padding="reflect"), (raw,))


# ---------------------------------------------------------------------------------------------------------------
# LinearConvNetKernel

SIZES = {1: (1,), 3: (3,), 5: (5,), 7: (7,), 9: (7, 3), 11: (7, 5), 13: (7, 5, 3), 15: (7, 5, 5), 17: (7, 5, 5, 3),
         31: (7, 5, 5, 5, 5, 5, 5)}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_layer_sizes_give_receptive_field_size(size):
    assert linear_net_kernel_sizes(size) == SIZES[size]
    net = LinearConvNetKernel(size, channels=2, n_one_by_one=2)
    assert net.kernel_sizes == SIZES[size] + (1, 1)
    assert net.receptive_field == size
    assert net.kernel().shape == (size, size)


def test_kernelgan_architecture():
    net = LinearConvNetKernel(13)
    shapes = [tuple(layer.weight.shape) for layer in net.layers]
    assert shapes == [(64, 1, 7, 7), (64, 64, 5, 5), (64, 64, 3, 3), (64, 64, 1, 1), (64, 64, 1, 1), (1, 64, 1, 1)]
    assert all(layer.bias is None for layer in net.layers)


@pytest.mark.parametrize("size", [3, 9, 13])
def test_receptive_field_is_exactly_size(size):
    """forward on an s x s image is one pixel, a correlation with the flipped kernel: its Jacobian is flip(k), and
    generic weights make every tap, corners included, depend on the input."""
    net = LinearConvNetKernel(size, channels=3, n_one_by_one=1, init_noise=0.5, generator=_gen(12)).double()
    image = torch.rand(1, 1, size, size, generator=_gen(13), dtype=F64)
    jacobian = torch.autograd.functional.jacobian(lambda t: net(t), image).reshape(size, size)
    kernel = net.kernel().detach()
    torch.testing.assert_close(jacobian, kernel.flip(0, 1), rtol=1e-12, atol=1e-12)
    assert (kernel[[0, 0, -1, -1], [0, -1, 0, -1]] != 0).all()
    with pytest.raises(ValueError, match=rf"at least the kernel size {size}"):
        net(image[..., 1:, :])


def _composed_kernel(net):
    """Independent float64 reference: the correlation filter of a chain of correlations is the full convolution of
    the filters, summed over the channels in between, F_oi = sum_m W2[o, m] (*) W1[m, i]; flipped, it is the
    convolution kernel."""
    weights = [layer.weight.detach().double().numpy() for layer in net.layers]
    composed = weights[0]                                          # (out, 1, k, k)
    for weight in weights[1:]:
        out_ch, mid = weight.shape[:2]
        size = composed.shape[-1] + weight.shape[-1] - 1
        step = np.zeros((out_ch, 1, size, size))
        for o in range(out_ch):
            for m in range(mid):
                step[o, 0] += signal.convolve2d(composed[m, 0], weight[o, m], mode="full")
        composed = step
    return torch.from_numpy(composed[0, 0, ::-1, ::-1].copy())


@pytest.mark.parametrize("size, n_one_by_one", [(13, 3), (9, 0), (5, 1)])
def test_kernel_equals_composed_weights_and_forward_is_its_convolution(size, n_one_by_one):
    net = LinearConvNetKernel(size, channels=4, n_one_by_one=n_one_by_one, init_noise=0.3,
                              generator=_gen(14)).double()
    kernel = net.kernel().detach()
    torch.testing.assert_close(kernel, _composed_kernel(net), rtol=1e-12, atol=1e-12)
    x = torch.rand(2, 3, size + 6, size + 9, generator=_gen(15), dtype=F64)
    y = net(x).detach()
    expected = np.stack([[signal.convolve2d(x[b, c].numpy(), kernel.numpy(), mode="valid") for c in range(3)]
                         for b in range(2)])
    assert y.shape == (2, 3, 7, 10)
    torch.testing.assert_close(y, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, Blur("valid").A(x, kernel=kernel), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, channels", [(13, 64), (7, 8), (1, 5)])
def test_init_without_noise_is_the_centred_delta(size, channels):
    """The centre tap is sum_c fl(1/sqrt(c))^2: c rounded squares and c - 1 rounded additions, within (2c) eps of 1
    (exactly 1 for c = 64, whose 1/8 is exact)."""
    kernel = LinearConvNetKernel(size, channels=channels, init_noise=0.0).kernel().detach()
    torch.testing.assert_close(kernel, _delta((size, size)), rtol=0, atol=2 * channels * torch.finfo().eps)
    assert kernel.count_nonzero() == 1


def _init_deviation(sigma, seed=16):
    net = LinearConvNetKernel(13, init_noise=sigma, generator=_gen(seed))
    return (net.kernel().detach().double() - _delta((13, 13), F64)).abs(), len(net.kernel_sizes)


def test_init_noise_stays_near_the_delta():
    """To first order each tap moves by N(0, sigma^2 m), m <= L the layers whose window holds it: 6 standard
    deviations of the worst tap bound every tap (second-order terms are ~sigma sqrt(channels) = 0.08 of that)."""
    sigma = 1e-2
    deviation, depth = _init_deviation(sigma)
    assert deviation.max() <= 6 * sigma * math.sqrt(depth)


def test_init_noise_outer_taps_are_second_order():
    """No single layer reaches past offset 3 from the centre, so outside the central 7x7 the deviation is a product
    of two layers' noise: with the same draws, dividing sigma by 10 divides it by 100. Third-order terms change the
    ratio by ~sigma sqrt(channels) per path times a few paths (1e-3 * 8 * 5 = 4%), hence 5%."""
    outer = torch.ones(13, 13, dtype=torch.bool)
    outer[3:10, 3:10] = False
    large, _ = _init_deviation(1e-3)
    small, _ = _init_deviation(1e-4)
    ratio = large[outer].max() / small[outer].max()
    assert 95 <= ratio <= 105
    assert small[outer].max() > 0


def test_seeded_init_is_deterministic():
    a, b = (LinearConvNetKernel(9, channels=8, generator=_gen(17)) for _ in range(2))
    torch.testing.assert_close(a.kernel(), b.kernel(), rtol=0, atol=0)
    assert not torch.equal(a.kernel(), LinearConvNetKernel(9, channels=8, generator=_gen(18)).kernel())


class _KernelOf(torch.nn.Module):
    """Exposes ``net.kernel()`` as a forward pass, for functional_call."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self):
        return self.net.kernel()


def test_linear_net_gradcheck():
    net = LinearConvNetKernel(5, channels=2, n_one_by_one=1, init_noise=0.3, generator=_gen(19)).double()
    names = [name for name, _ in net.named_parameters()]
    weights = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())
    x = torch.rand(1, 2, 6, 7, generator=_gen(20), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, *w: functional_call(net, dict(zip(names, w)), (a,)), (x, *weights))
    kernel_of = _KernelOf(net)
    assert torch.autograd.gradcheck(
        lambda *w: functional_call(kernel_of, {f"net.{n}": t for n, t in zip(names, w)}, ()), weights)


# ---------------------------------------------------------------------------------------------------------------
# NoiseStd


@pytest.mark.parametrize("learnable", [True, False])
def test_noise_std(learnable):
    module = NoiseStd(0.05, learnable=learnable)
    sigma = module()
    assert sigma.shape == () and sigma.dtype == torch.float32
    torch.testing.assert_close(sigma, torch.tensor(0.05))
    assert len(list(module.parameters())) == int(learnable)
    assert "log_sigma" in module.state_dict()
    assert module.double()().dtype == F64


def test_noise_std_gradient():
    module = NoiseStd(0.3).double()
    sigma = module()
    sigma.backward()
    torch.testing.assert_close(module.log_sigma.grad, sigma.detach(), rtol=1e-15, atol=0)   # d exp(t)/dt = exp(t)
    log_sigma = torch.tensor(-1.2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: functional_call(module, {"log_sigma": t}, ()), (log_sigma,))


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("make, error, message", [
    (lambda: DirectKernel(0), ValueError, r"size must be an integer >= 1, got 0"),
    (lambda: DirectKernel((3,)), TypeError, r"size must be two integers >= 1 \(kh, kw\), got tuple \(3,\)"),
    (lambda: DirectKernel(3, channels=0), ValueError, r"channels must be an integer >= 1, got 0"),
    (lambda: DirectKernel(3, init="box"), ValueError, r"init must be 'delta', 'gaussian' or a tensor, got 'box'"),
    (lambda: DirectKernel(3, init="gaussian", init_sigma=0.0), ValueError, r"init_sigma must be .*> 0.*got 0.0"),
    (lambda: DirectKernel(3, 2, init=torch.ones(3, 3, 3)), ValueError,
     r"init must broadcast to \(C, kh, kw\) = \(2, 3, 3\).*got \(3, 3, 3\)"),
    (lambda: DirectKernel(3, init=torch.ones(3, 4)), ValueError, r"init must broadcast .*\(1, 3, 3\).*got \(3, 4\)"),
    (lambda: DirectKernel(2, init=torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), ValueError,
     r"init must be finite, got NaN"),
    (lambda: DirectKernel(2, init=torch.tensor([[1.0, -0.5], [0.0, 1.0]])), ValueError,
     r"init must be non-negative, got a minimum of -0.5"),
    (lambda: DirectKernel(2, 2, init=torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])), ValueError,
     r"init must have a positive sum in every kernel, got 1 kernel\(s\) summing to 0"),
    (lambda: DirectKernel(2, init=torch.ones(2, 2, dtype=torch.int64)), TypeError,
     r"init must be a float32 or float64 tensor, got torch.int64"),
    (lambda: PSFGrid((2, 0), 3), ValueError, r"grid must be two integers >= 1 \(Gy, Gx\), got \(2, 0\)"),
    (lambda: PSFGrid((2, 2), 3, per_channel=1), TypeError, r"per_channel must be True or False, got int 1"),
    (lambda: PSFGrid((2, 2), 3, 3, per_channel=False, init=torch.ones(1, 3, 2, 2, 3, 3)), ValueError,
     r"init must broadcast to \(1, Gy, Gx, kh, kw\) \(per_channel=False\) = \(1, 2, 2, 3, 3\).*"
     r"got \(1, 3, 2, 2, 3, 3\)"),
    (lambda: PSFGrid((2, 2), 3, 3, init=torch.ones(1, 3, 3, 2, 3, 3)), ValueError,
     r"init must broadcast to \(C, Gy, Gx, kh, kw\) = \(3, 2, 2, 3, 3\).*got \(1, 3, 3, 2, 3, 3\)"),
    (lambda: LinearConvNetKernel(12), ValueError, r"size must be a positive odd int .*got 12"),
    (lambda: LinearConvNetKernel(-3), ValueError, r"size must be an integer >= 1, got -3"),
    (lambda: LinearConvNetKernel(13.0), TypeError, r"size must be an integer >= 1, got float 13.0"),
    (lambda: LinearConvNetKernel(13, channels=0), ValueError, r"channels must be an integer >= 1, got 0"),
    (lambda: LinearConvNetKernel(13, n_one_by_one=-1), ValueError, r"n_one_by_one must be an integer >= 0, got -1"),
    (lambda: LinearConvNetKernel(13, init_noise=float("nan")), ValueError,
     r"init_noise must be a finite number >= 0, got nan"),
    (lambda: NoiseStd(0.0), ValueError, r"init must be a finite number > 0, got 0.0"),
    (lambda: NoiseStd(float("inf")), ValueError, r"init must be a finite number > 0, got inf"),
    (lambda: NoiseStd(0.1, learnable="yes"), TypeError, r"learnable must be True or False, got str 'yes'"),
], ids=["size-0", "size-1-tuple", "channels-0", "unknown-init", "sigma-0", "init-channels", "init-hw", "init-nan",
        "init-negative", "init-zero-sum", "init-int", "grid-0", "per-channel-int", "shared-grid-3-channels",
        "grid-shape", "net-even", "net-negative", "net-float", "net-channels", "net-one-by-one", "net-noise-nan",
        "noise-0", "noise-inf", "learnable-str"])
def test_error_constructor(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_error_net_input_dims():
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) \(4 dims\), got 3 dims"):
        LinearConvNetKernel(5, channels=2)(torch.zeros(1, 8, 8))


def test_error_net_input_dtype():
    with pytest.raises(TypeError, match=r"x, weights must have one dtype, got x torch.float64, weights torch.float32"):
        LinearConvNetKernel(5, channels=2)(torch.zeros(1, 1, 8, 8, dtype=F64))


def test_error_net_input_too_small():
    with pytest.raises(ValueError, match=r"x must be at least the kernel size 5 in H and W .*got 4 x 8"):
        LinearConvNetKernel(5, channels=2)(torch.zeros(1, 1, 4, 8))
