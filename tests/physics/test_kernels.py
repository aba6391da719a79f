"""Blur-kernel generators: motion kernels (valid, seeded, exactly centred, straight at intensity 0, inside the
window) and rotated Gaussians against scipy, gradients, random draws, bad input; no generator gives subnormal taps."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from blindfast.physics.blur import Blur
from blindfast.physics.kernels import (SMOOTHING, SUPERSAMPLE, flush_subnormals, gaussian_kernel,
                                       gaussian_kernel_params, motion_kernel)

F64 = torch.float64


def _motion(batch=8, size=31, intensity=0.5, seed=0, **kwargs):
    return motion_kernel(batch, size, intensity, generator=torch.Generator().manual_seed(seed), **kwargs)["kernel"]


def _offsets(size):
    """Pixel-index offsets from the window centre (size - 1) / 2, float64."""
    return torch.arange(size, dtype=F64) - (size - 1) / 2


def _moments(kernel):
    """Centre of mass (B, 2) as (x, y) offsets from the window centre, and the eigenvalues (B, 2), ascending, of
    the second-moment tensor about it, of (B, 1, k, k) kernels."""
    k = kernel[:, 0].double()
    d = _offsets(k.shape[-1])
    cx, cy = (k.sum(-2) * d).sum(-1), (k.sum(-1) * d).sum(-1)
    dx, dy = d[None, None, :] - cx[:, None, None], d[None, :, None] - cy[:, None, None]
    xx, xy, yy = ((k * a * b).sum((-2, -1)) for a, b in ((dx, dx), (dx, dy), (dy, dy)))
    tensor = torch.stack([torch.stack([xx, xy], -1), torch.stack([xy, yy], -1)], -2)
    return torch.stack([cx, cy], -1), torch.linalg.eigvalsh(tensor)


# --- motion_kernel --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 15, 32])
@pytest.mark.parametrize("intensity", [0.0, 0.5, 1.0])
def test_motion_shape_nonnegative_normalised(size, intensity):
    kernel = _motion(4, size, intensity)
    assert kernel.shape == (4, 1, size, size)
    assert kernel.dtype == torch.float32
    assert (kernel >= 0).all()
    # float32 rounding of B taps each within 1 ulp, summed: size^2 eps bounds the error of the sum
    torch.testing.assert_close(kernel.sum((-2, -1)), torch.ones(4, 1), rtol=0,
                               atol=size**2 * torch.finfo(torch.float32).eps)


def test_motion_dtype_and_device():
    kernel = _motion(dtype=F64, device="cpu")
    assert kernel.dtype == F64 and kernel.device.type == "cpu"
    # computed in float64 and cast: the float32 kernels are the float64 ones rounded
    torch.testing.assert_close(_motion(), kernel.float(), rtol=0, atol=0)


def test_motion_deterministic_per_seed():
    torch.testing.assert_close(_motion(seed=3), _motion(seed=3), rtol=0, atol=0)
    assert not torch.equal(_motion(seed=3), _motion(seed=4))
    # kernels of one batch differ from each other
    kernel = _motion(seed=3)
    assert not torch.equal(kernel[0], kernel[1])


def test_motion_global_generator_is_seeded_by_manual_seed():
    torch.manual_seed(7)
    first = motion_kernel(2, 15)["kernel"]
    torch.manual_seed(7)
    torch.testing.assert_close(motion_kernel(2, 15)["kernel"], first, rtol=0, atol=0)


@pytest.mark.parametrize("size", [15, 31, 64])
@pytest.mark.parametrize("intensity", [0.0, 0.5, 1.0])
def test_motion_centre_of_mass_at_window_centre(size, intensity):
    """Exact up to rounding: centring the path points, the splat, the Gaussian and the tent all keep the centre
    of mass. In float64 a sum of n terms errs by at most n eps relatively; the longest sums are the path mean
    (2 f L <= 2 f * 1.5 sqrt(2) k points) and the tent's (f k per axis, two axes): n < 7 f k, and a relative tap
    error moves the centre of mass by at most that times (k - 1) / 2. float32 adds the cast, eps / 2 per tap."""
    half = (size - 1) / 2
    centre, _ = _moments(_motion(8, size, intensity, dtype=F64))
    assert centre.abs().max().item() <= 7 * SUPERSAMPLE * size * torch.finfo(F64).eps * half
    centre32, _ = _moments(_motion(8, size, intensity))
    assert centre32.abs().max().item() <= torch.finfo(torch.float32).eps * half


def _straight_bound(size):
    """Largest minor second moment (px^2) of the kernel of a straight path: the line has no width, and each stage
    adds at most its per-axis variance: the bilinear splat 1/4 fine px^2 = 1 / (4 f^2), the truncated discrete
    Gaussian at most sigma^2 (Canonne, Kamath & Steinke 2020: a discrete Gaussian's variance is at most sigma^2;
    truncation lowers it), the tent 1/4 px^2."""
    sigma = SMOOTHING * math.sqrt(2) * size
    return sigma**2 + 1 / (4 * SUPERSAMPLE**2) + 1 / 4


@pytest.mark.parametrize("size", [15, 31, 64])
def test_motion_intensity_zero_is_a_straight_line(size):
    _, eigen = _moments(_motion(16, size, 0.0, dtype=F64))
    assert (eigen[:, 0] <= _straight_bound(size)).all()


def test_motion_intensity_one_spreads_beyond_a_line():
    """Most intensity-1 paths curve: the median minor moment exceeds what any straight path can have."""
    _, eigen = _moments(_motion(32, 31, 1.0, dtype=F64))
    assert eigen[:, 0].median() > _straight_bound(31)


@pytest.mark.parametrize("size", [15, 31, 64])
def test_motion_support_fits_the_window(size):
    """Path points lie within R = (k - 1) / 2 - (1 + ceil(3 sigma f)) / f of the centre (documented); a splat pixel
    and the 3-sigma Gaussian move mass at most (1 + ceil(3 sigma f)) / f per axis and the tent less than 1 px per
    axis, so no tap farther than R + sqrt(2) ((1 + ceil(3 sigma f)) / f + 1) is non-zero: the window's corners
    stay empty. The paths do use the window: the farthest tap of the batch lies beyond R."""
    f = SUPERSAMPLE
    smoothing = 1 + math.ceil(3 * SMOOTHING * math.sqrt(2) * size * f)
    fit = (size - 1) / 2 - smoothing / f
    reach = fit + math.sqrt(2) * (smoothing / f + 1)
    kernel = _motion(16, size, 1.0, dtype=F64)
    d = _offsets(size)
    distance = torch.hypot(d[None, :], d[:, None])
    support = (kernel[:, 0] > 0).any(0)
    assert distance[support].max() <= reach < distance.max()
    assert distance[support].max() > fit


def test_motion_kernel_blurs_like_a_kernel():
    """Through Blur, a constant image stays constant (sum 1) and an impulse becomes the kernel (centre tap)."""
    kernel = _motion(2, 15, dtype=F64)
    blur = Blur("circular")
    # the 15 x 15 kernel takes Blur's FFT path: an FFT of N points errs by about log2(N) eps (times 4 for the
    # three transforms and the product)
    tolerance = 4 * math.log2(32 * 32) * torch.finfo(F64).eps
    flat = torch.ones(2, 1, 32, 32, dtype=F64)
    torch.testing.assert_close(blur.A(flat, kernel=kernel), flat, rtol=0, atol=tolerance)
    impulse = torch.zeros(2, 1, 32, 32, dtype=F64)
    impulse[..., 16, 16] = 1
    torch.testing.assert_close(blur.A(impulse, kernel=kernel)[..., 9:24, 9:24], kernel, rtol=0, atol=tolerance)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch=2.0), TypeError, r"batch must be an integer >= 1, got float 2.0"),
    (dict(batch=0), ValueError, r"batch must be an integer >= 1, got 0"),
    (dict(size=15.0), TypeError, r"size must be an integer >= 1, got float"),
    (dict(size=0), ValueError, r"size must be an integer >= 1, got 0"),
    (dict(intensity="high"), TypeError, r"intensity must be a finite number in \[0, 1\], got str"),
    (dict(intensity=1.5), ValueError, r"intensity must be a finite number in \[0, 1\], got 1.5"),
    (dict(intensity=-0.1), ValueError, r"intensity must be a finite number in \[0, 1\], got -0.1"),
], ids=["batch-float", "batch-0", "size-float", "size-0", "intensity-str", "intensity-high", "intensity-negative"])
def test_motion_errors(kwargs, error, message):
    args = dict(batch=2, size=15, intensity=0.5) | kwargs
    with pytest.raises(error, match=message):
        motion_kernel(args["batch"], args["size"], args["intensity"])


# --- gaussian_kernel ------------------------------------------------------------------------------------------------

def _scipy_gaussian(size, sigma, anisotropy, angle):
    """Float64 reference: scipy's bivariate normal pdf with covariance R diag(s^2, (a s)^2) R^T at the pixel
    centres, (x - c, c - y) with y the row (pointing down), normalised to sum 1."""
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    covariance = rotation @ np.diag([sigma**2, (anisotropy * sigma) ** 2]) @ rotation.T
    d = np.arange(size) - (size - 1) / 2
    rows, cols = np.meshgrid(d, d, indexing="ij")
    # pdf squeezes singleton axes (a 1 x 1 window gives a scalar): reshape back
    pdf = stats.multivariate_normal(mean=[0, 0], cov=covariance).pdf(np.stack([cols, -rows], -1)).reshape(size, size)
    return torch.from_numpy(pdf / pdf.sum())


@pytest.mark.parametrize("size, sigma, anisotropy, angle", [
    (15, 2.0, 1.0, 0.0), (21, 3.0, 0.4, 0.7), (16, 1.5, 2.0, -2.0), (9, 0.5, 1.0, 1.0), (1, 1.0, 1.0, 0.0)])
def test_gaussian_equals_scipy(size, sigma, anisotropy, angle):
    kernel = gaussian_kernel(size, sigma, anisotropy, angle, dtype=F64)
    assert kernel.shape == (size, size)
    torch.testing.assert_close(kernel, _scipy_gaussian(size, sigma, anisotropy, angle), rtol=1e-12, atol=1e-15)


def test_gaussian_float32_error_within_torch_float32_error():
    """Our float32 error against the float64 kernel is at most 3x that of a plain float32 evaluation of the same
    density through the inverse covariance matrix."""
    size, sigma, anisotropy, angle = 21, 3.0, 0.5, 0.3
    exact = gaussian_kernel(size, sigma, anisotropy, angle, dtype=F64)
    ours = gaussian_kernel(size, sigma, anisotropy, angle)
    assert ours.dtype == torch.float32
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, -s], [s, c]])
    precision = rotation @ torch.diag(torch.tensor([sigma**-2, (anisotropy * sigma) ** -2])) @ rotation.T
    d = _offsets(size).float()
    points = torch.stack(torch.broadcast_tensors(d[None, :], -d[:, None]), -1)           # (k, k, 2) = (x, -row)
    plain = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", points, precision, points))
    plain = plain / plain.sum()
    floor = torch.finfo(torch.float32).eps * exact.max()
    assert (ours.double() - exact).abs().max() <= 3 * max((plain.double() - exact).abs().max(), floor)


def test_gaussian_isotropic_is_separable_and_angle_free():
    size, sigma = 13, 1.7
    g = torch.exp(-0.5 * (_offsets(size) / sigma) ** 2)
    g = g / g.sum()
    kernel = gaussian_kernel(size, sigma, dtype=F64)
    torch.testing.assert_close(kernel, torch.outer(g, g), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(gaussian_kernel(size, sigma, angle=0.8, dtype=F64), kernel, rtol=1e-12, atol=1e-15)


def test_gaussian_angle_is_counter_clockwise_as_displayed():
    """A thin Gaussian at +45 degrees runs from bottom-left to top-right (rows pointing down)."""
    kernel = gaussian_kernel(9, 2.0, 0.2, math.pi / 4, dtype=F64)
    assert kernel[2, 6] > 100 * kernel[2, 2]          # up-right vs up-left of the centre (4, 4)
    torch.testing.assert_close(kernel, kernel.flip(0).flip(1).contiguous())        # point symmetric


def test_gaussian_batched_broadcasts():
    sigma = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    angle = torch.tensor([0.3], dtype=F64)
    kernel = gaussian_kernel(11, sigma, 0.5, angle, dtype=F64)
    assert kernel.shape == (3, 1, 11, 11)
    for b in range(3):
        torch.testing.assert_close(kernel[b, 0], _scipy_gaussian(11, sigma[b].item(), 0.5, 0.3),
                                   rtol=1e-12, atol=1e-15)


def test_gaussian_zero_dim_tensors_give_one_kernel():
    kernel = gaussian_kernel(7, torch.tensor(1.2, dtype=F64), dtype=F64)
    assert kernel.shape == (7, 7)


def test_gaussian_gradcheck():
    sigma = torch.tensor([1.3, 0.9], dtype=F64, requires_grad=True)
    anisotropy = torch.tensor([0.6, 1.4], dtype=F64, requires_grad=True)
    angle = torch.tensor([0.4, -1.1], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, a, t: gaussian_kernel(7, s, a, t, dtype=F64),
                                    (sigma, anisotropy, angle))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(size=0), ValueError, r"size must be an integer >= 1, got 0"),
    (dict(size=7.0), TypeError, r"size must be an integer >= 1, got float"),
    (dict(sigma=0.0), ValueError, r"sigma must be finite and > 0, got 0.0"),
    (dict(sigma=torch.tensor([1.0, -1.0])), ValueError, r"sigma must be finite and > 0, got \[1.0, -1.0\]"),
    (dict(sigma="1"), TypeError, r"sigma must be a float or a tensor of shape \(\) or \(B,\), got str"),
    (dict(sigma=torch.tensor([1, 2])), TypeError, r"sigma must be a floating-point tensor, got dtype torch.int64"),
    (dict(sigma=torch.ones(2, 2)), ValueError, r"sigma must have shape \(\) or \(B,\), got shape \(2, 2\)"),
    (dict(anisotropy=-0.5), ValueError, r"anisotropy must be finite and > 0, got -0.5"),
    (dict(angle=math.inf), ValueError, r"angle must be finite, got inf"),
    (dict(sigma=torch.ones(2), angle=torch.zeros(3)), ValueError,
     r"one common \(B,\), got sigma \(2,\), anisotropy \(\), angle \(3,\)"),
], ids=["size-0", "size-float", "sigma-0", "sigma-negative", "sigma-str", "sigma-int", "sigma-2d",
        "anisotropy-negative", "angle-inf", "batch-mismatch"])
def test_gaussian_errors(kwargs, error, message):
    args = dict(size=7, sigma=1.0, anisotropy=1.0, angle=0.0) | kwargs
    with pytest.raises(error, match=message):
        gaussian_kernel(args["size"], args["sigma"], args["anisotropy"], args["angle"])


# --- gaussian_kernel_params -----------------------------------------------------------------------------------------

def test_gaussian_params_are_the_documented_draws():
    """sigma ~ U(sigma_range), anisotropy ~ U(anisotropy_range), angle ~ U(0, pi), in that order, float64."""
    kernel = gaussian_kernel_params(5, 17, sigma_range=(1.0, 2.5), anisotropy_range=(0.3, 0.9),
                                    generator=torch.Generator().manual_seed(2))["kernel"]
    assert kernel.shape == (5, 1, 17, 17) and kernel.dtype == torch.float32
    u = torch.rand(3, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    for b in range(5):
        sigma, anisotropy, angle = 1.0 + 1.5 * u[0, b], 0.3 + 0.6 * u[1, b], math.pi * u[2, b]
        torch.testing.assert_close(kernel[b, 0].double(), _scipy_gaussian(17, sigma.item(), anisotropy.item(),
                                                                          angle.item()),
                                   rtol=0, atol=torch.finfo(torch.float32).eps)


def test_gaussian_params_deterministic_per_seed():
    def draw(seed):
        return gaussian_kernel_params(4, generator=torch.Generator().manual_seed(seed), dtype=F64)["kernel"]

    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert not torch.equal(draw(1), draw(2))
    kernel = draw(1)
    assert kernel.shape == (4, 1, 25, 25) and (kernel >= 0).all()
    torch.testing.assert_close(kernel.sum((-2, -1)), torch.ones(4, 1, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch=True), TypeError, r"batch must be an integer >= 1, got bool True"),
    (dict(batch=0), ValueError, r"batch must be an integer >= 1, got 0"),
    (dict(size=0), ValueError, r"size must be an integer >= 1, got 0"),
    (dict(sigma_range=(0.0, 1.0)), ValueError, r"sigma_range must be \(low, high\) with 0 < low <= high, "
                                               r"got \(0.0, 1.0\)"),
    (dict(anisotropy_range=(2.0, 1.0)), ValueError, r"anisotropy_range must be \(low, high\) with 0 < low <= "
                                                    r"high, got \(2.0, 1.0\)"),
], ids=["batch-bool", "batch-0", "size-0", "sigma-range", "anisotropy-range"])
def test_gaussian_params_errors(kwargs, error, message):
    args = dict(batch=2, size=9) | kwargs
    batch, size = args.pop("batch"), args.pop("size")
    with pytest.raises(error, match=message):
        gaussian_kernel_params(batch, size, **args)


# --- subnormal taps -------------------------------------------------------------------------------------------------

def subnormal_taps(kernel):
    """Number of non-zero taps below the smallest normal number of the kernel's dtype."""
    kernel = kernel.detach()
    return ((kernel != 0) & (kernel.abs() < torch.finfo(kernel.dtype).tiny)).sum().item()


def test_flush_subnormals():
    tiny = torch.finfo(torch.float32).tiny
    values = torch.tensor([0.5, tiny, tiny * (1 - 2**-30), tiny / 2, -tiny / 8, 1e-300, 0.0, -0.25], dtype=F64,
                          requires_grad=True)
    flushed = flush_subnormals(values, torch.float32)
    # Below float32's smallest normal (even where the cast would round up to it): 0; the rest as a plain cast.
    expected = torch.tensor([0.5, tiny, 0.0, 0.0, 0.0, 0.0, 0.0, -0.25], dtype=torch.float32)
    assert flushed.dtype == torch.float32 and torch.equal(flushed, expected)
    flushed.double().sum().backward()
    assert values.grad.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # float16 keeps its subnormals (its smallest normal, 6.1e-5, is a visible part of a kernel).
    assert torch.equal(flush_subnormals(values.detach(), torch.float16), values.detach().half())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, F64])
@pytest.mark.parametrize("seed", range(3))
def test_generators_give_no_subnormal_taps(dtype, seed):
    """Wide windows and narrow kernels, whose float32 tails fall below 1.2e-38 (2-10% of the taps before the flush);
    flushing them keeps every kernel's sum within one rounding (float32 / bfloat16; float64 has no subnormal tails
    to flush)."""
    def generator():
        return torch.Generator().manual_seed(seed)

    sigma = torch.tensor([0.6, 0.8, 1.5], dtype=F64) * (1 + seed)
    kernels = {
        "gaussian_kernel": gaussian_kernel(31, sigma, torch.tensor([0.5, 1.0, 0.7], dtype=F64), 0.3, dtype=dtype),
        "gaussian_kernel_params": gaussian_kernel_params(8, 61, generator=generator(), dtype=dtype)["kernel"],
        "motion_kernel": _motion(batch=3, size=32, seed=seed, dtype=dtype),
    }
    for name, kernel in kernels.items():
        assert kernel.dtype == dtype
        assert subnormal_taps(kernel) == 0, name
        if dtype != F64:
            deviation = (kernel.double().sum((-2, -1)) - 1).abs().max().item()
            assert deviation <= torch.finfo(dtype).eps, (name, deviation)
